"""Open built report pages in a real headless Chromium and check what a reader would see.

A tiny Chrome DevTools Protocol client over `--remote-debugging-pipe` (standard library only).
For each page it records every network request, waits until the page is loaded, plotly has drawn
and MathJax has typeset, then saves a full-page screenshot and returns what it found:

    python tools/report/browser_check.py _site/index.html _site/02_cosine_cf.html --out _site/_checks

Exit status 1 when a page fails its checks (a failed or non-local request, a JavaScript error,
an expected plot or formula that did not render).
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM_NAMES = ('chromium', 'chromium-browser', 'google-chrome', 'google-chrome-stable', 'chrome')
INSTALL_HINT = 'sudo apt-get update && sudo apt-get install -y --no-install-recommends chromium'

# Evaluated in the page: what rendered. Plotly draws into <svg class="main-svg">; MathJax 2 SVG output
# leaves <span class="MathJax_SVG"> and a finished queue; raw `$` left in text means math was not typeset.
_PROBE_JS = r"""(() => {
  const mj = window.MathJax;
  const mjDone = !mj ? null : !!(mj.Hub && mj.Hub.queue && mj.Hub.queue.pending === 0 && mj.Hub.queue.running === 0
                                 && window.__mathjaxDone);
  return JSON.stringify({
    ready: document.readyState,
    plotly_divs: document.querySelectorAll('.plotly-figure').length,
    plotly_svgs: Array.from(document.querySelectorAll('.plotly-figure'))
      .filter(d => d.querySelector('svg.main-svg')).length,
    plotly_drawn: document.querySelectorAll('.plotly-figure .js-plotly-plot').length,
    math_expected: document.querySelectorAll('[data-has-math]').length,
    math_rendered: document.querySelectorAll('.MathJax_SVG, .MathJax_SVG_Display, mjx-container').length,
    mathjax_loaded: !!mj, mathjax_done: mjDone,
    title: document.title, height: document.documentElement.scrollHeight,
    errors: window.__reportErrors || []
  });
})()"""


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome executable, or None."""
    env = os.environ.get('BROWSER_PATH') or os.environ.get('CHROMIUM')
    if env and Path(env).exists():
        return env
    for name in CHROMIUM_NAMES:
        p = shutil.which(name)
        if p:
            return p
    return None


@dataclass
class PageReport:
    """What the browser saw on one page."""
    url: str
    screenshot: str | None = None
    requests: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    js_errors: list[str] = field(default_factory=list)
    probe: dict = field(default_factory=dict)

    @property
    def remote_requests(self) -> list[str]:
        """Requests that would need a network (anything not file:, data:, blob: or about:)."""
        return [u for u in self.requests if u.split(':', 1)[0] not in ('file', 'data', 'blob', 'about', 'chrome-error')]

    def problems(self, expect_plot: bool | None = None, expect_math: bool | None = None) -> list[str]:
        """Human-readable list of failed checks (empty when the page is fine).

        `expect_plot` / `expect_math`: None means "whatever the page declares" (figures and math present
        in the HTML must render), True additionally requires at least one.
        """
        p, out = self.probe, []
        if not p:
            return ['page did not load']
        if self.failed_requests:
            out.append(f'failed requests: {self.failed_requests}')
        if self.remote_requests:
            out.append(f'requests that need the network: {self.remote_requests}')
        if self.js_errors:
            out.append(f'JavaScript errors: {self.js_errors[:5]}')
        if p.get('plotly_divs', 0) and p.get('plotly_svgs', 0) < p['plotly_divs']:
            out.append(f"{p['plotly_divs']} plotly figures but only {p.get('plotly_svgs', 0)} drew an SVG")
        if expect_plot and not p.get('plotly_svgs'):
            out.append('no plotly figure drew')
        if p.get('math_expected') and not p.get('math_rendered'):
            out.append('math present but not typeset by MathJax')
        if expect_math and not p.get('math_rendered'):
            out.append('no typeset math found')
        return out


class _Pipe:
    """CDP over --remote-debugging-pipe: Chromium reads commands on fd 3 and writes on fd 4, NUL-separated JSON."""

    def __init__(self, chromium: str, user_data_dir: str, width: int, height: int):
        to_chrome_r, self._w = os.pipe()
        self._r, from_chrome_w = os.pipe()
        args = [chromium, '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
                '--disable-background-networking', '--disable-component-update', '--disable-sync',
                '--disable-default-apps', '--disable-extensions', '--mute-audio', '--hide-scrollbars',
                '--allow-file-access-from-files', f'--user-data-dir={user_data_dir}',
                f'--window-size={width},{height}', '--remote-debugging-pipe', 'about:blank']

        def child_fds():  # runs in the child: put the pipe ends on fds 3 and 4 (via high fds, no clobbering)
            r, w = os.dup(to_chrome_r), os.dup(from_chrome_w)
            r, w = os.dup2(r, 100), os.dup2(w, 101)
            os.dup2(r, 3)
            os.dup2(w, 4)

        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, preexec_fn=child_fds, close_fds=False)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        os.set_blocking(self._r, False)
        self._buf = b''
        self._id = 0
        self.events: list[dict] = []

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> int:
        self._id += 1
        msg = {'id': self._id, 'method': method, 'params': params or {}}
        if session:
            msg['sessionId'] = session
        os.write(self._w, json.dumps(msg).encode() + b'\0')
        return self._id

    def _read(self, timeout: float) -> list[dict]:
        import select
        out, end = [], time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return out
            ready, _, _ = select.select([self._r], [], [], left)
            if not ready:
                return out
            try:
                chunk = os.read(self._r, 1 << 20)
            except BlockingIOError:
                continue
            if not chunk:
                raise RuntimeError('Chromium closed the DevTools pipe (it crashed or exited)')
            self._buf += chunk
            while b'\0' in self._buf:
                raw, self._buf = self._buf.split(b'\0', 1)
                out.append(json.loads(raw))
            if out:
                return out

    def call(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30) -> dict:
        mid = self.send(method, params, session)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for msg in self._read(end - time.monotonic()):
                if msg.get('id') == mid:
                    if 'error' in msg:
                        raise RuntimeError(f'{method}: {msg["error"]}')
                    return msg.get('result', {})
                self.events.append(msg)
        raise TimeoutError(f'no answer to {method} within {timeout} s')

    def pump(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.events.extend(self._read(end - time.monotonic()))

    def close(self) -> None:
        try:
            self.send('Browser.close')
            self.proc.wait(timeout=5)
        except Exception:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._r, self._w):
            try:
                os.close(fd)
            except OSError:
                pass


def check_pages(pages: list[str | Path], out_dir: str | Path | None = None, width: int = 1280, height: int = 900,
                timeout: float = 60, chromium: str | None = None) -> list[PageReport]:
    """Load each page (a path or URL) in headless Chromium; return a `PageReport` per page.

    Screenshots (full page, PNG) go to `out_dir` as `<page stem>.png`.
    """
    chromium = chromium or find_chromium()
    if not chromium:
        raise FileNotFoundError(f'Chromium not found; install it with: {INSTALL_HINT}')
    out_dir = Path(out_dir) if out_dir else None
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
    reports = []
    with tempfile.TemporaryDirectory(prefix='report-chromium-') as profile:
        cdp = _Pipe(chromium, profile, width, height)
        try:
            for page in pages:
                reports.append(_check_one(cdp, page, out_dir, width, height, timeout))
        finally:
            cdp.close()
    return reports


def _check_one(cdp: _Pipe, page, out_dir, width, height, timeout) -> PageReport:
    url = page if '://' in str(page) else Path(page).resolve().as_uri()
    rep = PageReport(url=url)
    target = cdp.call('Target.createTarget', {'url': 'about:blank'})['targetId']
    session = cdp.call('Target.attachToTarget', {'targetId': target, 'flatten': True})['sessionId']
    try:
        for dom in ('Network', 'Page', 'Runtime', 'Log'):
            cdp.call(f'{dom}.enable', session=session)
        cdp.call('Emulation.setDeviceMetricsOverride',
                 {'width': width, 'height': height, 'deviceScaleFactor': 1, 'mobile': False}, session=session)
        cdp.events.clear()
        cdp.call('Page.navigate', {'url': url}, session=session)
        end, probe = time.monotonic() + timeout, {}
        while time.monotonic() < end:
            cdp.pump(0.5)
            raw = cdp.call('Runtime.evaluate', {'expression': _PROBE_JS, 'returnByValue': True},
                           session=session).get('result', {}).get('value')
            probe = json.loads(raw) if raw else {}
            loaded = probe.get('ready') == 'complete'
            plots_done = probe.get('plotly_svgs', 0) >= probe.get('plotly_divs', 0)
            math_done = not probe.get('mathjax_loaded') or probe.get('mathjax_done')
            if loaded and plots_done and math_done:
                cdp.pump(0.5)  # let the last paint settle
                break
        rep.probe = probe
        for ev in cdp.events:
            if ev.get('sessionId') != session:
                continue
            m, p = ev.get('method'), ev.get('params', {})
            if m == 'Network.requestWillBeSent':
                rep.requests.append(p['request']['url'])
            elif m == 'Network.loadingFailed' and not p.get('canceled'):
                rep.failed_requests.append(f"{p.get('errorText')} ({p.get('requestId')})")
            elif m == 'Runtime.exceptionThrown':
                d = p.get('exceptionDetails', {})
                rep.js_errors.append(d.get('exception', {}).get('description') or d.get('text', '?'))
            elif m == 'Log.entryAdded' and p.get('entry', {}).get('level') == 'error':
                e = p['entry']
                rep.js_errors.append(f"{e.get('source')}: {e.get('text')} {e.get('url', '')}".strip())
        # map failed request ids to urls for a readable message
        urls = {ev['params']['requestId']: ev['params']['request']['url'] for ev in cdp.events
                if ev.get('method') == 'Network.requestWillBeSent' and ev.get('sessionId') == session}
        rep.failed_requests = [f.replace(f"({rid})", f"({urls[rid]})") for f in rep.failed_requests
                               for rid in [f.rsplit('(', 1)[-1].rstrip(')')] if rid in urls] or rep.failed_requests
        js = probe.get('errors') or []
        rep.js_errors.extend(str(e) for e in js)
        if out_dir:
            full_h = max(height, min(int(probe.get('height') or height), 12000))
            shot = cdp.call('Page.captureScreenshot', {
                'format': 'png', 'captureBeyondViewport': True,
                'clip': {'x': 0, 'y': 0, 'width': width, 'height': full_h, 'scale': 1}}, session=session)
            name = Path(url.split('?')[0]).stem or 'page'
            path = out_dir / f'{name}.png'
            path.write_bytes(base64.b64decode(shot['data']))
            rep.screenshot = str(path)
    finally:
        try:
            cdp.call('Target.closeTarget', {'targetId': target})
        except Exception:
            pass
    return rep


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('pages', nargs='+', help='HTML files or URLs')
    ap.add_argument('--out', default=None, help='folder for screenshots')
    ap.add_argument('--timeout', type=float, default=60)
    a = ap.parse_args(argv)
    bad = 0
    for rep in check_pages(a.pages, a.out, timeout=a.timeout):
        probs = rep.problems()
        p = rep.probe
        print(f"{'OK  ' if not probs else 'FAIL'} {rep.url}: "
              f"{p.get('plotly_svgs', 0)}/{p.get('plotly_divs', 0)} plots drawn, "
              f"{p.get('math_rendered', 0)} formulas typeset, {len(rep.requests)} requests "
              f"({len(rep.remote_requests)} remote, {len(rep.failed_requests)} failed)"
              + (f', screenshot {rep.screenshot}' if rep.screenshot else ''))
        for pr in probs:
            print('     ', pr)
        bad += bool(probs)
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main())
