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

# The C++ backend, built a second time with AddressSanitizer and UBSan into build/asan (a copy of the
# package with the sanitized extension in it, ahead on PYTHONPATH) and its tests run on that build:
# a kernel that reads or writes out of bounds, or overflows an int, fails the run.
SANITIZE_FLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
SANITIZED_CPP := LD_PRELOAD="$$($(CXX) -print-file-name=libasan.so):$$($(CXX) -print-file-name=libubsan.so)" \
                 ASAN_OPTIONS=detect_leaks=0 PYTHONPATH=build/asan

.PHONY: bench test test-emu test-cpp-asan test-huge bench-smoke gpu-check clean

# the main job: every available backend verified, then timed side by side with PyTorch
bench: $(VENV)/.installed
	$(BIN)/fastconv bench

# the test suite (PyTorch serves as an external oracle): everything but the GPU emulator, then the
# emulator's backend matrix and its own tests under the sanitizers; FASTCONV_REQUIRE_NVRTC turns a
# missing NVRTC (the sm_80/sm_90 compile check of every kernel) into a failure instead of a skip
test: $(VENV)/.installed
	FASTCONV_REQUIRE_NVRTC=1 $(BIN)/python -m pytest --emu=without
	$(MAKE) test-emu
	$(MAKE) test-cpp-asan

test-emu: $(VENV)/.installed
	$(SANITIZED) $(BIN)/python -m pytest --emu=only

test-cpp-asan: $(VENV)/.installed
	rm -rf build/asan && mkdir -p build/asan && cp -r src/fastconv build/asan/ && rm -f build/asan/fastconv/_cpp*.so
	$(BIN)/python -m pip install -q "setuptools>=68" wheel "pybind11>=2.12" "Cython>=3.0"  # setup.py's build needs
	FASTCONV_CPU_EXTENSIONS=cpp CC="gcc $(SANITIZE_FLAGS)" CXX="g++ $(SANITIZE_FLAGS)" \
	    $(BIN)/python setup.py -q build_ext --force --build-lib build/asan --build-temp build/asan-temp
	$(SANITIZED_CPP) $(BIN)/python -m pytest tests -k cpp --emu=without -p no:cacheprovider

# inputs past 2^31 elements through the C++ backend, apart from `make test`: about 18 GB of memory
test-huge: $(VENV)/.installed
	$(BIN)/python -m pytest tests/test_huge.py --huge --emu=without -p no:cacheprovider

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
