//! A global allocator that traces every allocation made while a closure runs,
//! on every thread (rayon's workers included), for the no-allocation tests.
//!
//! Known exceptions, outside our code: the `gemm` crate (0.19) allocates a
//! tiny `vec![false; mc / MR]` inside every call (gemm-common's
//! `gemm_basic_generic`; counted, so a test can check the watcher saw
//! something), and rayon's global job queue (crossbeam-deque's injector)
//! allocates a block per 63 jobs pushed from outside the pool. A test may
//! allow more by a substring of the stack. A binary using this must run one
//! test only, so nothing else allocates meanwhile.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

struct Tracing;

static WATCHING: AtomicBool = AtomicBool::new(false);
static GEMM_ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
static ALSO_ALLOWED: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
static OFFENDERS: Mutex<Vec<String>> = Mutex::new(Vec::new());

thread_local! {
    /// Set while this thread inspects an allocation (which itself allocates).
    static INSPECTING: Cell<bool> = const { Cell::new(false) };
}

fn inspect() {
    if !WATCHING.load(Ordering::SeqCst) || INSPECTING.with(|f| f.replace(true)) {
        return;
    }
    let stack = std::backtrace::Backtrace::force_capture().to_string();
    if stack.contains("gemm_basic_generic") {
        GEMM_ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
    } else if !stack.contains("crossbeam-deque") && !ALSO_ALLOWED.lock().unwrap().iter().any(|a| stack.contains(a)) {
        OFFENDERS.lock().unwrap().push(stack);
    }
    INSPECTING.with(|f| f.set(false));
}

unsafe impl GlobalAlloc for Tracing {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        inspect();
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        inspect();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Tracing = Tracing;

/// Runs `f` watched; returns its result and the stacks of the allocations
/// that are neither known exceptions nor `also_allowed`.
pub fn watch<R>(also_allowed: &[&'static str], f: impl FnOnce() -> R) -> (R, Vec<String>) {
    *ALSO_ALLOWED.lock().unwrap() = also_allowed.to_vec();
    WATCHING.store(true, Ordering::SeqCst);
    let r = f();
    WATCHING.store(false, Ordering::SeqCst);
    (r, std::mem::take(&mut *OFFENDERS.lock().unwrap()))
}

/// The gemm crate's allocations seen so far: zero means the watcher saw nothing at all.
pub fn gemm_allocations() -> usize {
    GEMM_ALLOCATIONS.load(Ordering::SeqCst)
}
