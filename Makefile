# The README's two commands. Each builds its own virtual environment on first use, so they work on a
# fresh machine with only Python 3.11 and gcc.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

# The GPU emulator's tests run in a second process, with the emulator built under AddressSanitizer
# and UBSan: the ASan runtime must be loaded before Python starts, and a report must fail the
# kernel launch that made it instead of ending the process (fastconv/backends/cupy/_emu.py).
CXX    ?= g++
SANITIZED := LD_PRELOAD="$$($(CXX) -print-file-name=libasan.so)" ASAN_OPTIONS=detect_leaks=0:halt_on_error=0 \
             FASTCONV_EMU_SANITIZE=1

.PHONY: bench test test-emu bench-smoke gpu-check clean

# the main job: every available backend verified, then timed side by side with PyTorch
bench: $(VENV)/.installed
	$(BIN)/fastconv bench

# the test suite (PyTorch serves as an external oracle): everything but the GPU emulator, then the
# emulator's backend matrix and its own tests under the sanitizers; FASTCONV_REQUIRE_NVRTC turns a
# missing NVRTC (the sm_80/sm_90 compile check of every kernel) into a failure instead of a skip
test: $(VENV)/.installed
	FASTCONV_REQUIRE_NVRTC=1 $(BIN)/python -m pytest --emu=without
	$(MAKE) test-emu

test-emu: $(VENV)/.installed
	$(SANITIZED) $(BIN)/python -m pytest --emu=only

# the benchmark suite once, timing nothing: every case still verifies its result against the reference
bench-smoke: $(VENV)/.installed
	$(BIN)/python -m pytest benchmarks --quick --benchmark-disable -p no:cacheprovider

# On a machine with an NVIDIA GPU, CuPy and PyTorch already installed and no network (the lent H100s):
# installs fastconv into that Python without build isolation, dependency resolution or the CPU
# extensions, runs the GPU tests and the GPU benchmark, and writes $(GPU_OUT)/summary.md; about 8
# minutes at most on an H100 (benchmarks/gpu_check.py)
GPU_OUT ?= gpu-results
gpu-check:
	FASTCONV_CPU_EXTENSIONS=0 $(PYTHON) -m pip install -q --no-build-isolation --no-deps --no-index -e .
	$(PYTHON) benchmarks/gpu_check.py --out $(GPU_OUT)

$(VENV)/.installed: pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	# torch first and pinned: 2.13.0 is a local CPU wheel here, any other spec downloads a CUDA build
	$(BIN)/python -m pip install torch==2.13.0
	$(BIN)/python -m pip install -e '.[test,bench,torch,numba,train]'
	touch $@

clean:
	rm -rf $(VENV) build src/*.egg-info bench-results gpu-results .pytest_cache .hypothesis .benchmarks
