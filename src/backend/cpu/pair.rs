//! A second core for latency-critical sequential loops (the batch-1 LSTM
//! recurrence: 60 dependent steps per layer, each a few microseconds).
//!
//! rayon's `join` per step puts the other worker to sleep and wakes it again
//! each time, which costs more than the step. Here a helper thread, spawned
//! once and parked between calls, runs its half of the loop while the caller
//! runs the other, and the two meet at a spin barrier after every step
//! (falling back to yielding if the other side has been descheduled).
//! If the helper is already busy (two models' recurrences at once), `run`
//! says so and the caller takes its plain path instead.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};

/// A two-party, sense-reversing spin barrier.
pub(crate) struct Barrier {
    arrived: AtomicUsize,
    sense: AtomicBool,
}

impl Barrier {
    const fn new() -> Self {
        Barrier { arrived: AtomicUsize::new(0), sense: AtomicBool::new(false) }
    }

    /// Back to the initial state (sense false, nobody arrived), which each
    /// run's parties assume by starting with `local = false`. Only while
    /// nobody is at the barrier.
    fn reset(&self) {
        self.arrived.store(0, Ordering::Relaxed);
        self.sense.store(false, Ordering::Relaxed);
    }

    /// Waits for the other party; `local` is this party's own sense flag,
    /// `false` at the start of a run.
    pub(crate) fn wait(&self, local: &mut bool) {
        *local = !*local;
        if self.arrived.fetch_add(1, Ordering::AcqRel) == 1 {
            self.arrived.store(0, Ordering::Relaxed);
            self.sense.store(*local, Ordering::Release);
        } else {
            let mut spins = 0u32;
            while self.sense.load(Ordering::Acquire) != *local {
                if spins < 4096 {
                    std::hint::spin_loop();
                    spins += 1;
                } else {
                    std::thread::yield_now();
                }
            }
        }
    }
}

type Job<'a> = &'a (dyn Fn(usize, &Barrier) + Sync);

struct Pair {
    /// Held for a whole `run`: one pair of halves at a time.
    busy: Mutex<()>,
    /// Points at the caller's `Job` (on its stack) while a run is in flight.
    job: AtomicPtr<Job<'static>>,
    wake: (Mutex<u64>, Condvar),
    done: AtomicBool,
    helper_panicked: AtomicBool,
    barrier: Barrier,
}

static PAIR: OnceLock<&'static Pair> = OnceLock::new();

fn pair() -> &'static Pair {
    PAIR.get_or_init(|| {
        let p: &'static Pair = Box::leak(Box::new(Pair {
            busy: Mutex::new(()),
            job: AtomicPtr::new(std::ptr::null_mut()),
            wake: (Mutex::new(0), Condvar::new()),
            done: AtomicBool::new(false),
            helper_panicked: AtomicBool::new(false),
            barrier: Barrier::new(),
        }));
        std::thread::Builder::new()
            .name("quorum-pair".into())
            .spawn(move || helper(p))
            .expect("spawning the helper thread");
        p
    })
}

fn helper(p: &'static Pair) {
    let mut seen = 0u64;
    loop {
        {
            let (lock, cv) = &p.wake;
            let mut g = lock.lock().unwrap_or_else(|e| e.into_inner());
            while *g == seen {
                g = cv.wait(g).unwrap_or_else(|e| e.into_inner());
            }
            seen = *g;
        }
        let job = p.job.load(Ordering::Acquire);
        // SAFETY: `run` published a pointer to a `Job` that lives on its stack
        // and does not return before it sees `done`, set below.
        let f: Job<'static> = unsafe { *job };
        if catch_unwind(AssertUnwindSafe(|| f(1, &p.barrier))).is_err() {
            p.helper_panicked.store(true, Ordering::Release);
        }
        p.done.store(true, Ordering::Release);
    }
}

/// Splits `n` items into two halves, `[0, ⌈n/2⌉)` and the rest, and runs
/// `part(first, count)` for both at once: here and on the helper core, or by
/// one `rayon::join` if the helper is busy. For work whose halves never need
/// to meet until the end (an LSTM's samples over a whole sequence).
pub(crate) fn run_halves(n: usize, part: &(dyn Fn(usize, usize) + Sync)) {
    let first = n.div_ceil(2);
    let half = |p: usize| if p == 0 { part(0, first) } else { part(first, n - first) };
    if !run(&|p, _barrier| half(p)) {
        rayon::join(|| half(0), || half(1));
    }
}

/// Runs `f(0, barrier)` here and `f(1, barrier)` on the helper core at the
/// same time, and returns once both are done; `false` (nothing run) if the
/// helper is busy with another caller.
pub(crate) fn run(f: &(dyn Fn(usize, &Barrier) + Sync)) -> bool {
    let p = pair();
    let Ok(_guard) = p.busy.try_lock() else {
        return false;
    };
    // Erase the lifetime: the helper only dereferences it before `done`.
    let job: Job<'_> = f;
    let job: Job<'static> = unsafe { std::mem::transmute::<Job<'_>, Job<'static>>(job) };
    let slot = &job as *const Job<'static> as *mut Job<'static>;
    // The previous run ended with both parties past their last wait and the
    // helper parked, so nobody is at the barrier: a run with an odd number
    // of waits must not leave the next one starting on the other sense.
    p.barrier.reset();
    p.done.store(false, Ordering::Relaxed);
    p.job.store(slot, Ordering::Release);
    {
        let (lock, cv) = &p.wake;
        let mut g = lock.lock().unwrap_or_else(|e| e.into_inner());
        *g += 1;
        cv.notify_one();
    }
    let mine = catch_unwind(AssertUnwindSafe(|| f(0, &p.barrier)));
    let mut spins = 0u32;
    while !p.done.load(Ordering::Acquire) {
        if spins < 4096 {
            std::hint::spin_loop();
            spins += 1;
        } else {
            std::thread::yield_now();
        }
    }
    p.job.store(std::ptr::null_mut(), Ordering::Relaxed);
    if let Err(e) = mine {
        std::panic::resume_unwind(e);
    }
    assert!(!p.helper_panicked.swap(false, Ordering::AcqRel), "the helper core's half panicked");
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `body` on its own thread and fails if it takes over 30 s: a
    /// broken barrier deadlocks, and a test should fail, not hang.
    /// `run`, waiting while another test (the LSTM's, in parallel) holds the pair.
    fn run_when_free(f: &(dyn Fn(usize, &Barrier) + Sync)) {
        while !run(f) {
            std::thread::yield_now();
        }
    }

    fn within_deadline(body: fn()) {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            body();
            let _ = tx.send(());
        });
        match rx.recv_timeout(std::time::Duration::from_secs(30)) {
            Ok(()) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("the pair deadlocked (barrier out of step)"),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => panic!("the pair test body panicked"),
        }
    }

    #[test]
    fn halves_run_concurrently_and_meet_at_every_step() {
        within_deadline(meet_at_every_step);
    }

    fn meet_at_every_step() {
        // Each step, each half writes its slot, then both read the other's
        // value from that step: this only works if the barrier really holds.
        let slots = [AtomicUsize::new(0), AtomicUsize::new(0)];
        let seen = [AtomicUsize::new(0), AtomicUsize::new(0)];
        run_when_free(&|part, barrier| {
            let mut sense = false;
            for step in 1..=500usize {
                slots[part].store(step * 10 + part, Ordering::Relaxed);
                barrier.wait(&mut sense);
                if slots[1 - part].load(Ordering::Relaxed) == step * 10 + 1 - part {
                    seen[part].fetch_add(1, Ordering::Relaxed);
                }
                barrier.wait(&mut sense);
            }
        });
        assert_eq!(seen[0].load(Ordering::Relaxed), 500);
        assert_eq!(seen[1].load(Ordering::Relaxed), 500);
        // And it can be used again, after runs with odd numbers of waits too:
        // each run's first wait must still hold both parties.
        for waits in [1usize, 3, 2, 7] {
            let mark = [AtomicUsize::new(0), AtomicUsize::new(0)];
            let ok = AtomicUsize::new(0);
            run_when_free(&|part, barrier| {
                let mut sense = false;
                for step in 1..=waits {
                    if part == 1 {
                        // Arrive late: a barrier that does not wait lets part 0 read too early.
                        std::thread::sleep(std::time::Duration::from_millis(2));
                    }
                    mark[part].store(step, Ordering::Relaxed);
                    barrier.wait(&mut sense);
                    if mark[1 - part].load(Ordering::Relaxed) >= step {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    barrier.wait(&mut sense);
                }
            });
            assert_eq!(ok.load(Ordering::Relaxed), 2 * waits, "{waits} waits");
            // An odd total of waits in a run, on purpose.
            run_when_free(&|_, barrier| {
                let mut sense = false;
                barrier.wait(&mut sense);
            });
        }
        let count = AtomicUsize::new(0);
        run_when_free(&|_, _| {
            count.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(count.load(Ordering::Relaxed), 2);
    }
}
