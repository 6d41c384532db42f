# reelsr: the README's commands. Each target installs what it needs first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Reinstall when the dependency list changes.
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
DEMO_OUT ?= demo-out

.PHONY: setup demo test test-fast bench lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# PyPI's torch wheel (CUDA build, runs on CPU too): see pyproject.toml.
	$(BIN)/python -m pip install --quiet -e ".[test]"
	rm -f $(VENV)/.installed-*
	touch $@

demo: setup
	$(BIN)/python -m jobs.restore --input demo/carphone_qcif.mp4 --output $(DEMO_OUT) --preset tiny

test: setup
	$(BIN)/python -m pytest -q

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
