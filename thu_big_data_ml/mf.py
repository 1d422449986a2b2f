#| export
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

# %%
#| export
@dataclass
class _Obs:
    "Validated observed entries: int64 indices, float32 ratings and weights."
    user: np.ndarray
    item: np.ndarray
    rating: np.ndarray
    weight: np.ndarray
    n_users: int
    n_items: int
    weighted: bool

    def __len__(self) -> int: return len(self.rating)

def _as_obs(data: Any, weights: np.ndarray | None = None, name: str = 'train') -> _Obs:
    "Check an `Interactions`-like object (attributes user, item, rating, n_users, n_items) and optional weights."
    for a in ('user', 'item', 'rating', 'n_users', 'n_items'):
        if not hasattr(data, a):
            raise TypeError(f"{name} must be an Interactions (user, item, rating, n_users, n_items); it has no {a!r}")
    u = np.asarray(data.user); i = np.asarray(data.item); x = np.asarray(data.rating, dtype=np.float32)
    n_users, n_items = int(data.n_users), int(data.n_items)
    if not (u.ndim == i.ndim == x.ndim == 1 and len(u) == len(i) == len(x)):
        raise ValueError(f"{name}: user, item and rating must be 1-d arrays of equal length, got {u.shape}, {i.shape}, {x.shape}")
    if not (np.issubdtype(u.dtype, np.integer) and np.issubdtype(i.dtype, np.integer)):
        raise TypeError(f"{name}: user and item must be integer indices, got {u.dtype} and {i.dtype}")
    bad = ~np.isfinite(x)
    if bad.any():
        raise ValueError(f"{name}.rating contains {int(bad.sum())} NaN/inf values (first at position {int(np.argmax(bad))}); "
                         "drop or impute them before fitting")
    if len(x) and (u.min() < 0 or u.max() >= n_users):
        raise ValueError(f"{name}.user indices must lie in [0, {n_users}), got [{u.min()}, {u.max()}]")
    if len(x) and (i.min() < 0 or i.max() >= n_items):
        raise ValueError(f"{name}.item indices must lie in [0, {n_items}), got [{i.min()}, {i.max()}]")
    if weights is None:
        w = np.ones(len(x), np.float32); weighted = False
    else:
        w = np.asarray(weights, dtype=np.float32)
        if w.shape != x.shape:
            raise ValueError(f"weights must have one entry per {name} rating, shape {x.shape}, got {w.shape}")
        if not np.isfinite(w).all() or (w < 0).any():
            raise ValueError("weights must be finite and non-negative")
        weighted = True
    return _Obs(u.astype(np.int64), i.astype(np.int64), x, w, n_users, n_items, weighted)

def _check_hparams(k: int, lam: float) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k must be an integer, got {type(k).__name__}")
    if k <= 0: raise ValueError(f"k (number of latent factors) must be positive, got {k}")
    if not isinstance(lam, (int, float, np.floating, np.integer)) or not math.isfinite(lam):
        raise ValueError(f"lam must be a finite number, got {lam!r}")
    if lam < 0: raise ValueError(f"lam (L2 penalty) must be non-negative, got {lam}")

# %%
#| export
def objective(U: np.ndarray, V: np.ndarray, train: Any, lam: float, weights: np.ndarray | None = None,
              mu: float = 0.0, bu: np.ndarray | None = None, bi: np.ndarray | None = None) -> float:
    """The assignment's J = 1/2 sum_obs w (x - u.v)^2 + lam ||U||^2 + lam ||V||^2 (float64 sum).
    With biases the prediction is mu + bu + bi + u.v and lam ||bu||^2 + lam ||bi||^2 is added."""
    o = _as_obs(train, weights)
    U = np.asarray(U, np.float64); V = np.asarray(V, np.float64)
    if U.shape[0] != o.n_users or V.shape[0] != o.n_items or U.shape[1] != V.shape[1]:
        raise ValueError(f"U {U.shape} and V {V.shape} do not match {o.n_users} users x {o.n_items} items")
    if lam < 0: raise ValueError(f"lam must be non-negative, got {lam}")
    pred = np.einsum('nk,nk->n', U[o.user], V[o.item])
    reg = (U ** 2).sum() + (V ** 2).sum()
    if bu is not None or bi is not None:
        bu = np.zeros(o.n_users) if bu is None else np.asarray(bu, np.float64)
        bi = np.zeros(o.n_items) if bi is None else np.asarray(bi, np.float64)
        pred = pred + mu + bu[o.user] + bi[o.item]
        reg += (bu ** 2).sum() + (bi ** 2).sum()
    e = o.rating - pred
    return float(0.5 * (o.weight * e * e).sum() + lam * reg)

def gradients(U: np.ndarray, V: np.ndarray, train: Any, lam: float, weights: np.ndarray | None = None,
              mu: float = 0.0, bu: np.ndarray | None = None, bi: np.ndarray | None = None) -> dict:
    """Reference gradients of `objective` (float64), the handout's formulas on observed entries:
    dJ/dU = (A o (UV^T - X)) V + 2 lam U, dJ/dV = (A o (UV^T - X))^T U + 2 lam V (+ bias terms)."""
    o = _as_obs(train, weights)
    U = np.asarray(U, np.float64); V = np.asarray(V, np.float64)
    biased = bu is not None or bi is not None
    bu = np.zeros(o.n_users) if bu is None else np.asarray(bu, np.float64)
    bi = np.zeros(o.n_items) if bi is None else np.asarray(bi, np.float64)
    pred = np.einsum('nk,nk->n', U[o.user], V[o.item]) + (mu + bu[o.user] + bi[o.item] if biased else 0.0)
    r = o.weight * (pred - o.rating)
    gU = 2 * lam * U; gV = 2 * lam * V
    np.add.at(gU, o.user, r[:, None] * V[o.item]); np.add.at(gV, o.item, r[:, None] * U[o.user])
    g = {'U': gU, 'V': gV}
    if biased:
        g['bu'] = np.bincount(o.user, r, o.n_users) + 2 * lam * bu
        g['bi'] = np.bincount(o.item, r, o.n_items) + 2 * lam * bi
    return g

# %%
#| export
@dataclass
class MFModel:
    "A fitted factorisation: prediction mu + bu[u] + bi[i] + U[u].V[i], with the per-iteration `history`."
    U: np.ndarray
    V: np.ndarray
    mu: float = 0.0
    bu: np.ndarray | None = None
    bi: np.ndarray | None = None
    history: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=['iter', 'J', 'train_rmse', 'val_rmse', 'seconds']))
    config: dict = field(default_factory=dict)

    def __post_init__(self):
        self.U = np.ascontiguousarray(self.U, np.float32); self.V = np.ascontiguousarray(self.V, np.float32)
        if self.bu is None: self.bu = np.zeros(len(self.U), np.float32)
        if self.bi is None: self.bi = np.zeros(len(self.V), np.float32)
        self.bu = np.asarray(self.bu, np.float32); self.bi = np.asarray(self.bi, np.float32)

    @property
    def k(self) -> int: return self.U.shape[1]

    def predict(self, user: np.ndarray, item: np.ndarray, clip: tuple[float, float] | None = None) -> np.ndarray:
        "Predicted ratings (float32) at (user, item) index pairs; optionally clipped to a rating range."
        user = np.asarray(user); item = np.asarray(item)
        if user.shape != item.shape: raise ValueError(f"user {user.shape} and item {item.shape} must have the same shape")
        if user.size and (user.min() < 0 or user.max() >= len(self.U)):
            raise ValueError(f"user indices must lie in [0, {len(self.U)})")
        if item.size and (item.min() < 0 or item.max() >= len(self.V)):
            raise ValueError(f"item indices must lie in [0, {len(self.V)})")
        p = _predict(self.U, self.V, np.float32(self.mu), self.bu, self.bi,
                     user.ravel().astype(np.int64), item.ravel().astype(np.int64)).reshape(user.shape)
        return np.clip(p, *clip) if clip is not None else p

    def rmse(self, data: Any, clip: tuple[float, float] | None = None) -> float:
        "Root mean squared error on an `Interactions`."
        o = _as_obs(data, name='data')
        return float(np.sqrt(np.mean((self.predict(o.user, o.item, clip) - o.rating).astype(np.float64) ** 2)))

    def objective(self, data: Any, lam: float, weights: np.ndarray | None = None) -> float:
        "J of these factors on `data`."
        biased = bool(self.config.get('biased', False))
        return objective(self.U, self.V, data, lam, weights, self.mu, self.bu if biased else None, self.bi if biased else None)

# %%
#| export
def _numba():
    "Compile the numba kernels on first use (nothing happens at import)."
    global _NB
    if _NB is not None: return _NB
    import numba as nb
    from numba import njit, prange

    @njit(parallel=True, fastmath=True, cache=True)
    def predict(U, V, mu, bu, bi, user, item):
        n, k = len(user), U.shape[1]
        out = np.empty(n, np.float32)
        for j in prange(n):
            u, i = user[j], item[j]
            p = mu + bu[u] + bi[i]
            for f in range(k): p += U[u, f] * V[i, f]
            out[j] = p
        return out

    @njit(parallel=True, fastmath=True, cache=True)
    def grad_rows(indptr, col, x, w, A, B, bA, bB, mu, lam, pos, r_out, gA, gbA):
        "One pass over the rows of A (CSR): residuals (stored at their CSC position) and dJ/dA, dJ/dbA."
        n, k = A.shape
        sse = 0.0; wsse = 0.0
        for a in prange(n):
            acc = np.zeros(k, np.float32)
            gb = np.float32(0.0)
            for j in range(indptr[a], indptr[a + 1]):
                b = col[j]
                p = mu + bA[a] + bB[b]
                for f in range(k): p += A[a, f] * B[b, f]
                e = p - x[j]
                we = w[j] * e
                sse += e * e; wsse += we * e
                r_out[pos[j]] = we
                gb += we
                for f in range(k): acc[f] += we * B[b, f]
            for f in range(k): gA[a, f] = acc[f] + 2 * lam * A[a, f]
            gbA[a] = gb + 2 * lam * bA[a]
        return sse, wsse

    @njit(parallel=True, fastmath=True, cache=True)
    def grad_cols(indptr, row, r, A, B, bB, lam, gB, gbB):
        "One pass over the columns (CSC) with the stored residuals: dJ/dB, dJ/dbB."
        n, k = B.shape
        for b in prange(n):
            acc = np.zeros(k, np.float32)
            gb = np.float32(0.0)
            for j in range(indptr[b], indptr[b + 1]):
                a = row[j]; e = r[j]
                gb += e
                for f in range(k): acc[f] += e * A[a, f]
            for f in range(k): gB[b, f] = acc[f] + 2 * lam * B[b, f]
            gbB[b] = gb + 2 * lam * bB[b]

    @njit(parallel=True, fastmath=True, cache=True)
    def als_rows(indptr, col, x, w, A, B, bA, bB, mu, lam, biased):
        "Exact minimiser of J over every row of A (and bA when biased) with B fixed: one k x k solve per row."
        n, k = A.shape
        kk = k + 1 if biased else k
        for a in prange(n):
            lo, hi = indptr[a], indptr[a + 1]
            if hi == lo and lam == 0:
                for f in range(k): A[a, f] = 0.0
                bA[a] = 0.0
                continue
            m = hi - lo
            Z = np.empty((m, kk), np.float32)
            Zw = np.empty((m, kk), np.float32)
            t = np.empty(m, np.float32)
            for jj in range(m):
                j = lo + jj; b = col[j]
                for f in range(k):
                    Z[jj, f] = B[b, f]; Zw[jj, f] = w[j] * B[b, f]
                if biased:
                    Z[jj, k] = 1.0; Zw[jj, k] = w[j]
                t[jj] = x[j] - mu - bB[b]
            G = (Zw.T @ Z).astype(np.float64)
            rhs = (Zw.T @ t).astype(np.float64)
            for f in range(kk): G[f, f] += 2 * lam
            sol = np.linalg.solve(G, rhs)
            for f in range(k): A[a, f] = sol[f]
            if biased: bA[a] = sol[k]

    _NB = dict(predict=predict, grad_rows=grad_rows, grad_cols=grad_cols, als_rows=als_rows)
    return _NB

_NB = None

def _predict(U, V, mu, bu, bi, user, item) -> np.ndarray:
    if len(user) < 20000:  # small: plain numpy, no compile
        return (np.einsum('nk,nk->n', U[user], V[item]) + mu + bu[user] + bi[item]).astype(np.float32)
    return _numba()['predict'](U, V, np.float32(mu), bu, bi, user, item)

# %%
#| export
def _structure(o: _Obs) -> dict:
    "CSR (by user) and CSC (by item) views of the observations plus the CSR->CSC position map."
    ou = np.argsort(o.user, kind='stable')
    oi = np.argsort(o.item[ou], kind='stable')       # CSC order expressed in CSR positions
    pos = np.empty(len(o), np.int64); pos[oi] = np.arange(len(o))
    indptr_u = np.zeros(o.n_users + 1, np.int64); np.cumsum(np.bincount(o.user, minlength=o.n_users), out=indptr_u[1:])
    indptr_i = np.zeros(o.n_items + 1, np.int64); np.cumsum(np.bincount(o.item, minlength=o.n_items), out=indptr_i[1:])
    ucol = o.item[ou]; urow = o.user[ou]
    return dict(indptr_u=indptr_u, item_u=np.ascontiguousarray(ucol), x_u=o.rating[ou], w_u=o.weight[ou],
                indptr_i=indptr_i, user_i=np.ascontiguousarray(urow[oi]), x_i=o.rating[ou][oi], w_i=o.weight[ou][oi],
                pos=pos)

class _NumpyEngine:
    "Plain NumPy reference (float64 maths via `gradients`), for checking the fast paths on small data."
    name = 'numpy'
    def __init__(self, o: _Obs, P: dict, lam: float, mu: float, biased: bool):
        self.o, self.lam, self.mu, self.biased = o, lam, mu, biased
        self.P = {kk: v.copy() for kk, v in P.items()}
    def _args(self):
        P = self.P
        return (P['U'], P['V'], self.o, self.lam, self.o.weight if self.o.weighted else None, self.mu,
                P.get('bu'), P.get('bi'))
    def value_grad(self):
        U, V, o, lam, w, mu, bu, bi = self._args()
        J = objective(U, V, o, lam, w, mu, bu, bi)
        self.G = {kk: v.astype(np.float32) for kk, v in gradients(U, V, o, lam, w, mu, bu, bi).items()}
        return J, self._sse()
    def _sse(self):
        P, o = self.P, self.o
        p = _predict(P['U'], P['V'], self.mu, P.get('bu', np.zeros(o.n_users, np.float32)),
                     P.get('bi', np.zeros(o.n_items, np.float32)), o.user, o.item)
        return float(((p - o.rating).astype(np.float64) ** 2).sum())
    def als_sweep(self):
        o, lam, mu, P = self.o, self.lam, self.mu, self.P
        for side in ('U', 'V'):
            A, B = (P['U'], P['V']) if side == 'U' else (P['V'], P['U'])
            bA = P.get('bu' if side == 'U' else 'bi'); bB = P.get('bi' if side == 'U' else 'bu')
            rows, cols = (o.user, o.item) if side == 'U' else (o.item, o.user)
            for a in range(len(A)):
                m = rows == a
                Z = B[cols[m]].astype(np.float64)
                t = o.rating[m] - (mu + bB[cols[m]] if self.biased else 0.0)
                if self.biased: Z = np.hstack([Z, np.ones((len(Z), 1))])
                w = o.weight[m]
                G = (Z * w[:, None]).T @ Z + 2 * lam * np.eye(Z.shape[1])
                if not m.any() and lam == 0: sol = np.zeros(Z.shape[1])
                else: sol = np.linalg.solve(G, (Z * w[:, None]).T @ t)
                A[a] = sol[:A.shape[1]]
                if self.biased: bA[a] = sol[-1]
        return self.value_only()
    def value_only(self):
        U, V, o, lam, w, mu, bu, bi = self._args()
        return objective(U, V, o, lam, w, mu, bu, bi), self._sse()
    def params(self): return self.P

class _NumbaEngine(_NumpyEngine):
    "Compiled sparse kernels: one CSR pass (residuals, dJ/dU) and one CSC pass (dJ/dV) per epoch, float32, parallel."
    name = 'numba'
    def __init__(self, o, P, lam, mu, biased):
        super().__init__(o, P, lam, mu, biased)
        self.nb = _numba(); self.S = _structure(o)
        for kk in ('bu', 'bi'):
            if kk not in self.P: self.P[kk] = np.zeros(o.n_users if kk == 'bu' else o.n_items, np.float32)
        self.r = np.empty(len(o), np.float32)
        self.G = {kk: np.empty_like(v) for kk, v in self.P.items()}
    def _reg(self):
        P = self.P
        keys = ('U', 'V', 'bu', 'bi') if self.biased else ('U', 'V')
        return self.lam * sum(float(np.dot(P[kk].ravel().astype(np.float64), P[kk].ravel())) for kk in keys)
    def value_grad(self):
        S, P, G, nb = self.S, self.P, self.G, self.nb
        mu = np.float32(self.mu if self.biased else 0.0); lam = np.float32(self.lam)
        sse, wsse = nb['grad_rows'](S['indptr_u'], S['item_u'], S['x_u'], S['w_u'], P['U'], P['V'], P['bu'], P['bi'],
                                    mu, lam, S['pos'], self.r, G['U'], G['bu'])
        nb['grad_cols'](S['indptr_i'], S['user_i'], self.r, P['U'], P['V'], P['bi'], lam, G['V'], G['bi'])
        if not self.biased: G['bu'][:] = 0; G['bi'][:] = 0
        return 0.5 * wsse + self._reg(), sse
    def als_sweep(self):
        S, P, nb = self.S, self.P, self.nb
        mu = np.float32(self.mu if self.biased else 0.0); lam = np.float32(self.lam)
        nb['als_rows'](S['indptr_u'], S['item_u'], S['x_u'], S['w_u'], P['U'], P['V'], P['bu'], P['bi'], mu, lam, self.biased)
        nb['als_rows'](S['indptr_i'], S['user_i'], S['x_i'], S['w_i'], P['V'], P['U'], P['bi'], P['bu'], mu, lam, self.biased)
        return self.value_only()
    def value_only(self):
        S, P = self.S, self.P
        p = _numba()['predict'](P['U'], P['V'], np.float32(self.mu if self.biased else 0.0), P['bu'], P['bi'],
                                self.o.user, self.o.item)
        e = (p - self.o.rating).astype(np.float64)
        return 0.5 * float(np.dot(self.o.weight * e, e)) + self._reg(), float(np.dot(e, e))
    def params(self):
        P = dict(self.P)
        if not self.biased: P.pop('bu'); P.pop('bi')
        return P

# %%
#| export
class _NumpyOpt:
    "The handout's GD update or Adam (same formulas as optax.adam / torch.optim.Adam) on NumPy parameters."
    def __init__(self, method: str, lr: float, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8):
        self.method, self.lr, self.b1, self.b2, self.eps, self.t = method, lr, b1, b2, eps, 0
        self.m, self.v = {}, {}
    def update(self, P: dict, G: dict, keys) -> None:
        lr = np.float32(self.lr)
        if self.method == 'gd':
            for kk in keys: P[kk] -= lr * G[kk]
            return
        self.t += 1
        c1, c2 = 1 - self.b1 ** self.t, 1 - self.b2 ** self.t
        for kk in keys:
            g = G[kk]
            if kk not in self.m: self.m[kk] = np.zeros_like(g); self.v[kk] = np.zeros_like(g)
            m, v = self.m[kk], self.v[kk]
            m *= self.b1; m += (1 - self.b1) * g
            v *= self.b2; v += (1 - self.b2) * g * g
            P[kk] -= (lr * (m / c1) / (np.sqrt(v / c2) + self.eps)).astype(np.float32)

class _JaxEngine:
    "JAX: jit-compiled `value_and_grad` of J with optax (sgd = the handout's GD, adam); sparse gathers in chunks or dense."
    name = 'jax'
    def __init__(self, o, P, lam, mu, biased, method, lr, layout='sparse', chunk=1 << 19):
        import jax, jax.numpy as jnp, optax
        self.jax, self.jnp = jax, jnp
        self.biased, self.layout = biased, layout
        self.P = {kk: jnp.asarray(v) for kk, v in P.items()}
        opt = optax.sgd(lr) if method == 'gd' else optax.adam(lr)
        self.state = opt.init(self.P)
        lam = np.float32(lam); mu = np.float32(mu)
        def reg(p): return lam * sum(jnp.sum(v * v) for v in p.values())
        if layout == 'dense':
            X = np.zeros((o.n_users, o.n_items), np.float32); X[o.user, o.item] = o.rating
            W = np.zeros((o.n_users, o.n_items), np.float32); W[o.user, o.item] = o.weight
            M = np.zeros((o.n_users, o.n_items), np.float32); M[o.user, o.item] = 1
            self.data = (jnp.asarray(X), jnp.asarray(W), jnp.asarray(M))
            def loss(p, X, W, M):
                pred = p['U'] @ p['V'].T
                if biased: pred = pred + mu + p['bu'][:, None] + p['bi'][None, :]
                E = M * (pred - X)
                return 0.5 * jnp.sum(W * E * E) + reg(p), jnp.sum(E * E)
        else:
            n = len(o); nc = max(1, -(-n // chunk)); c = -(-n // nc); pad = nc * c - n
            def padded(a, fill=0): return jnp.asarray(np.concatenate([a, np.full(pad, fill, a.dtype)]).reshape(nc, c))
            self.data = (padded(o.user.astype(np.int32)), padded(o.item.astype(np.int32)), padded(o.rating),
                         padded(o.weight), padded(np.ones(n, np.float32)))
            @jax.checkpoint
            def chunk_loss(p, u, i, x, w, m):
                pred = jnp.sum(p['U'][u] * p['V'][i], axis=1)
                if biased: pred = pred + mu + p['bu'][u] + p['bi'][i]
                e = m * (pred - x)
                return 0.5 * jnp.sum(w * e * e), jnp.sum(e * e)
            def loss(p, U_, I_, X_, W_, M_):
                if nc == 1: d, s = chunk_loss(p, U_[0], I_[0], X_[0], W_[0], M_[0])
                else:
                    def body(carry, args):
                        d, s = chunk_loss(p, *args)
                        return (carry[0] + d, carry[1] + s), None
                    (d, s), _ = jax.lax.scan(body, (jnp.float32(0), jnp.float32(0)), (U_, I_, X_, W_, M_))
                return d + reg(p), s
        vg = jax.value_and_grad(loss, has_aux=True)
        def step(p, state, *data):
            (J, sse), g = vg(p, *data)
            upd, state = opt.update(g, state, p)
            return optax.apply_updates(p, upd), state, J, sse
        self._step = jax.jit(step)
        self._value = jax.jit(loss)
    def value_grad(self):
        "J and SSE at the current parameters; the update is prepared and applied by `update`."
        self._next = self._step(self.P, self.state, *self.data)
        return float(self._next[2]), float(self._next[3])
    def update(self):
        self.P, self.state = self._next[0], self._next[1]
    def params(self): return {kk: np.asarray(v, np.float32) for kk, v in self.P.items()}

class _TorchEngine:
    "PyTorch: autograd of J (sparse gathers in chunks, or dense masked), torch.optim.SGD (the handout's GD) or Adam."
    name = 'torch'
    def __init__(self, o, P, lam, mu, biased, method, lr, layout='sparse', chunk=1 << 19, device='cpu'):
        import torch
        from .core import torch_device
        self.torch = torch; dev = torch_device(device)
        self.biased, self.layout, self.lam, self.mu, self.chunk = biased, layout, float(lam), float(mu), chunk
        self.P = {kk: torch.tensor(v, device=dev, requires_grad=True) for kk, v in P.items()}
        ps = list(self.P.values())
        self.opt = torch.optim.SGD(ps, lr=lr) if method == 'gd' else torch.optim.Adam(ps, lr=lr, eps=1e-8)
        if layout == 'dense':
            X = torch.zeros(o.n_users, o.n_items, device=dev); W = torch.zeros_like(X); M = torch.zeros_like(X)
            ui = (torch.as_tensor(o.user, device=dev), torch.as_tensor(o.item, device=dev))
            X[ui] = torch.as_tensor(o.rating, device=dev); W[ui] = torch.as_tensor(o.weight, device=dev); M[ui] = 1
            self.data = (X, W, M)
        else:
            self.data = tuple(torch.as_tensor(a, device=dev) for a in (o.user, o.item, o.rating, o.weight))
    def value_grad(self):
        torch, p = self.torch, self.P
        self.opt.zero_grad(set_to_none=False)
        reg = self.lam * sum((v * v).sum() for v in p.values())
        reg.backward()
        J, sse = float(reg), 0.0
        if self.layout == 'dense':
            X, W, M = self.data
            pred = p['U'] @ p['V'].T
            if self.biased: pred = pred + self.mu + p['bu'][:, None] + p['bi'][None, :]
            E = M * (pred - X)
            d = 0.5 * (W * E * E).sum(); d.backward()
            J += float(d); sse += float((E.detach() ** 2).sum())
            return J, sse
        u, i, x, w = self.data
        for s in range(0, len(x), self.chunk):
            sl = slice(s, s + self.chunk)
            pred = (p['U'][u[sl]] * p['V'][i[sl]]).sum(1)
            if self.biased: pred = pred + self.mu + p['bu'][u[sl]] + p['bi'][i[sl]]
            e = pred - x[sl]
            d = 0.5 * (w[sl] * e * e).sum(); d.backward()
            J += float(d); sse += float((e.detach() ** 2).sum())
        return J, sse
    def update(self): self.opt.step()
    def params(self): return {kk: v.detach().cpu().numpy().astype(np.float32, copy=True) for kk, v in self.P.items()}

# %%
#| export
METHODS = ('gd', 'adam', 'als')
BACKENDS = ('auto', 'numba', 'jax', 'torch', 'numpy')

def init_factors(n_users: int, n_items: int, k: int, seed: int = 0, scale: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    "Small random N(0, scale^2) factors; U and V come from two independent child streams of one seed (no reused key)."
    su, sv = np.random.SeedSequence(seed).spawn(2)
    U = np.random.default_rng(su).normal(0, scale, (n_users, k)).astype(np.float32)
    V = np.random.default_rng(sv).normal(0, scale, (n_items, k)).astype(np.float32)
    return U, V

def gd_step_size(train: Any, biased: bool = False, weights: np.ndarray | None = None) -> float:
    """Default GD learning rate: alpha = 1 / (c_max * s), c_max the largest weighted count of a user or an item,
    s the root mean square of the (centred, if biased) ratings plus 1 for a bias.
    The block Hessian of the sum loss for one user is sum_i v_i v_i^T + 2 lam I, whose top eigenvalue grows with the
    user's count and with |v|^2 ~ |x|; one fixed alpha must be stable for the busiest row."""
    o = _as_obs(train, weights)
    cmax = max(np.bincount(o.user, o.weight, o.n_users).max(), np.bincount(o.item, o.weight, o.n_items).max(), 1.0)
    x = o.rating - (o.rating.mean() if biased else 0.0)
    s = float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) + (1.0 if biased else 0.0)
    return float(1.0 / (cmax * max(s, 1e-3)))

def fit_mf(train: Any, k: int = 50, lam: float = 0.01, method: str = 'gd', backend: str = 'auto',
           biased: bool = False, max_iter: int = 200, tol: float = 1e-4, lr: float | None = None,
           val: Any | None = None, seed: int = 0, init: tuple[np.ndarray, np.ndarray] | None = None,
           progress: bool = True, weights: np.ndarray | None = None, layout: str = 'sparse',
           device: str = 'cpu', init_scale: float = 0.1, abs_tol: float | None = None) -> MFModel:
    """Minimise J = 1/2 sum_obs w (x - pred)^2 + lam (|U|^2 + |V|^2 [+ |bu|^2 + |bi|^2]).

    method: 'gd' (the handout's full-batch update with one learning rate), 'adam', or 'als' (exact block minimiser).
    backend: 'numba' (compiled sparse kernels, fastest on CPU), 'jax' (jit + value_and_grad + optax), 'torch'
    (autograd + torch.optim), 'numpy' (plain reference, small data), 'auto' = 'numba'. ALS runs on the numba
    kernels for every backend but 'numpy'. layout: 'sparse' (observed entries) or 'dense' (masked full U V^T; jax/torch).
    Stops when |J_t - J_{t-1}| < tol * |J_{t-1}| (relative: J is a sum over all ratings) or, if given,
    < abs_tol, or after max_iter updates. history row t holds J, train and validation RMSE of the t-th iterate
    and the training seconds spent so far (validation scoring excluded)."""
    _check_hparams(k, lam)
    if method not in METHODS: raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if backend not in BACKENDS: raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if layout not in ('sparse', 'dense'): raise ValueError(f"layout must be 'sparse' or 'dense', got {layout!r}")
    if layout == 'dense' and backend not in ('jax', 'torch'):
        raise ValueError("layout='dense' is available for backend 'jax' or 'torch'")
    if not (isinstance(max_iter, (int, np.integer)) and max_iter >= 0): raise ValueError(f"max_iter must be an integer >= 0, got {max_iter!r}")
    if not (tol >= 0): raise ValueError(f"tol must be >= 0, got {tol!r}")
    if lr is not None and not (np.isfinite(lr) and lr > 0): raise ValueError(f"lr must be a positive number, got {lr!r}")
    o = _as_obs(train, weights)
    if len(o) == 0: raise ValueError("train has no ratings")
    ov = _as_obs(val, name='val') if val is not None else None
    if ov is not None and (ov.n_users != o.n_users or ov.n_items != o.n_items):
        raise ValueError(f"val shape {ov.n_users}x{ov.n_items} differs from train {o.n_users}x{o.n_items}")
    backend = 'numba' if backend == 'auto' else backend
    if init is None: U, V = init_factors(o.n_users, o.n_items, int(k), seed, init_scale)
    else:
        U, V = (np.array(a, np.float32) for a in init)
        if U.shape != (o.n_users, k) or V.shape != (o.n_items, k):
            raise ValueError(f"init must be (U {(o.n_users, k)}, V {(o.n_items, k)}), got {U.shape}, {V.shape}")
        if not (np.isfinite(U).all() and np.isfinite(V).all()): raise ValueError("init contains NaN/inf")
    mu = float(np.average(o.rating, weights=o.weight if o.weight.sum() > 0 else None)) if biased else 0.0
    P = {'U': U, 'V': V}
    if biased: P['bu'] = np.zeros(o.n_users, np.float32); P['bi'] = np.zeros(o.n_items, np.float32)
    if lr is None: lr = gd_step_size(o, biased, o.weight if o.weighted else None) if method == 'gd' else 0.01
    eb = backend
    if method == 'als':
        eng = (_NumpyEngine if backend == 'numpy' else _NumbaEngine)(o, P, lam, mu, biased); eb = eng.name
    elif backend in ('numpy', 'numba'):
        eng = (_NumpyEngine if backend == 'numpy' else _NumbaEngine)(o, P, lam, mu, biased)
        opt = _NumpyOpt(method, lr); keys = list(P)
    elif backend == 'jax': eng = _JaxEngine(o, P, lam, mu, biased, method, lr, layout)
    else: eng = _TorchEngine(o, P, lam, mu, biased, method, lr, layout, device=device)

    from tqdm.auto import tqdm
    rows, spent, J_prev = [], 0.0, None
    bar = tqdm(total=max_iter, desc=f'MF {method}/{eb} k={k} lam={lam:g}', disable=not progress, leave=False)
    for t in range(max_iter + 1):
        t0 = time.perf_counter()
        if method == 'als': J, sse = eng.value_only() if t == 0 else eng.als_sweep()
        else: J, sse = eng.value_grad()
        spent += time.perf_counter() - t0
        if not np.isfinite(J):
            bar.close()
            raise FloatingPointError(f"J became {J} at iteration {t} (method={method}, lr={lr:g}): the step is too large")
        vr = np.nan
        if ov is not None:
            Pn = eng.params(); z = lambda n: np.zeros(n, np.float32)
            p = _predict(Pn['U'], Pn['V'], np.float32(mu), Pn.get('bu', z(o.n_users)), Pn.get('bi', z(o.n_items)), ov.user, ov.item)
            vr = float(np.sqrt(np.mean((p - ov.rating).astype(np.float64) ** 2)))
        rows.append((t, J, math.sqrt(sse / len(o)), vr, spent))
        bar.set_postfix(J=f'{J:.5g}', val=f'{vr:.4f}'); 
        if J_prev is not None and (abs(J - J_prev) < (abs_tol if abs_tol is not None else tol * abs(J_prev))): break
        if t == max_iter: break
        J_prev = J
        if method != 'als':
            t0 = time.perf_counter()
            if backend in ('numpy', 'numba'): opt.update(eng.P, eng.G, keys)
            else: eng.update()
            spent += time.perf_counter() - t0
            bar.update(1)
        else: bar.update(1)
    bar.close()
    Pn = eng.params()
    hist = pd.DataFrame(rows, columns=['iter', 'J', 'train_rmse', 'val_rmse', 'seconds'])
    cfg = dict(k=int(k), lam=float(lam), method=method, backend=eb, biased=biased, lr=float(lr) if method != 'als' else None,
               layout=layout, seed=seed, converged=len(rows) <= max_iter, iters=len(rows) - 1)
    return MFModel(Pn['U'], Pn['V'], mu, Pn.get('bu'), Pn.get('bi'), hist, cfg)
