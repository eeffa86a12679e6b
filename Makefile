# semcolor: the two newcomer commands are `make demo` and `make test`; both set up their own venv.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup demo test test-unit browser bench clean

setup:
	VENV=$(VENV) ./scripts/ensure_venv.sh

demo: setup
	$(VENV)/bin/semcolor demo --out demo_out

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: setup
	$(PY) -m pytest -m "not ray and not s3 and not browser and not slow" $(PYTEST_ARGS)

# Debian chromium for the browser test of the web page (the test skips with a reason without it).
browser:
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

bench: setup
	$(VENV)/bin/semcolor info --out bench_out/model.json
	$(VENV)/bin/semcolor bench data --s3
	$(VENV)/bin/semcolor bench colorize --s3
	$(VENV)/bin/semcolor bench train
	$(VENV)/bin/semcolor bench serve

clean:
	rm -rf demo_out bench_out runs .pytest_cache
