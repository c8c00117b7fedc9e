# The README's two commands. Each builds its own virtual environment on first use, so they work on a
# fresh machine with only Python 3.11 and gcc.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: bench test bench-smoke clean

# the main job: every available backend verified, then timed side by side with PyTorch
bench: $(VENV)/.installed
	$(BIN)/fastconv bench

# the test suite (PyTorch serves as an external oracle)
test: $(VENV)/.installed
	$(BIN)/python -m pytest

# the benchmark suite once, timing nothing: every case still verifies its result against the reference
bench-smoke: $(VENV)/.installed
	$(BIN)/python -m pytest benchmarks --quick --benchmark-disable -p no:cacheprovider

$(VENV)/.installed: pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	# torch first and pinned: 2.13.0 is a local CPU wheel here, any other spec downloads a CUDA build
	$(BIN)/python -m pip install torch==2.13.0
	$(BIN)/python -m pip install -e '.[test,bench,torch,numba,train]'
	touch $@

clean:
	rm -rf $(VENV) build src/*.egg-info bench-results .pytest_cache .hypothesis .benchmarks
