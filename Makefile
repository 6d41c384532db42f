# reelsr: the README's commands. Each target installs what it needs first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Reinstall when the dependency list changes.
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
DEMO_OUT ?= demo-out
SERVE_DATA ?= serve-data
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup browser demo serve test test-fast bench lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# PyPI's torch wheel (CUDA build, runs on CPU too): see pyproject.toml.
	$(BIN)/python -m pip install --quiet -e ".[test]"
	rm -f $(VENV)/.installed-*
	touch $@

# Debian's Chromium, which the browser test drives (headless) through Playwright.
browser:
	@command -v chromium >/dev/null || { echo "installing Debian's chromium for the browser test"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends chromium; }

demo: setup
	$(BIN)/python -m jobs.restore --input demo/carphone_qcif.mp4 --output $(DEMO_OUT)

# The web app on http://127.0.0.1:8000/ (data in $(SERVE_DATA)/). Add an account first:
#   .venv/bin/python -m jobs.serve --data serve-data add-user NAME
serve: setup
	$(BIN)/python -m jobs.serve --data $(SERVE_DATA)

test: setup browser
	PYTHONFAULTHANDLER=1 $(BIN)/python -m pytest -q

# The fast tier: no Ray cluster, no job in a subprocess (tests marked slow are left out).
test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

# Stage throughputs, end to end through Ray, and the GPU path when CUDA is there:
# bench/results/<date>-<host>.json and .md (about 10 minutes on 2 CPU cores). See bench/README.md.
bench: setup
	$(BIN)/python -m bench.run

lint: setup
	$(BIN)/python -m ruff check pipeline jobs tests bench

clean:
	rm -rf $(DEMO_OUT) .pytest_cache
