// Kernel workspace (Buffer, common.h): the bookkeeping the tests read, and a cache of large blocks
// kept from one call to the next.
//
// Why a cache: glibc returns large blocks to the system (munmap, or a trimmed heap top) and moves
// its mmap threshold as blocks come and go, so a call whose workspace was handed back re-faults
// every page of it, zeroed by the kernel, on each call. Measured (2-core AMD EPYC Zen 5, 2
// threads): ResNet-18-CIFAR's Winograd backward-weight layers run one after another in one process
// took 5.0 / 6.4 / 12.6-16.8 ms (128, 256, 512 channels) against 3.7 / 3.4 / 3.9 with the blocks kept.
// PyTorch's oneDNN keeps its scratchpads the same way.
#include <atomic>
#include <cstdlib>
#include <map>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>
#include <thread>

#include "common.h"

namespace fastconv {

namespace {

std::atomic<index_t> workspace_live{0}, workspace_peak{0};

#if defined(__SANITIZE_ADDRESS__)
constexpr index_t kDefaultCacheBytes = 0;  // AddressSanitizer sees a use after free only of freed blocks
#else
constexpr index_t kDefaultCacheBytes = index_t(128) << 20;
#endif

struct Kept {
  void* p;
  std::thread::id user;  // the thread that freed it: its lines are in that core's caches
};

// The free blocks by size; `held` bytes in all, at most `cap` (the smallest blocks leave first).
struct Cache {
  std::mutex mu;
  std::multimap<std::size_t, Kept> blocks;
  std::size_t held = 0, cap = static_cast<std::size_t>(kDefaultCacheBytes);
  void shrink_to(std::size_t bytes) {  // under mu
    while (held > bytes) {
      const auto it = blocks.begin();
      held -= it->first;
      std::free(it->second.p);
      blocks.erase(it);
    }
  }
};

Cache& cache() {
  static Cache* c = new Cache;  // never destroyed: a Buffer may outlive static destruction
  return *c;
}

}  // namespace

void workspace_note(index_t delta_bytes) {
  const index_t now = workspace_live.fetch_add(delta_bytes) + delta_bytes;
  index_t peak = workspace_peak.load();
  while (now > peak && !workspace_peak.compare_exchange_weak(peak, now)) {
  }
}
index_t workspace_peak_bytes() { return workspace_peak.load(); }
void workspace_reset_peak() { workspace_peak.store(workspace_live.load()); }

void* workspace_alloc(std::size_t bytes, std::size_t& capacity) {
  if (bytes >= kKeptBlockBytes) {
    Cache& c = cache();
    std::lock_guard<std::mutex> lock(c.mu);
    // The smallest kept block that holds `bytes`, if it is at most twice that (a small call does not
    // take a large call's block), and among those one this thread freed if any: the threads of a
    // team free and take blocks of one size (a packed B block, a Winograd block's V) in any order,
    // and a block that changed threads had its lines fetched from the other core's caches when
    // written (with the cores on different dies, ResNet-50's 64-channel 56x56 Winograd forward at
    // batch 1 took 1.07x the time, its 128-channel stride-2 forward 1.06x; on one die the same).
    auto it = c.blocks.lower_bound(bytes);
    for (auto own = it; own != c.blocks.end() && own->first <= 2 * bytes; ++own)
      if (own->second.user == std::this_thread::get_id()) {
        it = own;
        break;
      }
    if (it != c.blocks.end() && it->first <= 2 * bytes) {
      void* p = it->second.p;
      capacity = it->first;
      c.held -= it->first;
      c.blocks.erase(it);
      return p;
    }
  }
  void* p = std::aligned_alloc(64, bytes);
  if (!p) throw std::bad_alloc();
  capacity = bytes;
  return p;
}

void workspace_free(void* p, std::size_t capacity) {
  if (!p) return;
  if (capacity >= kKeptBlockBytes) {
    Cache& c = cache();
    std::lock_guard<std::mutex> lock(c.mu);
    if (capacity <= c.cap) {
      c.blocks.emplace(capacity, Kept{p, std::this_thread::get_id()});
      c.held += capacity;
      c.shrink_to(c.cap);
      return;
    }
  }
  std::free(p);
}

void set_workspace_cache_bytes(index_t bytes) {
  if (bytes < 0)
    throw std::invalid_argument("set_workspace_cache_bytes: bytes must be >= 0 (0 keeps no block), got " +
                                std::to_string(bytes));
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  c.cap = static_cast<std::size_t>(bytes);
  c.shrink_to(c.cap);
}

index_t workspace_cache_bytes() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  return static_cast<index_t>(c.cap);
}

index_t workspace_cached_bytes() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  return static_cast<index_t>(c.held);
}

}  // namespace fastconv
