# semcolor: the two newcomer commands are `make demo` and `make test`; both set up their own venv.
VENV ?= .venv
PY := $(VENV)/bin/python
# two pytest-xdist workers, one per lane (tests/conftest.py: the tests that start their own Ray beside the rest);
# the 15 slowest tests, to keep the suite under 10 minutes
PYTEST_ARGS ?= -n 2 --durations=15
PYTEST_UNIT_ARGS ?= --durations=15

.PHONY: setup demo test test-unit browser bench clean

setup:
	VENV=$(VENV) ./scripts/ensure_venv.sh

demo: setup
	$(VENV)/bin/semcolor demo --out demo_out

# the import layers (pyproject.toml [tool.importlinter]) first: seconds, and a broken layer fails before the suite
test: setup
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: setup
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest -m "not ray and not s3 and not browser and not slow" $(PYTEST_UNIT_ARGS)

# Debian chromium for the browser test of the web page (the test skips with a reason without it).
browser:
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

# Every benchmark, results into docs/benchmarks/ (what README's figures come from); about 2 hours on 2 cores.
BENCH_OUT ?= docs/benchmarks
bench: setup
	$(VENV)/bin/semcolor bench model --out $(BENCH_OUT)
	$(VENV)/bin/semcolor bench data --s3 --out $(BENCH_OUT)
	$(VENV)/bin/semcolor bench colorize --s3 --out $(BENCH_OUT)
	$(VENV)/bin/semcolor bench colorize --rows resolution --out $(BENCH_OUT)
	$(VENV)/bin/semcolor bench train --out $(BENCH_OUT)
	$(VENV)/bin/semcolor bench serve --out $(BENCH_OUT)
	$(VENV)/bin/semcolor bench quality --out $(BENCH_OUT)

clean:
	rm -rf demo_out bench_out runs .pytest_cache
