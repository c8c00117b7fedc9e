// Shared by every C++ kernel family: index type, aligned workspaces, small integer helpers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <type_traits>

// Feature-based clones of a hot loop, one per instruction set, picked at load time: an "arch="
// clone is picked by CPU model name, so a Cascade Lake would miss a skylake-avx512 clone and fall
// back to SSE2. GCC clones only non-template functions: each is an overload per element type.
#define FASTCONV_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))

namespace fastconv {

using index_t = std::int64_t;

inline index_t ceil_div(index_t a, index_t b) { return (a + b - 1) / b; }
inline index_t round_up(index_t a, index_t b) { return ceil_div(a, b) * b; }
inline index_t min_i(index_t a, index_t b) { return a < b ? a : b; }
inline index_t max_i(index_t a, index_t b) { return a > b ? a : b; }

// Bytes held by all live Buffers and the most ever held at once since the last reset: lets the
// tests check that a kernel's workspace is bounded (e.g. independent of the batch size).
void workspace_note(index_t delta_bytes);
index_t workspace_peak_bytes();
void workspace_reset_peak();

// Buffer's memory (workspace.cpp): blocks of 256 KiB and more are kept for later calls, up to
// workspace_cache_bytes() in all (128 MiB by default; none under AddressSanitizer), instead of
// going back to the system each call. workspace_alloc returns a 64-byte aligned block of at least
// `bytes` (a multiple of 64) and its size in `capacity`, which workspace_free takes back.
constexpr std::size_t kKeptBlockBytes = std::size_t(256) << 10;  // smaller: glibc's heap serves them anyway
void* workspace_alloc(std::size_t bytes, std::size_t& capacity);
void workspace_free(void* p, std::size_t capacity);
void set_workspace_cache_bytes(index_t bytes);  // std::invalid_argument if negative; frees what is over
index_t workspace_cache_bytes();   // the bound
index_t workspace_cached_bytes();  // kept now

// An uninitialised, 64-byte aligned array (one cache line, one AVX-512 vector) owned by one call
// or one thread; kernels size it explicitly so every workspace bound is visible at its use.
template <typename T>
class Buffer {
 public:
  explicit Buffer(index_t n = 0) { resize(n); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() { release(); }
  void resize(index_t n) {
    release();
    if (n > 0) {
      const index_t bytes = round_up(n * index_t(sizeof(T)), 64);
      ptr_ = static_cast<T*>(workspace_alloc(static_cast<std::size_t>(bytes), capacity_));
      size_ = n;
      bytes_ = bytes;
      workspace_note(bytes);
    }
  }
  T* data() { return ptr_; }
  const T* data() const { return ptr_; }
  index_t size() const { return size_; }

 private:
  void release() {
    if (ptr_) workspace_note(-bytes_);
    workspace_free(ptr_, capacity_);
    ptr_ = nullptr;
    size_ = bytes_ = 0;
    capacity_ = 0;
  }
  T* ptr_ = nullptr;
  index_t size_ = 0, bytes_ = 0;
  std::size_t capacity_ = 0;  // of the block (workspace_alloc)
};

// True when none of x[0, n) is NaN or infinite: no element has all exponent bits set. Integer
// tests, so the compiler vectorises the loop (a floating-point sum would be one serial chain).
template <typename T>
inline bool all_finite(const T* x, index_t n) {
  using Bits = std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint64_t>;
  constexpr Bits exponent = sizeof(T) == 4 ? Bits(0x7f800000u) : Bits(0x7ff0000000000000ull);
  Bits bad = 0;
  for (index_t i = 0; i < n; ++i) {
    Bits b;
    std::memcpy(&b, x + i, sizeof(T));
    bad |= Bits((b & exponent) == exponent);
  }
  return bad == 0;
}

template <typename T>
inline void fill_zero(T* p, index_t n) { std::memset(p, 0, static_cast<std::size_t>(n) * sizeof(T)); }

// Prefetches, for reading, the cache lines of the `bytes` bytes that start `offset` bytes from p.
// The address is an integer sum: a span that runs past an array (the rows after a plane's last
// one, which are the next plane's first rows, but for the last plane) is only prefetched, which
// never faults, and never read.
inline void prefetch_span(const void* p, index_t offset, index_t bytes) {
  const std::uintptr_t first = reinterpret_cast<std::uintptr_t>(p) + static_cast<std::uintptr_t>(offset);
  for (std::uintptr_t a = first; a < first + static_cast<std::uintptr_t>(bytes); a += 64)
    __builtin_prefetch(reinterpret_cast<const void*>(a));
}

// body(i) for i in [0, n): shared out among the threads of the enclosing parallel region when
// `team` (an orphaned omp for: every thread of the team must call this), one i at a time or, for
// many equal small jobs, `even`ly (static: no atomic per job), else all of it on the calling
// thread (as inside another loop already shared out: worksharing does not nest).
template <class Body>
void team_for(bool team, index_t n, const Body& body, bool even = false) {
  if (team && even) {
#pragma omp for schedule(static)
    for (index_t i = 0; i < n; ++i) body(i);
  } else if (team) {
#pragma omp for schedule(dynamic, 1)
    for (index_t i = 0; i < n; ++i) body(i);
  } else {
    for (index_t i = 0; i < n; ++i) body(i);
  }
}

}  // namespace fastconv
