//! After the first forward at a batch size, inference allocates nothing of its
//! own: a global allocator watches every thread (rayon's workers included).
//!
//! Two known exceptions, both outside our code: the `gemm` crate (0.19)
//! allocates a tiny `vec![false; mc / MR]` inside every call (gemm-common's
//! `gemm_basic_generic`), and rayon's global job queue (crossbeam-deque's
//! injector) allocates a block per 63 jobs pushed from outside the pool. Each
//! allocation in the measured window is therefore traced, and any whose stack
//! passes through neither fails the test with its stack printed. One test in
//! this binary, so no other test allocates concurrently.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use quorum::model::{ModelConfig, ModelKind, ModelMeta};
use quorum::weights::generated;
use quorum::{Cpu, Inputs, Model, Outputs, Tensor};

struct Tracing;

static WATCHING: AtomicBool = AtomicBool::new(false);
static GEMM_ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
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
    } else if !stack.contains("crossbeam-deque") {
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

#[test]
fn steady_state_forward_allocates_nothing_of_its_own() {
    let be = Cpu::new();
    for kind in ModelKind::ALL {
        let config = ModelConfig::default_for(kind);
        let mut model =
            Model::from_tensors(&be, config.clone(), &generated::params(&config), ModelMeta::default()).unwrap();
        for batch in [1usize, 3] {
            let shape = |dims: &[usize]| [&[batch][..], dims].concat();
            let (features, lob, aux) = match kind {
                ModelKind::Tlob => {
                    (None, Some(Tensor::zeros(shape(&[100, 20, 4]))), Some(Tensor::zeros(shape(&[112]))))
                }
                _ => (Some(Tensor::zeros(shape(&[60, 112]))), None, None),
            };
            let inputs = Inputs { features: features.as_ref(), lob: lob.as_ref(), aux: aux.as_ref() };
            let mut out = Outputs::new();
            // Warm-up: activations, scratch and outputs are sized here.
            for _ in 0..3 {
                model.forward_into(&be, &inputs, &mut out).unwrap();
            }
            WATCHING.store(true, Ordering::SeqCst);
            let result = model.forward_into(&be, &inputs, &mut out);
            WATCHING.store(false, Ordering::SeqCst);
            result.unwrap();
            let offenders = std::mem::take(&mut *OFFENDERS.lock().unwrap());
            assert!(
                offenders.is_empty(),
                "{kind} at batch {batch}: {} allocations outside gemm; the first:\n{}",
                offenders.len(),
                offenders[0]
            );
        }
    }
    // The watcher must have seen something, or it watched nothing at all.
    assert!(GEMM_ALLOCATIONS.load(Ordering::SeqCst) > 0, "no allocation was traced: the watcher is broken");
}
