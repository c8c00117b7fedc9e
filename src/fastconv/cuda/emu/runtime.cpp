// The emulator's scheduler: runs a kernel's grid on the calling host thread, block after block,
// each block's threads as cooperative fibers (ucontext), and turns every way a kernel can go
// wrong on a GPU into an error message instead of a hang or silent garbage:
// - a barrier not reached by every thread of the block (a thread exited, waits at another
//   barrier, or at a warp collective), and warp collectives whose lanes disagree;
// - a deadlock of any kind (no thread can run, some have not finished);
// - launch arguments that do not match the kernel's parameter types;
// - in the sanitized build (FC_EMU_SANITIZE, built with -fsanitize=address,undefined): every
//   AddressSanitizer report and every UndefinedBehaviorSanitizer check, as this launch's error.
//   Array arguments are then staged in heap blocks of exactly their size, so a read past the end
//   of a view (a batch chunk, say) is an overflow there too.
//
// Scheduling: one fiber runs threads 0, 1, 2, ... to completion in turn; when a thread blocks
// (a barrier, a warp collective) the fiber stays with it and the scheduler starts the next
// threads on another fiber. A barrier-free block thus costs one fiber start, whatever its size.
// Released threads resume in thread order. Blocks run in x, then y, then z order. A launch may
// ask for the descending order instead (threads, released threads and blocks from the last to
// the first): a kernel that reads what another thread writes without a barrier in between gets
// the value in one order and not in the other, so running both exposes the missing barrier (on a
// GPU that is a race).
//
// One launch at a time per module (a mutex): the shared statics and this state are global.

#include <sanitizer/common_interface_defs.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <mutex>
#include <string>
#include <vector>

#include "cuda_emu.h"
#include "registry.h"

#if defined(FC_EMU_SANITIZE)
#include <sanitizer/asan_interface.h>
#define FC_ASAN 1
#else
#define FC_ASAN 0
#endif

extern "C" const fc_emu::Entry* fc_emu_table(int* count);  // the module's table (registry.h)

namespace fc_emu {

namespace {

constexpr unsigned kMaxThreads = 1024;         // per block, as on every GPU since Fermi
constexpr size_t kMaxDynamicShared = 48 << 10;  // what a launch gets without opting in
constexpr size_t kStackBytes = 256 << 10;       // per fiber; mmap commits only touched pages

enum class Status : unsigned char { unstarted, running, waiting, ready, done };

// ---- context switches ------------------------------------------------------------------------
// On x86-64 a switch saves the callee-saved registers and the FP control words on the old stack
// and moves the stack pointer: ~20 ns, against ~1.4 us for swapcontext (it makes a system call for
// the signal mask), which dominated kernels with barriers. Elsewhere ucontext does the job.
#if defined(__x86_64__)
#define FC_EMU_ASM_SWITCH 1
struct Context {
    void* sp;
};
extern "C" void fc_emu_switch(void** save_sp, void* to_sp);
asm(R"(
    .text
    .p2align 4
    .type fc_emu_switch, @function
fc_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size fc_emu_switch, .-fc_emu_switch
)");
#else
#define FC_EMU_ASM_SWITCH 0
struct Context {
    ucontext_t uc;
};
#endif

struct Fiber {
    Context ctx;
    char* stack = nullptr;  // the usable part, above a guard page
    void* fake_stack = nullptr;
};

const char* const kOpNames[] = {"__shfl_sync", "__shfl_up_sync", "__shfl_down_sync", "__shfl_xor_sync",
                                "__ballot_sync", "__any_sync", "__all_sync", "__syncwarp"};

}  // namespace

struct ThreadState {
    uint3 idx;
    unsigned linear;
    Status status;
    bool at_barrier;  // waiting at __syncthreads (else at a warp collective)
    Fiber* fiber;
    const char* file;  // where it waits
    int line;
    uint64_t result;  // its lane's result of the last warp collective
};

namespace {

struct WarpSlot {
    bool active = false;
    WarpOp op;
    unsigned mask, arrived;
    int width;
    const char* file;
    int line;
    uint64_t value[32];
    int arg[32];
};

// ---- the state of the launch in progress ------------------------------------------------------
std::mutex launch_mutex;
const Entry* kernel;
void** kernel_args;
uint3 g_block_idx, g_block_dim, g_grid_dim;
unsigned nthreads, next_unstarted, done_count;
bool descending;  // the schedule: threads, released threads and blocks from the last to the first
std::vector<ThreadState> threads;
std::deque<ThreadState*> ready;
unsigned barrier_waiting;
const char* barrier_file;
int barrier_line;
WarpSlot warps[kMaxThreads / 32];
unsigned char* shared_dynamic;  // a heap block of exactly the launch's size: ASan sees overflows
size_t shared_dynamic_bytes;
std::string error;  // the launch's first error; once set the launch stops

// ---- fibers -------------------------------------------------------------------------------------
Context scheduler_ctx;
const void* scheduler_stack_bottom;
size_t scheduler_stack_size;
std::vector<Fiber*> all_fibers, idle_fibers;
Fiber* running_fiber;  // nullptr while the scheduler runs

void fiber_main();

Fiber* new_fiber() {
    const size_t page = size_t(sysconf(_SC_PAGESIZE));
    void* mem = mmap(nullptr, kStackBytes + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                     -1, 0);
    if (mem == MAP_FAILED) return nullptr;
    mprotect(mem, page, PROT_NONE);  // a stack overflow faults instead of corrupting the next stack
    Fiber* f = new Fiber;
    f->stack = static_cast<char*>(mem) + page;
    all_fibers.push_back(f);
    return f;
}

// Switch from the running context (a fiber, or the scheduler when `from` is null) to `to` (null:
// the scheduler); fibers only ever switch to the scheduler and back. ASan must be told about every
// stack switch, or it reports false positives on the fiber stacks.
void switch_context(Fiber* from, Fiber* to, bool from_finished = false) {
    running_fiber = to;
#if FC_ASAN
    void* scheduler_fake = nullptr;
    void** save = from_finished ? nullptr : (from ? &from->fake_stack : &scheduler_fake);
    if (to)
        __sanitizer_start_switch_fiber(save, to->stack, kStackBytes);
    else
        __sanitizer_start_switch_fiber(save, scheduler_stack_bottom, scheduler_stack_size);
#else
    (void)from_finished;
#endif
    Context* from_ctx = from ? &from->ctx : &scheduler_ctx;
    Context* to_ctx = to ? &to->ctx : &scheduler_ctx;
#if FC_EMU_ASM_SWITCH
    fc_emu_switch(&from_ctx->sp, to_ctx->sp);
#else
    swapcontext(&from_ctx->uc, &to_ctx->uc);
#endif
#if FC_ASAN
    // back in `from`; a fiber is always resumed by the scheduler, whose stack bounds it learns here
    const void* old_bottom;
    size_t old_size;
    __sanitizer_finish_switch_fiber(from ? from->fake_stack : scheduler_fake, &old_bottom, &old_size);
    if (from) {
        scheduler_stack_bottom = old_bottom;
        scheduler_stack_size = old_size;
    }
#endif
}

void start_fiber(Fiber* f) {
#if FC_ASAN
    // an abandoned fiber (its block failed) leaves its frames' redzones poisoned on its stack
    __asan_unpoison_memory_region(f->stack, kStackBytes);
#endif
#if FC_EMU_ASM_SWITCH
    // the frame fc_emu_switch pops: FP control words, six registers, then a return into
    // fiber_main with the stack aligned as after a call (rsp = 8 mod 16 at its first instruction)
    auto* top = reinterpret_cast<uintptr_t*>(f->stack + kStackBytes);  // 16-byte aligned
    *--top = 0;  // fiber_main's own return address: it never returns
    *--top = reinterpret_cast<uintptr_t>(&fiber_main);
    for (int r = 0; r < 6; ++r) *--top = 0;
    *--top = 0;
    uint32_t control[2];
    asm volatile("stmxcsr %0\n\tfnstcw %1" : "=m"(control[0]), "=m"(control[1]));
    std::memcpy(top, control, 8);
    f->ctx.sp = top;
#else
    getcontext(&f->ctx.uc);
    f->ctx.uc.uc_stack.ss_sp = f->stack;
    f->ctx.uc.uc_stack.ss_size = kStackBytes;
    f->ctx.uc.uc_link = nullptr;
    makecontext(&f->ctx.uc, fiber_main, 0);
#endif
    switch_context(nullptr, f);
}

// ---- errors -------------------------------------------------------------------------------------
std::string where(const ThreadState* t) {
    char buf[160];
    std::snprintf(buf, sizeof buf, "block (%u,%u,%u) thread (%u,%u,%u)", g_block_idx.x, g_block_idx.y,
                  g_block_idx.z, t->idx.x, t->idx.y, t->idx.z);
    return buf;
}

void fail(const char* fmt, ...) {
    if (!error.empty()) return;
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    std::vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    error = std::string(kernel ? kernel->name : "?") + ": " + buf;
}

// A thread that must not go on (the launch failed): back to the scheduler, for good. Its fiber is
// abandoned mid-kernel and restarted from scratch when it is next needed.
[[noreturn]] void abandon_thread() {
    if (!running_fiber) std::abort();  // not on a fiber: a fault in the scheduler itself
    switch_context(running_fiber, nullptr, true);
    std::abort();  // never resumed
}

std::string lane_list(unsigned mask) {
    std::string s;
    for (int l = 0; l < 32; ++l)
        if (mask >> l & 1u) s += (s.empty() ? "" : ",") + std::to_string(l);
    return s;
}

// ---- the scheduler ------------------------------------------------------------------------------
ThreadState* claim_unstarted() {
    if (!error.empty() || next_unstarted == nthreads) return nullptr;
    const unsigned i = next_unstarted++;
    ThreadState* t = &threads[descending ? nthreads - 1 - i : i];
    t->status = Status::running;
    return t;
}

void thread_exit(ThreadState* t) {
    t->status = Status::done;
    ++done_count;
    if (barrier_waiting)
        fail("%s exited while %u thread(s) wait at __syncthreads (%s:%d): every thread of a block must reach "
             "each barrier",
             where(t).c_str(), barrier_waiting, barrier_file, barrier_line);
    const WarpSlot& w = warps[t->linear / 32];
    const unsigned lane = t->linear % 32;
    if (w.active && (w.mask >> lane & 1u) && !(w.arrived >> lane & 1u))
        fail("%s (lane %u) exited without reaching the %s at %s:%d that lanes %s wait at (mask 0x%08x)",
             where(t).c_str(), lane, kOpNames[int(w.op)], w.file, w.line, lane_list(w.arrived).c_str(), w.mask);
}

void fiber_main() {
    Fiber* self = running_fiber;
#if FC_ASAN
    __sanitizer_finish_switch_fiber(nullptr, &scheduler_stack_bottom, &scheduler_stack_size);
#endif
    while (ThreadState* t = claim_unstarted()) {
        t->fiber = self;
        current = t;
        kernel->invoke(kernel_args);
        thread_exit(t);
    }
    idle_fibers.push_back(self);
    switch_context(self, nullptr, true);
    std::abort();  // a finished fiber is restarted with makecontext, never resumed
}

void describe_deadlock() {
    std::string waits;
    for (unsigned i = 0; i < nthreads; ++i) {
        const ThreadState& t = threads[i];
        if (t.status != Status::waiting) continue;
        unsigned j = i;  // a run of consecutive threads waiting at the same place
        while (j + 1 < nthreads && threads[j + 1].status == Status::waiting &&
               threads[j + 1].at_barrier == t.at_barrier && threads[j + 1].line == t.line &&
               threads[j + 1].file == t.file)
            ++j;
        char buf[256];
        const WarpSlot& w = warps[t.linear / 32];
        std::snprintf(buf, sizeof buf, "%sthreads %u-%u at %s (%s:%d)", waits.empty() ? "" : "; ", i, j,
                      t.at_barrier ? "__syncthreads" : kOpNames[int(w.op)], t.file, t.line);
        waits += buf;
        i = j;
    }
    fail("deadlock in block (%u,%u,%u) of %u threads: %u finished, the others wait: %s", g_block_idx.x,
         g_block_idx.y, g_block_idx.z, nthreads, done_count, waits.c_str());
}

void run_block() {
    next_unstarted = done_count = barrier_waiting = 0;
    ready.clear();
    for (auto& w : warps) w.active = false;
    unsigned i = 0;
    for (unsigned z = 0; z < g_block_dim.z; ++z)
        for (unsigned y = 0; y < g_block_dim.y; ++y)
            for (unsigned x = 0; x < g_block_dim.x; ++x, ++i)
                threads[i] = ThreadState{{x, y, z}, i, Status::unstarted, false, nullptr, nullptr, 0, 0};
    if (shared_dynamic)  // uninitialised shared memory reads as NaN, not as zeros
        std::memset(shared_dynamic, 0xff, shared_dynamic_bytes);
    while (error.empty()) {
        if (!ready.empty()) {
            ThreadState* t = ready.front();
            ready.pop_front();
            t->status = Status::running;
            current = t;
            switch_context(nullptr, t->fiber);
        } else if (next_unstarted < nthreads) {
            Fiber* f;
            if (!idle_fibers.empty()) {
                f = idle_fibers.back();
                idle_fibers.pop_back();
            } else if (!(f = new_fiber())) {
                fail("cannot allocate a fiber stack for %u threads", nthreads);
                break;
            }
            start_fiber(f);
        } else if (done_count == nthreads) {
            break;
        } else {
            describe_deadlock();
        }
    }
}

// Block the running thread until the scheduler resumes it; if the launch failed meanwhile it
// never returns.
void wait_here(ThreadState* t, bool at_barrier, const char* file, int line) {
    t->status = Status::waiting;
    t->at_barrier = at_barrier;
    t->file = file;
    t->line = line;
    switch_context(t->fiber, nullptr);
    if (!error.empty()) abandon_thread();
    current = t;
}

void release(ThreadState* t) {
    t->status = Status::ready;
    ready.push_back(t);
}

}  // namespace

// ---- what the kernels call (cuda_emu.h) ----------------------------------------------------------
ThreadState* current;

const uint3& thread_idx() { return current->idx; }
const uint3& block_idx() { return g_block_idx; }
const uint3& block_dim() { return g_block_dim; }
const uint3& grid_dim() { return g_grid_dim; }
void* dynamic_shared() { return shared_dynamic; }

void trap(const char* what, const char* file, int line) {
    fail("%s at %s:%d, %s", what, file, line, where(current).c_str());
    abandon_thread();
}

void syncthreads(const char* file, int line) {
    ThreadState* t = current;
    if (!error.empty()) abandon_thread();
    if (done_count)
        fail("%s reached __syncthreads (%s:%d) after %u thread(s) of its block exited: every thread of a block "
             "must reach each barrier",
             where(t).c_str(), file, line, done_count);
    else if (barrier_waiting && (line != barrier_line || std::strcmp(file, barrier_file) != 0))
        fail("%s reached __syncthreads at %s:%d while %u thread(s) wait at the one at %s:%d", where(t).c_str(), file,
             line, barrier_waiting, barrier_file, barrier_line);
    if (!error.empty()) abandon_thread();
    if (barrier_waiting == 0) {
        barrier_file = file;
        barrier_line = line;
    }
    if (++barrier_waiting == nthreads) {  // the last one in releases the others, in schedule order
        barrier_waiting = 0;
        for (unsigned i = 0; i < nthreads; ++i) {
            ThreadState* other = &threads[descending ? nthreads - 1 - i : i];
            if (other != t) release(other);
        }
        return;
    }
    wait_here(t, true, file, line);
}

uint64_t warp_collective(WarpOp op, unsigned mask, uint64_t value, int arg, int width, const char* file, int line) {
    ThreadState* t = current;
    if (!error.empty()) abandon_thread();
    const unsigned warp = t->linear / 32, lane = t->linear % 32;
    const unsigned lanes_here = nthreads - warp * 32 < 32 ? nthreads - warp * 32 : 32;
    WarpSlot& w = warps[warp];
    const char* name = kOpNames[int(op)];
    if (!(mask >> lane & 1u))
        fail("%s at %s:%d: mask 0x%08x does not name the calling lane %u (%s)", name, file, line, mask, lane,
             where(t).c_str());
    else if (lanes_here < 32 && (mask >> lanes_here))
        fail("%s at %s:%d: mask 0x%08x names lanes beyond the %u threads of warp %u (%s)", name, file, line, mask,
             lanes_here, warp, where(t).c_str());
    else if (width < 1 || width > 32 || (width & (width - 1)))
        fail("%s at %s:%d: width %d is not a power of two in [1, 32]", name, file, line, width);
    else if (w.active && (w.op != op || w.mask != mask || w.width != width || w.line != line ||
                          std::strcmp(w.file, file) != 0))
        fail("lanes of warp %u disagree: lanes %s are at %s (%s:%d, mask 0x%08x), lane %u calls %s (%s:%d, mask "
             "0x%08x)",
             warp, lane_list(w.arrived).c_str(), kOpNames[int(w.op)], w.file, w.line, w.mask, lane, name, file, line,
             mask);
    if (error.empty())
        for (unsigned l = 0; l < 32; ++l)
            if ((mask >> l & 1u) && threads[warp * 32 + l].status == Status::done)
                fail("%s at %s:%d (mask 0x%08x) waits for lane %u, which has exited (%s)", name, file, line, mask, l,
                     where(t).c_str());
    if (!error.empty()) abandon_thread();
    if (!w.active) {
        w.active = true;
        w.op = op;
        w.mask = mask;
        w.arrived = 0;
        w.width = width;
        w.file = file;
        w.line = line;
    }
    w.value[lane] = value;
    w.arg[lane] = arg;
    w.arrived |= 1u << lane;
    if (w.arrived != mask) {
        wait_here(t, false, file, line);
        return t->result;
    }
    // the last lane in computes every lane's result, then releases the others in schedule order
    w.active = false;
    uint64_t vote = 0;
    for (unsigned l = 0; l < 32; ++l)
        if (mask >> l & 1u) vote |= uint64_t(w.value[l] != 0) << l;
    for (unsigned l = 0; l < 32; ++l) {
        if (!(mask >> l & 1u)) continue;
        ThreadState& lt = threads[warp * 32 + l];
        const int seg = int(l) & ~(width - 1), a = w.arg[l];
        int src = int(l);
        switch (op) {
            case WarpOp::shfl_idx: src = seg + (((a % width) + width) % width); break;
            case WarpOp::shfl_up: src = int(l) - a >= seg ? int(l) - a : int(l); break;
            case WarpOp::shfl_down: src = int(l) + a < seg + width ? int(l) + a : int(l); break;
            case WarpOp::shfl_xor: src = (int(l) ^ a) < seg + width && (int(l) ^ a) >= seg ? int(l) ^ a : int(l); break;
            default: break;
        }
        switch (op) {
            case WarpOp::ballot: lt.result = vote; break;
            case WarpOp::any: lt.result = vote != 0; break;
            case WarpOp::all: lt.result = vote == mask; break;
            case WarpOp::syncwarp: lt.result = 0; break;
            default:
                if (!(mask >> src & 1u)) {
                    fail("%s at %s:%d: lane %u reads lane %d, which is not in the mask 0x%08x (its value is "
                         "undefined on a GPU)",
                         name, file, line, l, src, mask);
                    abandon_thread();
                }
                lt.result = w.value[src];
        }
    }
    for (unsigned i = 0; i < 32; ++i) {
        const unsigned l = descending ? 31 - i : i;
        ThreadState* lt = &threads[warp * 32 + l];
        if ((mask >> l & 1u) && lt != t) release(lt);
    }
    return t->result;
}

namespace {

// ---- launch arguments ---------------------------------------------------------------------------
struct Staged {
    void* host;  // the caller's buffer
    void* copy;  // an exactly sized heap block (sanitized build), else null
    size_t bytes;
    bool written;
};

bool check_args(int nargs, const char* const* codes) {
    if (nargs != kernel->nparams) {
        fail("launched with %d arguments, the kernel takes %d", nargs, kernel->nparams);
        return false;
    }
    for (int i = 0; i < nargs; ++i) {
        const char* want = kernel->params[i];
        const char* got = codes[i];
        const bool param_ptr = want[0] == '&' || want[0] == '*', arg_ptr = got[0] == '&' || got[0] == '*';
        if (param_ptr && std::strcmp(got, "p0") == 0) continue;  // a null pointer fits any pointer
        if (param_ptr != arg_ptr || std::strcmp(want + param_ptr, got + arg_ptr) != 0) {
            fail("argument %d is %s, the kernel's parameter is %s (f4 a float, &f4 a const float*, *f4 a float*, "
                 "p0 a null pointer)",
                 i, got, want);
            return false;
        }
        if (want[0] == '*' && got[0] == '&') {
            fail("argument %d is a read-only array, but the kernel writes through parameter %d (%s)", i, i, want);
            return false;
        }
    }
    return true;
}

}  // namespace

}  // namespace fc_emu

// ---- the C interface (ctypes, from fastconv/backends/cupy/_emu.py) -------------------------------
extern "C" {

int fc_emu_kernel_count() {
    int n;
    fc_emu_table(&n);
    return n;
}

const char* fc_emu_kernel_name(int i) {
    int n;
    return fc_emu_table(&n)[i].name;
}

// "f4,&f8,*f4": the parameter codes of kernel i, for the Python side's own checks and messages
int fc_emu_kernel_params(int i, char* out, int size) {
    int n;
    const fc_emu::Entry& e = fc_emu_table(&n)[i];
    std::string s;
    for (int p = 0; p < e.nparams; ++p) s += (p ? "," : "") + std::string(e.params[p]);
    std::snprintf(out, size_t(size), "%s", s.c_str());
    return int(s.size());
}

int fc_emu_sanitized() { return FC_ASAN; }

// Run kernel `index` over grid x block. args[i] points at argument i's value (for an array: at
// its data pointer); codes[i] spells its type; bytes[i] is an array's size in bytes (0 for
// scalars); order 0 schedules threads and blocks first to last, 1 last to first. Returns 0, or -1
// with the error message in `message`.
int fc_emu_launch(int index, const unsigned* grid, const unsigned* block, size_t shared_bytes, int nargs,
                  void** args, const char* const* codes, const size_t* bytes, int order, char* message,
                  int message_size) {
    using namespace fc_emu;
    std::lock_guard<std::mutex> lock(launch_mutex);
    int n;
    kernel = &fc_emu_table(&n)[index];
    error.clear();
    const unsigned threads_per_block = block[0] * block[1] * block[2];
    if (!check_args(nargs, codes)) {
    } else if (!grid[0] || !grid[1] || !grid[2] || grid[1] > 65535 || grid[2] > 65535 || grid[0] > 0x7fffffffu) {
        fail("grid (%u,%u,%u) is out of range (each >= 1; y and z <= 65535)", grid[0], grid[1], grid[2]);
    } else if (!threads_per_block || threads_per_block > kMaxThreads || block[2] > 64) {
        fail("block (%u,%u,%u) has %u threads; a block has 1 to %u (and z <= 64)", block[0], block[1], block[2],
             threads_per_block, kMaxThreads);
    } else if (shared_bytes > kMaxDynamicShared) {
        fail("%zu bytes of dynamic shared memory; a launch gets %zu without cudaFuncSetAttribute", shared_bytes,
             kMaxDynamicShared);
    }
    std::vector<Staged> staged;
    std::vector<void*> values(static_cast<size_t>(nargs));
    if (error.empty()) {
        for (int i = 0; i < nargs; ++i) {
            values[size_t(i)] = args[i];
            if (codes[i][0] != '&' && codes[i][0] != '*') continue;  // a scalar, or a null pointer
            void* host = *static_cast<void**>(args[i]);
            Staged s{host, nullptr, bytes[i], codes[i][0] == '*'};
#if FC_ASAN
            if (host) {  // an exactly sized copy: reading past the view is reported as an overflow
                s.copy = std::malloc(s.bytes ? s.bytes : 1);
                std::memcpy(s.copy, host, s.bytes);
            }
#endif
            staged.push_back(s);
        }
        // the staged pointers must outlive the launch: point the argument slots at them
        size_t k = 0;
        for (int i = 0; i < nargs; ++i)
            if (codes[i][0] == '&' || codes[i][0] == '*') {
                if (staged[k].copy) values[size_t(i)] = &staged[k].copy;
                ++k;
            }
        kernel_args = values.data();
        g_grid_dim = {grid[0], grid[1], grid[2]};
        g_block_dim = {block[0], block[1], block[2]};
        nthreads = threads_per_block;
        threads.resize(nthreads);
        shared_dynamic_bytes = shared_bytes;
        shared_dynamic = shared_bytes ? static_cast<unsigned char*>(std::malloc(shared_bytes)) : nullptr;
        descending = order != 0;
        const unsigned long long blocks = 1ull * grid[0] * grid[1] * grid[2];
        for (unsigned long long b = 0; b < blocks && error.empty(); ++b) {
            const unsigned long long k = descending ? blocks - 1 - b : b;  // x fastest, then y, then z
            g_block_idx = {unsigned(k % grid[0]), unsigned(k / grid[0] % grid[1]), unsigned(k / grid[0] / grid[1])};
            run_block();
        }
        for (const Staged& s : staged)
            if (s.copy) {
                if (s.written) std::memcpy(s.host, s.copy, s.bytes);
                std::free(s.copy);
            }
        std::free(shared_dynamic);
        shared_dynamic = nullptr;
        idle_fibers = all_fibers;  // after a failed block some were abandoned mid-kernel: restart them
    }
    const int status = error.empty() ? 0 : -1;
    std::snprintf(message, size_t(message_size), "%s", error.c_str());
    kernel = nullptr;
    return status;
}

}  // extern "C"

// ---- sanitizers: reports become the launch's error ----------------------------------------------
#if FC_ASAN
namespace {
void asan_report(const char* report) {
    // keep the report's headline and the first frames: enough to find the kernel's line
    std::string text(report), brief;
    size_t pos = 0;
    for (int lines = 0; lines < 12 && pos < text.size(); ++lines) {
        size_t end = text.find('\n', pos);
        if (end == std::string::npos) end = text.size();
        brief += text.substr(pos, end - pos) + "\n";
        pos = end + 1;
    }
    fc_emu::fail("AddressSanitizer:\n%s", brief.c_str());
}
struct InstallAsanCallback {
    InstallAsanCallback() { __asan_set_error_report_callback(asan_report); }
} install_asan_callback;
}  // namespace

// UndefinedBehaviorSanitizer's checks call these handlers (the module is linked without libubsan,
// so its own definitions here are the ones it uses). Every handler's first argument points at a
// record that starts with the source location; the location is all the message needs.
namespace {
struct SourceLocation {
    const char* file;
    unsigned line, column;
};
void ubsan_report(const char* what, const void* data) {
    const SourceLocation* loc = static_cast<const SourceLocation*>(data);
    if (fc_emu::current && fc_emu::kernel)
        fc_emu::fail("UndefinedBehaviorSanitizer: %s at %s:%u:%u, %s", what, loc->file, loc->line, loc->column,
                     fc_emu::where(fc_emu::current).c_str());
    else
        fc_emu::fail("UndefinedBehaviorSanitizer: %s at %s:%u:%u", what, loc->file, loc->line, loc->column);
}
}  // namespace

#define FC_UBSAN_HANDLER(name, what)                                                                      \
    extern "C" __attribute__((visibility("hidden"))) void __ubsan_handle_##name(void* data, ...) {       \
        ubsan_report(what, data);                                                                         \
    }                                                                                                     \
    extern "C" __attribute__((visibility("hidden"))) void __ubsan_handle_##name##_abort(void* data, ...) { \
        ubsan_report(what, data);                                                                         \
        fc_emu::abandon_thread();                                                                         \
    }
FC_UBSAN_HANDLER(add_overflow, "signed integer overflow (+)")
FC_UBSAN_HANDLER(sub_overflow, "signed integer overflow (-)")
FC_UBSAN_HANDLER(mul_overflow, "signed integer overflow (*)")
FC_UBSAN_HANDLER(negate_overflow, "signed integer overflow (negation)")
FC_UBSAN_HANDLER(divrem_overflow, "division by zero or overflow")
FC_UBSAN_HANDLER(shift_out_of_bounds, "shift out of bounds")
FC_UBSAN_HANDLER(out_of_bounds, "array index out of bounds")
FC_UBSAN_HANDLER(type_mismatch_v1, "misaligned or null pointer use")
FC_UBSAN_HANDLER(load_invalid_value, "load of an invalid value (bool or enum)")
FC_UBSAN_HANDLER(pointer_overflow, "pointer arithmetic overflow")
FC_UBSAN_HANDLER(vla_bound_not_positive, "variable-length array bound not positive")
FC_UBSAN_HANDLER(float_cast_overflow, "float to integer conversion overflow")
FC_UBSAN_HANDLER(nonnull_arg, "null passed as a nonnull argument")
FC_UBSAN_HANDLER(nonnull_return_v1, "null returned from a nonnull function")
FC_UBSAN_HANDLER(invalid_builtin, "invalid builtin argument")
extern "C" __attribute__((visibility("hidden"))) void __ubsan_handle_builtin_unreachable(void* data) {
    ubsan_report("__builtin_unreachable reached", data);
    fc_emu::abandon_thread();
}
extern "C" __attribute__((visibility("hidden"))) void __ubsan_handle_missing_return(void* data) {
    ubsan_report("end of a value-returning function reached without a return", data);
    fc_emu::abandon_thread();
}
#endif
