//! After the first step at a batch size, a training step (`forward_backward`
//! with dropout on, then `refresh`) allocates nothing of its own beyond the
//! `LossOut` it returns: the tape, gradient scratch and host scratch are all
//! reused. Same watcher as tests/no_alloc.rs: a global allocator traces every
//! allocation in the measured window on every thread; the gemm crate's tiny
//! per-call vector, rayon's job queue blocks and the returned `LossOut`
//! (allocated in `net::loss_out`) are the known exceptions. One test in this
//! binary, so nothing else allocates concurrently.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use quorum::model::{ModelConfig, ModelKind};
use quorum::train::{HeadTargets, LossWeights, TrainBatch, TrainNet};
use quorum::{Cpu, Tensor};

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
    } else if !stack.contains("crossbeam-deque") && !stack.contains(" loss_out<") {
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
fn steady_state_training_step_allocates_nothing_of_its_own() {
    let be = Cpu::new();
    let weights = LossWeights { direction: 1.0, confidence: 0.5, ret: 0.3 };
    for kind in ModelKind::ALL {
        let config = ModelConfig::default_for(kind);
        let mut net = TrainNet::init(&be, config.clone(), 3).unwrap();
        let batch = 2;
        let target = || HeadTargets { class: vec![0, 2], ret: vec![0.5, -1.5] };
        let mut b = TrainBatch { batch, ..Default::default() };
        match &config {
            ModelConfig::Tlob(c) => {
                b.lob = Some(Tensor::zeros(vec![batch, 100, 20, 4]));
                b.aux = Some(Tensor::zeros(vec![batch, 112]));
                b.targets = c.horizons.iter().map(|_| target()).collect();
            }
            _ => {
                b.features = Some(Tensor::zeros(vec![batch, 60, 112]));
                b.targets = vec![target()];
            }
        }
        // Warm-up: the tape, scratch and host buffers are sized here.
        for step in 0..2 {
            net.forward_backward(&be, &b, weights, step).unwrap();
            net.refresh(&be).unwrap();
        }
        WATCHING.store(true, Ordering::SeqCst);
        let result = net.forward_backward(&be, &b, weights, 7).and_then(|_| net.refresh(&be));
        WATCHING.store(false, Ordering::SeqCst);
        result.unwrap();
        let offenders = std::mem::take(&mut *OFFENDERS.lock().unwrap());
        assert!(
            offenders.is_empty(),
            "{kind}: {} allocations of our own in a training step; the first:\n{}",
            offenders.len(),
            offenders[0]
        );
    }
    assert!(GEMM_ALLOCATIONS.load(Ordering::SeqCst) > 0, "no allocation was traced: the watcher is broken");
}
