// Run-time choice of the micro-kernels, the portable fallback kernel, and the general GEMM.
#include "gemm.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace fastconv {
namespace {

#include "ukernel.h"

// The portable kernel: "vectors" of one lane, so the compiler sees plain scalar code (4x4 tile).
template <typename TT>
struct Scalar {
  using T = TT;
  using R = TT;
  static constexpr int L = 1;
  static R zero() { return R(0); }
  static R load(const T* p) { return *p; }
  static R set1(T v) { return v; }
  static R fma(R a, R b, R c) { return a * b + c; }
  static R add(R a, R b) { return a + b; }
  static void store(T* p, R v) { *p = v; }
};

struct KernelSet {
  const char* name;
  KernelTable k;
};

KernelSet generic_set() {  // few rows: 2x8, few columns: 8x2, no dot kernel
  return KernelSet{"generic",
                   KernelTable{kernel_set<Scalar<float>, 4, 4>(256, 256), kernel_set<Scalar<float>, 2, 8>(256, 256),
                               kernel_set<Scalar<float>, 8, 2>(256, 256), kernel_set<Scalar<double>, 4, 4>(256, 256),
                               kernel_set<Scalar<double>, 2, 8>(256, 256), kernel_set<Scalar<double>, 8, 2>(256, 256),
                               DotKernel<float>{}, ChanKernel<float>{}}};
}

// One cache's size in bytes from sysfs ("32K", "1024K", "8M"), 0 where there is none.
index_t sysfs_cache_bytes(int level, const char* type) {
  for (int i = 0; i < 16; ++i) {
    const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(i) + "/";
    std::ifstream lf(dir + "level"), tf(dir + "type"), sf(dir + "size");
    int lv = 0;
    std::string ty, size;
    if (!(lf >> lv) || !(tf >> ty) || !(sf >> size)) continue;
    if (lv != level || ty != type) continue;
    char* end = nullptr;
    const long long n = std::strtoll(size.c_str(), &end, 10);
    const index_t unit = *end == 'K' ? 1024 : *end == 'M' ? 1024 * 1024 : *end == 'G' ? 1024 * 1024 * 1024 : 1;
    return n > 0 ? index_t(n) * unit : 0;
  }
  return 0;
}

// One cache size: the environment variable's, or sysfs's, or the fallback. A value that is not
// a positive number of bytes (at least 4 KiB) is an error: a silent fallback would hide the typo.
index_t cache_bytes(const char* env, int level, const char* type, index_t fallback, const char** source) {
  if (const char* v = std::getenv(env); v && *v) {
    char* end = nullptr;
    const long long n = std::strtoll(v, &end, 10);
    if (*end != '\0' || n < 4096)
      throw std::invalid_argument(std::string(env) + " must be a cache size in bytes (at least 4096), got '" + v + "'");
    *source = "env";
    return index_t(n);
  }
  if (const index_t n = sysfs_cache_bytes(level, type)) {
    *source = "sysfs";
    return n;
  }
  *source = "default";
  return fallback;
}

}  // namespace

const CacheSizes& cache_sizes() {
  static const CacheSizes c = [] {
    CacheSizes r{};
    r.l2 = cache_bytes("FASTCONV_L2_BYTES", 2, "Unified", index_t(1) << 20, &r.l2_source);
    return r;
  }();
  return c;
}

namespace {

// The kernel sets this build has and this CPU runs, best first.
struct Available {
  KernelSet sets[3];
  int count = 0;
  Available() {
    __builtin_cpu_init();
    KernelSet s{};
    const index_t l2 = cache_sizes().l2;
    if (__builtin_cpu_supports("avx512f") && gemm_kernels_avx512(s.k, l2)) {
      s.name = "avx512";
      sets[count++] = s;
    }
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && gemm_kernels_avx2(s.k, l2)) {
      s.name = "avx2";
      sets[count++] = s;
    }
    sets[count++] = generic_set();
  }
};

const Available& available() {
  static const Available a;  // thread-safe initialisation (C++11 statics)
  return a;
}

std::atomic<const KernelSet*>& current() {
  static std::atomic<const KernelSet*> set{&available().sets[0]};
  return set;
}

// The current set's kernels of element type T.
template <typename T>
struct Kernels {
  const MicroKernel<T>&general, &few_rows, &few_cols;
};
Kernels<float> kernels_of(const KernelTable& k, float) { return {k.f32, k.f32_few_rows, k.f32_few_cols}; }
Kernels<double> kernels_of(const KernelTable& k, double) { return {k.f64, k.f64_few_rows, k.f64_few_cols}; }
template <typename T>
Kernels<T> kernels() {
  return kernels_of(current().load()->k, T());
}

// `narrow` when its panels pad n to at least 1/8 less than the general kernel's along dimension
// `dim` (16 or 32 rows: 16/32 instead of 28/42 at MR = 14, while 64 rows stay general: 64 against
// 70; 16 columns: 16 instead of 32 at NR = 32).
template <typename T>
const MicroKernel<T>& pick(const MicroKernel<T>& general, const MicroKernel<T>& narrow, index_t n,
                           int MicroKernel<T>::*dim) {
  return round_up(n, index_t(narrow.*dim)) * 8 < round_up(n, index_t(general.*dim)) * 7 ? narrow : general;
}

}  // namespace

template <typename T>
const MicroKernel<T>& micro_kernel() {
  return kernels<T>().general;
}
template <typename T>
const MicroKernel<T>& micro_kernel(index_t M) {
  return pick(kernels<T>().general, kernels<T>().few_rows, M, &MicroKernel<T>::mr);
}
template <typename T>
const MicroKernel<T>& micro_kernel_few_rows() {
  return kernels<T>().few_rows;
}
template <typename T>
const MicroKernel<T>& micro_kernel_few_rows(index_t N) {
  return pick(kernels<T>().few_rows, kernels<T>().general, N, &MicroKernel<T>::nr);
}
template <typename T>
const MicroKernel<T>& micro_kernel_few_cols() {
  return kernels<T>().few_cols;
}
template <typename T>
const MicroKernel<T>& micro_kernel_few_cols(index_t N) {
  return pick(kernels<T>().general, kernels<T>().few_cols, N, &MicroKernel<T>::nr);
}

const DotKernel<float>& dot_kernel() { return current().load()->k.f32_dot; }
const ChanKernel<float>& chan_kernel() { return current().load()->k.f32_chan; }

#define FASTCONV_KERNEL_CHOICE(T)                                   \
  template const MicroKernel<T>& micro_kernel<T>();                 \
  template const MicroKernel<T>& micro_kernel<T>(index_t);          \
  template const MicroKernel<T>& micro_kernel_few_rows<T>();        \
  template const MicroKernel<T>& micro_kernel_few_rows<T>(index_t); \
  template const MicroKernel<T>& micro_kernel_few_cols<T>();        \
  template const MicroKernel<T>& micro_kernel_few_cols<T>(index_t);
FASTCONV_KERNEL_CHOICE(float)
FASTCONV_KERNEL_CHOICE(double)

const char* gemm_isa() { return current().load()->name; }

bool gemm_isa_is(const char* name) { return std::strcmp(gemm_isa(), name) == 0; }

void set_gemm_isa(const std::string& name) {
  const Available& a = available();
  if (name == "auto") {
    current().store(&a.sets[0]);
    return;
  }
  std::string have;
  for (int i = 0; i < a.count; ++i) {
    if (name == a.sets[i].name) {
      current().store(&a.sets[i]);
      return;
    }
    have += (i ? ", " : "") + std::string(a.sets[i].name);
  }
  throw std::invalid_argument("kernel set '" + name + "' is not available on this CPU/build (have: " + have +
                              ", or 'auto')");
}

template <typename T>
void gemm(index_t M, index_t N, index_t K, const T* a, index_t rsa, index_t csa, const T* b, index_t rsb,
          index_t csb, T* c, index_t ldc, int nthreads) {
  if (M == 0 || N == 0) return;
  if (K == 0) {  // an empty sum: the loops below would leave C unwritten
    for (index_t i = 0; i < M; ++i) fill_zero(c + i * ldc, N);
    return;
  }
  const MicroKernel<T>& uk = micro_kernel<T>();
  const Tiling t = tile_product(uk, M, N, nthreads);
  // A packed once up front where several column units share its panels; where the columns are one
  // unit (N up to NC, e.g. a dense layer's 64 outputs over a batch of 32768 rows) each panel is
  // used once, and packing all of A first cost a pass over it through memory (and M*K of
  // workspace): there A is read where it lies (InPlaceA, each panel packed as it goes where its
  // layout would crowd L1). Measured (2-core AMD EPYC Zen 5, 2 threads), dense forward at 64
  // outputs: 32768 x 576 rows 74 -> 283-317 GFLOP/s, 4096 x 4096 74 -> 273-334 GFLOP/s.
  const bool share_a = t.col_units > 1;
  Buffer<T> ap(share_a ? packed_a_size(uk, M, K) : 0);  // workspace: A packed once, M*K rounded up to MR rows
  std::vector<index_t> a_off(share_a ? 0 : static_cast<std::size_t>(K));  // A(i, p) at a + a_off[p] + i*rsa
  for (index_t p = 0; p < static_cast<index_t>(a_off.size()); ++p) a_off[p] = p * csa;
  const InPlaceA<T> a_in_place{a, rsa, a_off.data(), M, !share_a && l1_crowded<T>(rsa, a_off.data(), K)};
  const StridedB<T> pack_b{b, rsb, csb};
  const PlainC<T> cmap{c, ldc};
  const int team = static_cast<int>(min_i(nthreads, t.units()));
#pragma omp parallel num_threads(team)
  {
    if (share_a) {
#pragma omp for schedule(static)
      for (index_t job = 0; job < pack_a_jobs(uk, M, K); ++job) pack_a_job(uk, a, rsa, csa, M, K, ap.data(), job);
    }
    Buffer<T> bbuf(packed_b_size(uk));         // per-thread workspace: one KC x NC packed block
#pragma omp for schedule(dynamic, 1)
    for (index_t u = 0; u < t.units(); ++u) {
      const index_t ru = u / t.col_units, cu = u % t.col_units;
      const index_t p0 = ru * t.panels, p1 = min_i(p0 + t.panels, ceil_div(M, uk.mr));
      const index_t j0 = cu * t.nb, nb = min_i(t.nb, N - j0);
      if (share_a)
        gemm_unit(uk, PrepackedA<T>{ap.data(), M}, K, p0, p1, pack_b, j0, nb, cmap, bbuf.data(), false);
      else
        gemm_unit(uk, a_in_place, K, p0, p1, pack_b, j0, nb, cmap, bbuf.data(), false);
    }
  }
}

double kernel_gflops(double seconds) {
  using clock = std::chrono::steady_clock;
  const MicroKernel<float>& uk = micro_kernel<float>();
  const index_t kc = 128, calls = 256;  // A panel + B panel: 7 + 16 KiB at 14 x 32, in L1
  Buffer<float> a(uk.mr * kc), b(kc * uk.nr), c(uk.mr * uk.nr);
  std::fill(a.data(), a.data() + a.size(), 1.0f / 1024);
  std::fill(b.data(), b.data() + b.size(), 1.0f / 1024);
  fill_zero(c.data(), c.size());
  std::vector<double> rates;  // GFLOP/s of slices of `calls` micro-kernel calls (about a millisecond)
  const clock::time_point stop = clock::now() + std::chrono::duration_cast<clock::duration>(
                                                      std::chrono::duration<double>(seconds));
  do {
    const clock::time_point t0 = clock::now();
    for (index_t i = 0; i < calls; ++i) uk.fn(kc, a.data(), b.data(), c.data(), uk.nr, true, uk.mr, uk.nr);
    const double s = std::chrono::duration<double>(clock::now() - t0).count();
    rates.push_back(2.0 * calls * uk.mr * uk.nr * kc / s / 1e9);
  } while (clock::now() < stop);
  std::nth_element(rates.begin(), rates.begin() + rates.size() / 2, rates.end());
  return rates[rates.size() / 2];
}

double core_round_trip_ns(double seconds) {
  using clock = std::chrono::steady_clock;
  // A counter handed back and forth: odd, the caller's move, which the echo makes even. Either side
  // yields after a long spin, so that on a single core the other one gets to run.
  std::atomic<std::int64_t> turn{0};
  std::atomic<bool> done{false};
  const auto wait_for = [&](auto ready) {
    for (int spins = 0; !ready(); ++spins)
      if (spins > 100000) std::this_thread::yield();
  };
  std::thread echo([&] {
    for (std::int64_t t = 1;; t += 2) {
      wait_for([&] { return turn.load(std::memory_order_acquire) == t || done.load(std::memory_order_relaxed); });
      if (done.load(std::memory_order_relaxed)) return;
      turn.store(t + 1, std::memory_order_release);
    }
  });
  std::vector<double> trips;  // ns per round trip of slices of 200
  const clock::time_point stop = clock::now() + std::chrono::duration_cast<clock::duration>(
                                                      std::chrono::duration<double>(seconds));
  std::int64_t t = 0;
  do {
    const clock::time_point t0 = clock::now();
    for (int i = 0; i < 200; ++i, t += 2) {
      turn.store(t + 1, std::memory_order_release);
      wait_for([&] { return turn.load(std::memory_order_acquire) == t + 2; });
    }
    trips.push_back(std::chrono::duration<double, std::nano>(clock::now() - t0).count() / 200);
  } while (clock::now() < stop);
  done.store(true);
  echo.join();
  std::nth_element(trips.begin(), trips.begin() + trips.size() / 2, trips.end());
  return trips[trips.size() / 2];
}

namespace {

std::atomic<int>& cores_apart_forced() {
  static std::atomic<int> forced{-1};
  return forced;
}

// The median of kSlices slices of kTrips round trips between the team's first and last thread, in
// ns; a negative value when the two did not meet in time (a thread descheduled, a team of one).
double team_round_trip_ns(int nthreads) {
  constexpr int kSlices = 5, kTrips = 8;
  constexpr long kMaxSpins = 1 << 20;  // ~1 ms: give up rather than wait on a descheduled thread
  std::atomic<int> turn{0};
  std::atomic<bool> gave_up{false};
  double slices[kSlices] = {};
  bool met = false;
  const auto wait_for = [&](int t) {
    for (long spins = 0; turn.load(std::memory_order_acquire) != t; ++spins)
      if (spins > kMaxSpins || gave_up.load(std::memory_order_relaxed)) {
        gave_up.store(true);  // the other side stops too
        return false;
      }
    return true;
  };
#pragma omp parallel num_threads(nthreads)
  {
    const int me = omp_get_thread_num(), last = omp_get_num_threads() - 1;
    if (last > 0 && me == 0) {
      met = true;
      for (int s = 0; s < kSlices && met; ++s) {
        const auto t0 = std::chrono::steady_clock::now();
        for (int i = 0; i < kTrips && met; ++i) {
          const int t = 2 * (s * kTrips + i);
          turn.store(t + 1, std::memory_order_release);
          met = wait_for(t + 2);
        }
        slices[s] = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count() / kTrips;
      }
    } else if (last > 0 && me == last) {
      for (int t = 0; t < 2 * kSlices * kTrips && wait_for(t + 1); t += 2) turn.store(t + 2, std::memory_order_release);
    }
  }
  if (!met) return -1;
  std::nth_element(slices, slices + kSlices / 2, slices + kSlices);
  return slices[kSlices / 2];
}

}  // namespace

bool cores_apart(int nthreads) {
  using clock = std::chrono::steady_clock;
  const int forced = cores_apart_forced().load();
  if (nthreads < 2 || forced == 0) return false;
  if (forced == 1) return true;
  static std::atomic<bool> apart{false};
  static std::atomic<clock::rep> next{0};  // when to measure again
  static std::mutex probing;
  const clock::time_point now = clock::now();
  // a call inside a team (nested teams are not started) or beside another probe takes the last answer
  if (now.time_since_epoch().count() < next.load() || omp_in_parallel() || !probing.try_lock()) return apart.load();
  const std::lock_guard<std::mutex> hold(probing, std::adopt_lock);
  const double ns = team_round_trip_ns(nthreads);
  if (ns >= 0) apart.store(ns >= 250.0);
  next.store((now + std::chrono::milliseconds(100)).time_since_epoch().count());
  return apart.load();
}

void set_cores_apart(int forced) {
  if (forced < -1 || forced > 1)
    throw std::invalid_argument("set_cores_apart: forced must be -1 (measure), 0 or 1, got " + std::to_string(forced));
  cores_apart_forced().store(forced);
}

template void gemm<float>(index_t, index_t, index_t, const float*, index_t, index_t, const float*, index_t,
                          index_t, float*, index_t, int);
template void gemm<double>(index_t, index_t, index_t, const double*, index_t, index_t, const double*, index_t,
                           index_t, double*, index_t, int);

}  // namespace fastconv
