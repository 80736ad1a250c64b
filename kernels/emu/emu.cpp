// The emulator's runtime: fibers, the block scheduler, barriers and warp
// collectives, shared memory. See cuda_emu.h for what it promises.
//
// One call to launch() runs a range of blocks of a grid on the calling OS
// thread, one block after the other. Each block's threads are fibers with
// their own stacks; the scheduler (on the OS thread's own stack) resumes them
// in the block's thread order, each until it waits (barrier, warp collective)
// or ends, then releases whichever group of waiters is complete and goes
// round again. Nothing here is shared between OS threads except the kernel's
// global memory, so the Rust side can run block ranges in parallel.
#include "cuda_emu.h"

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <vector>

#include <sys/mman.h>
#include <unistd.h>

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

namespace quorum_emu {

namespace {

// A small stack is enough: kernels keep a few dozen floats of locals and call
// only the C math library.
constexpr size_t kStackBytes = 64 * 1024;

enum class State { Ready, AtBarrier, AtWarp, Done, Failed };

} // namespace

struct Fiber {
    dim3 tid;
    unsigned linear = 0; // x fastest, as CUDA numbers threads into warps
    State state = State::Ready;
    const char *site_file = nullptr;
    int site_line = 0;
    unsigned warp_mask = 0;
    unsigned long long value = 0; // what this lane offers to a warp exchange
    int src = 0;                  // which lane's value it wants back (-2 ballot, -3 gather)
    const void *gather_mine = nullptr;
    void *gather_all = nullptr;
    size_t gather_bytes = 0;
    size_t shared_cursor = 0;
    char *stack = nullptr;
#if defined(__x86_64__)
    void *sp = nullptr;
#else
    ucontext_t ctx;
#endif
};

namespace {

struct SharedSite {
    const void *site;
    size_t offset;
};

// Everything about the block now running on this OS thread.
struct Runner {
    std::vector<Fiber> fibers;
    std::vector<char *> stacks; // kept across launches on this OS thread
    std::vector<unsigned char> shared; // static __shared__ regions, by site
    std::vector<SharedSite> sites;
    size_t shared_used = 0;
    std::vector<unsigned char> dynamic_shared;
    dim3 block_idx{}, block_dim{}, grid_dim{};
    KernelBody body = nullptr;
    const void *params = nullptr;
    Fiber *cur = nullptr;
    char error[512] = {0};
    bool failed = false;
#if defined(__x86_64__)
    void *sched_sp = nullptr;
#else
    ucontext_t sched_ctx;
#endif
};

thread_local Runner *g_runner = nullptr;

// A fiber stack with a no-access guard page below it: a kernel whose locals
// overflow the stack faults at once instead of corrupting a neighbour's.
// Returns the usable region (kStackBytes) above the guard, or null.
char *alloc_stack() {
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    void *m = mmap(nullptr, kStackBytes + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return nullptr;
    if (mprotect(m, page, PROT_NONE) != 0) {
        munmap(m, kStackBytes + page);
        return nullptr;
    }
    return static_cast<char *>(m) + page;
}

// NaN in every float slot: an unwritten read shows up in the results.
void poison(unsigned char *p, size_t n) {
    const unsigned nan_bits = 0x7fc00000u;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) std::memcpy(p + i, &nan_bits, 4);
    for (; i < n; i++) p[i] = 0xff;
}

void set_error(Runner *r, const char *fmt, ...) {
    if (r->failed) return; // keep the first error
    r->failed = true;
    va_list ap;
    va_start(ap, fmt);
    std::vsnprintf(r->error, sizeof r->error, fmt, ap);
    va_end(ap);
}

} // namespace

#if defined(__x86_64__)
// A minimal context switch: save the callee-saved registers on the old stack,
// swap stack pointers, restore. (swapcontext also saves the signal mask with a
// system call per switch, which would dominate the emulator's run time.)
extern "C" void quorum_emu_switch(void **save_sp, void *new_sp);
asm(R"(
.text
.globl quorum_emu_switch
.type quorum_emu_switch,@function
quorum_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
.size quorum_emu_switch,.-quorum_emu_switch
)");
#endif

namespace {

void to_scheduler(Fiber *f) {
    Runner *r = g_runner;
#if defined(__x86_64__)
    quorum_emu_switch(&f->sp, r->sched_sp);
#else
    swapcontext(&f->ctx, &r->sched_ctx);
#endif
}

void to_fiber(Runner *r, Fiber *f) {
    r->cur = f;
#if defined(__x86_64__)
    quorum_emu_switch(&r->sched_sp, f->sp);
#else
    swapcontext(&r->sched_ctx, &f->ctx);
#endif
    r->cur = nullptr;
}

// Every fiber starts here (entered by the switch's `ret`, aligned like a call).
void fiber_main() {
    Runner *r = g_runner;
    Fiber *f = r->cur;
    r->body(r->params);
    f->state = State::Done;
    to_scheduler(f);
    std::abort(); // a finished fiber is never resumed
}

void start_fiber(Runner *r, Fiber *f) {
#if defined(__x86_64__)
    uintptr_t top = reinterpret_cast<uintptr_t>(f->stack + kStackBytes) & ~uintptr_t(15);
    void **sp = reinterpret_cast<void **>(top);
    *--sp = nullptr;                                    // fake return address of fiber_main
    *--sp = reinterpret_cast<void *>(&fiber_main);      // where the switch's ret goes
    for (int i = 0; i < 6; i++) *--sp = nullptr;        // rbp rbx r12 r13 r14 r15
    f->sp = sp;
#else
    getcontext(&f->ctx);
    f->ctx.uc_stack.ss_sp = f->stack;
    f->ctx.uc_stack.ss_size = kStackBytes;
    f->ctx.uc_link = nullptr;
    makecontext(&f->ctx, &fiber_main, 0);
#endif
    (void)r;
}

// Waits (as the current fiber) until the scheduler releases this fiber's group.
void wait_here(Fiber *f) {
    to_scheduler(f);
    if (f->state == State::Failed) {
        // The block was abandoned; the scheduler never resumes a failed
        // fiber, so this is unreachable.
        std::abort();
    }
}

const char *state_name(State s) {
    switch (s) {
    case State::Ready: return "running";
    case State::AtBarrier: return "__syncthreads";
    case State::AtWarp: return "a warp collective";
    case State::Done: return "exit";
    default: return "failed";
    }
}

// Releases every complete group of waiters; returns whether any was released,
// and sets an error when the block can make no progress.
bool release(Runner *r) {
    auto &fs = r->fibers;
    const unsigned n = (unsigned)fs.size();
    bool released = false;
    // Warp collectives first: a warp may sync many times between two block barriers.
    for (unsigned w = 0; w * 32 < n; w++) {
        unsigned base = w * 32, lanes = std::min(32u, n - base);
        int first = -1;
        for (unsigned l = 0; l < lanes; l++)
            if (fs[base + l].state == State::AtWarp) {
                first = (int)l;
                break;
            }
        if (first < 0) continue;
        Fiber &a = fs[base + first];
        unsigned mask = a.warp_mask;
        bool complete = true;
        for (unsigned l = 0; l < 32; l++) {
            if (!(mask >> l & 1)) continue;
            if (l >= lanes) {
                set_error(r, "warp collective at %s:%d names lane %u of warp %u, which does not exist (block of %u threads)",
                          a.site_file, a.site_line, l, w, n);
                return false;
            }
            Fiber &b = fs[base + l];
            if (b.state == State::Ready) {
                complete = false; // still running towards it
                continue;
            }
            if (b.state != State::AtWarp || b.warp_mask != mask || b.site_line != a.site_line ||
                std::strcmp(b.site_file, a.site_file) != 0) {
                set_error(r,
                          "divergent warp collective in block (%u,%u,%u): thread %u waits at %s:%d (mask %08x) "
                          "while thread %u is at %s (%s:%d)",
                          r->block_idx.x, r->block_idx.y, r->block_idx.z, a.linear, a.site_file, a.site_line, mask,
                          b.linear, state_name(b.state), b.site_file ? b.site_file : "-", b.site_line);
                return false;
            }
        }
        if (!complete) continue;
        // Every lane of the mask is here: hand out the exchanged values.
        unsigned long long vals[32];
        unsigned ballot = 0;
        for (unsigned l = 0; l < 32; l++)
            if (mask >> l & 1) {
                vals[l] = fs[base + l].value;
                ballot |= (fs[base + l].value != 0 ? 1u : 0u) << l;
            }
        for (unsigned l = 0; l < 32; l++) {
            if (!(mask >> l & 1)) continue;
            Fiber &b = fs[base + l];
            int s = b.src;
            if (s == -3) {
                for (unsigned m = 0; m < 32; m++) {
                    if (!(mask >> m & 1)) continue;
                    const Fiber &o = fs[base + m];
                    if (o.src != -3 || o.gather_bytes != b.gather_bytes) {
                        set_error(r, "warp gather at %s:%d: lanes disagree on the operation", b.site_file, b.site_line);
                        return false;
                    }
                    std::memcpy(static_cast<char *>(b.gather_all) + m * b.gather_bytes, o.gather_mine, b.gather_bytes);
                }
            } else if (s == -2) {
                b.value = ballot;
            } else if (s >= 0) {
                if (s >= 32 || !(mask >> s & 1)) {
                    set_error(r, "shuffle at %s:%d reads lane %d, which is not in the mask %08x", b.site_file,
                              b.site_line, s, mask);
                    return false;
                }
                b.value = vals[s];
            }
            b.state = State::Ready;
        }
        released = true;
    }
    if (released) return true;
    // Then the block barrier: every live thread at the same __syncthreads.
    int first = -1;
    unsigned live = 0;
    for (unsigned i = 0; i < n; i++)
        if (fs[i].state != State::Done) {
            live++;
            if (first < 0) first = (int)i;
        }
    if (live == 0) return false;
    Fiber &a = fs[first];
    for (unsigned i = 0; i < n; i++) {
        Fiber &b = fs[i];
        bool same = b.state == State::AtBarrier && a.state == State::AtBarrier && b.site_line == a.site_line &&
                    std::strcmp(b.site_file, a.site_file) == 0;
        if (!same) {
            set_error(r,
                      "divergent barrier in block (%u,%u,%u): thread %u is at %s (%s:%d) while thread %u is at %s "
                      "(%s:%d)",
                      r->block_idx.x, r->block_idx.y, r->block_idx.z, a.linear, state_name(a.state),
                      a.site_file ? a.site_file : "-", a.site_line, b.linear, state_name(b.state),
                      b.site_file ? b.site_file : "-", b.site_line);
            return false;
        }
    }
    for (auto &f : fs) f.state = State::Ready;
    return true;
}

void run_block(Runner *r, bool reverse) {
    const unsigned n = (unsigned)r->fibers.size();
    r->sites.clear();
    r->shared_used = 0;
    poison(r->dynamic_shared.data(), r->dynamic_shared.size());
    for (unsigned i = 0; i < n; i++) {
        Fiber &f = r->fibers[i];
        f.linear = i;
        f.tid = dim3{i % r->block_dim.x, (i / r->block_dim.x) % r->block_dim.y, i / (r->block_dim.x * r->block_dim.y)};
        f.state = State::Ready;
        f.site_file = nullptr;
        f.site_line = 0;
        f.stack = r->stacks[i];
        start_fiber(r, &f);
    }
    for (;;) {
        for (unsigned k = 0; k < n && !r->failed; k++) {
            Fiber &f = r->fibers[reverse ? n - 1 - k : k];
            if (f.state == State::Ready) to_fiber(r, &f);
        }
        if (r->failed) return;
        bool any_live = false;
        for (auto &f : r->fibers) any_live |= f.state != State::Done;
        if (!any_live) return;
        if (!release(r)) {
            if (!r->failed) set_error(r, "block (%u,%u,%u) cannot make progress", r->block_idx.x, r->block_idx.y,
                                      r->block_idx.z);
            return;
        }
    }
}

} // namespace

Fiber *current() { return g_runner->cur; }
const dim3 &thread_idx() { return g_runner->cur->tid; }
const dim3 &block_idx() { return g_runner->block_idx; }
const dim3 &block_dim() { return g_runner->block_dim; }
const dim3 &grid_dim() { return g_runner->grid_dim; }
int lane_id() { return (int)(g_runner->cur->linear & 31); }

[[noreturn]] void fail(const char *file, int line, const char *what) {
    Runner *r = g_runner;
    set_error(r, "%s:%d: %s", file, line, what);
    Fiber *f = r->cur;
    f->state = State::Failed;
    to_scheduler(f);
    std::abort();
}

void sync_block(const char *file, int line) {
    Fiber *f = g_runner->cur;
    f->state = State::AtBarrier;
    f->site_file = file;
    f->site_line = line;
    wait_here(f);
}

unsigned long long warp_exchange(unsigned mask, unsigned long long v, int src, const char *file, int line) {
    Fiber *f = g_runner->cur;
    if (!(mask >> (f->linear & 31) & 1)) fail(file, line, "warp collective called by a lane outside its mask");
    f->state = State::AtWarp;
    f->warp_mask = mask;
    f->value = v;
    f->src = src;
    f->site_file = file;
    f->site_line = line;
    wait_here(f);
    return f->value;
}

unsigned warp_ballot(unsigned mask, int pred, const char *file, int line) {
    Fiber *f = g_runner->cur;
    if (!(mask >> (f->linear & 31) & 1)) fail(file, line, "warp vote called by a lane outside its mask");
    f->state = State::AtWarp;
    f->warp_mask = mask;
    f->value = pred ? 1 : 0;
    f->src = -2;
    f->site_file = file;
    f->site_line = line;
    wait_here(f);
    return (unsigned)f->value;
}

void warp_gather(unsigned mask, const void *mine, size_t bytes, void *all, const char *file, int line) {
    Fiber *f = g_runner->cur;
    if (!(mask >> (f->linear & 31) & 1)) fail(file, line, "warp gather called by a lane outside its mask");
    f->state = State::AtWarp;
    f->warp_mask = mask;
    f->value = 0;
    f->src = -3;
    f->gather_mine = mine;
    f->gather_all = all;
    f->gather_bytes = bytes;
    f->site_file = file;
    f->site_line = line;
    // The copies happen when the whole mask has arrived, before anyone resumes:
    // `mine` lives on each lane's (suspended) stack until then.
    wait_here(f);
}

void warp_sync(unsigned mask, const char *file, int line) {
    Fiber *f = g_runner->cur;
    if (!(mask >> (f->linear & 31) & 1)) fail(file, line, "__syncwarp called by a lane outside its mask");
    f->state = State::AtWarp;
    f->warp_mask = mask;
    f->value = 0;
    f->src = -1;
    f->site_file = file;
    f->site_line = line;
    wait_here(f);
}

void *shared_static(const void *site, size_t bytes, size_t align) {
    Runner *r = g_runner;
    for (auto &s : r->sites)
        if (s.site == site) return r->shared.data() + s.offset;
    // First thread of the block to reach this declaration places it.
    size_t off = (r->shared_used + align - 1) / align * align;
    if (off + bytes > r->shared.size()) {
        // Grow only between blocks would be cleaner, but addresses handed out
        // earlier in this block must stay valid: the arena is sized up front
        // (kMaxStaticShared) and overflowing it is an error.
        fail(__FILE__, __LINE__, "static shared memory exceeds the emulator's 228 KiB");
    }
    r->shared_used = off + bytes;
    r->sites.push_back({site, off});
    poison(r->shared.data() + off, bytes); // fresh for every block
    return r->shared.data() + off;
}

void *shared_dynamic() { return g_runner->dynamic_shared.data(); }

int launch(const QuorumEmuLaunch *l, KernelBody body, const void *params) {
    thread_local Runner runner;
    Runner *r = &runner;
    g_runner = r;
    r->failed = false;
    r->error[0] = 0;
    r->body = body;
    r->params = params;
    r->grid_dim = dim3{l->grid[0], l->grid[1], l->grid[2]};
    r->block_dim = dim3{l->block[0], l->block[1], l->block[2]};
    const unsigned n = l->block[0] * l->block[1] * l->block[2];
    auto report = [&](const char *msg) {
        if (l->err && l->err_len) std::snprintf(l->err, l->err_len, "%s", msg);
        return 1;
    };
    if (n == 0 || n > 1024) return report("block size must be 1..1024 threads");
    if (l->shared_bytes > 227 * 1024) return report("dynamic shared memory above 227 KiB");
    if (r->shared.size() != 228 * 1024) r->shared.assign(228 * 1024, 0);
    r->dynamic_shared.assign(l->shared_bytes, 0);
    r->fibers.assign(n, Fiber{});
    while (r->stacks.size() < n) {
        char *st = alloc_stack();
        if (!st) return report("cannot allocate fiber stacks");
        r->stacks.push_back(st);
    }
    const unsigned long long gx = l->grid[0], gy = l->grid[1];
    for (unsigned long long b = l->block_begin; b < l->block_end; b++) {
        r->block_idx = dim3{(unsigned)(b % gx), (unsigned)(b / gx % gy), (unsigned)(b / (gx * gy))};
        bool reverse = l->order == 2 || (l->order == 0 && (b & 1));
        run_block(r, reverse);
        if (r->failed) {
            g_runner = nullptr;
            return report(r->error);
        }
    }
    g_runner = nullptr;
    return 0;
}

} // namespace quorum_emu
