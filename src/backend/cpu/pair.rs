//! A second core for latency-critical work: the batch-1 LSTM recurrence (60
//! dependent steps per layer, each a few microseconds) and every op of a
//! batch-1 forward (tens of microseconds each).
//!
//! rayon's `join` puts the other worker to sleep after each op and wakes it
//! again for the next (a futex wake, a context switch, then `sched_yield`
//! rounds: a fifth of a batch-1 TLOB forward went to the kernel's
//! scheduler). Here a helper thread, spawned once, runs its half of the work
//! while the caller runs the other; the two meet at a spin barrier where a
//! loop needs it. Between jobs the helper keeps watching for the next one
//! for a short while (`LINGER`, yielding its core to anything else runnable)
//! and only then sleeps, so the ops of one forward reach it in well under a
//! microsecond. If the helper is already busy (two models' forwards at once),
//! `run` says so and the caller takes its plain path instead.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long the idle helper watches for the next job before it sleeps: far
/// longer than the gaps between a forward's ops, far shorter than the time
/// between forwards of a server at market-data rates.
const LINGER: Duration = Duration::from_micros(300);

/// The CPU the helper runs on alone (`pin_helper`); `usize::MAX`: anywhere.
static HELPER_CPU: AtomicUsize = AtomicUsize::new(usize::MAX);

/// Gives the helper CPU `cpu` to itself: from now on it runs there only, and
/// the calling thread (with every thread it starts later: a server's tokio
/// workers) on the other CPUs this process may use. rayon's pool is started
/// first, so its workers keep every CPU for the batch-32 work they split.
/// Returns the CPUs left to the calling thread. Call it at startup, before
/// the threads that should avoid `cpu` exist (`--helper-cpu`).
pub fn pin_helper(cpu: usize) -> crate::error::Result<Vec<usize>> {
    use super::affinity;
    let refuse = |reason: String| crate::error::Error::config("helper-cpu", reason);
    let allowed = affinity::allowed().map_err(|e| refuse(format!("reading this process's CPUs: {e}")))?;
    if !allowed.contains(&cpu) {
        return Err(refuse(format!("CPU {cpu} is not one this process may run on; it may use {allowed:?}")));
    }
    let rest: Vec<usize> = allowed.iter().copied().filter(|&c| c != cpu).collect();
    if rest.is_empty() {
        return Err(refuse(format!("CPU {cpu} is the only one this process may run on: the helper needs a second")));
    }
    // rayon's registry starts its workers on first use; start them now, on
    // every CPU, before this thread's mask narrows what later threads inherit.
    rayon::join(|| (), || ());
    HELPER_CPU.store(cpu, Ordering::SeqCst);
    // A helper already running moves on its next job; one not yet spawned
    // pins itself when it starts.
    if PAIR.get().is_some() {
        let failed = AtomicBool::new(false);
        while !run(&|part, _| {
            if part == 1 && affinity::confine(&[cpu]).is_err() {
                failed.store(true, Ordering::Relaxed);
            }
        }) {
            std::thread::yield_now();
        }
        if failed.load(Ordering::Relaxed) {
            return Err(refuse(format!("moving the running helper to CPU {cpu} failed")));
        }
    }
    affinity::confine(&rest).map_err(|e| refuse(format!("confining the other threads to {rest:?}: {e}")))?;
    Ok(rest)
}

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
    /// Bumped once per job; the helper runs a job when it differs from the
    /// last one it saw.
    generation: AtomicU64,
    /// The helper is asleep on `wake` (or about to be): a new job must notify.
    sleeping: AtomicBool,
    wake: (Mutex<()>, Condvar),
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
            generation: AtomicU64::new(0),
            sleeping: AtomicBool::new(false),
            wake: (Mutex::new(()), Condvar::new()),
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
    let cpu = HELPER_CPU.load(Ordering::SeqCst);
    if cpu != usize::MAX {
        // Checked by `pin_helper` against this process's CPUs; if it fails
        // anyway the helper still works, only unpinned.
        let _ = super::affinity::confine(&[cpu]);
    }
    let mut seen = 0u64;
    loop {
        seen = next_job(p, seen);
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

/// Waits for a generation other than `seen` and returns it: watching for
/// `LINGER`, then asleep on the condition variable.
fn next_job(p: &Pair, seen: u64) -> u64 {
    let start = Instant::now();
    let mut spins = 0u32;
    loop {
        let g = p.generation.load(Ordering::Acquire);
        if g != seen {
            return g;
        }
        spins = spins.wrapping_add(1);
        if !spins.is_multiple_of(64) {
            std::hint::spin_loop();
        } else if start.elapsed() < LINGER {
            // Let anything else runnable have the core (rayon's workers, a
            // server's threads): a spinning helper must not starve them.
            std::thread::yield_now();
        } else {
            break;
        }
    }
    let (lock, cv) = &p.wake;
    let mut guard = lock.lock().unwrap_or_else(|e| e.into_inner());
    // Sequentially consistent with `post`: either it sees `sleeping` and
    // notifies (under the lock, so not before this thread waits), or this
    // thread sees its new generation here.
    p.sleeping.store(true, Ordering::SeqCst);
    loop {
        let g = p.generation.load(Ordering::SeqCst);
        if g != seen {
            p.sleeping.store(false, Ordering::SeqCst);
            return g;
        }
        guard = cv.wait(guard).unwrap_or_else(|e| e.into_inner());
    }
}

/// Hands the published job to the helper.
fn post(p: &Pair) {
    p.generation.fetch_add(1, Ordering::SeqCst);
    if p.sleeping.load(Ordering::SeqCst) {
        let (lock, cv) = &p.wake;
        let _guard = lock.lock().unwrap_or_else(|e| e.into_inner());
        cv.notify_one();
    }
}

/// Runs `part(lo, hi)` for `[0, mid)` and `[mid, n)` at once: here and on the
/// helper core, or by one `rayon::join` if the helper is busy.
pub(crate) fn run_split(mid: usize, n: usize, part: &(dyn Fn(usize, usize) + Sync)) {
    let half = |p: usize| if p == 0 { part(0, mid) } else { part(mid, n) };
    if !run(&|p, _barrier| half(p)) {
        rayon::join(|| half(0), || half(1));
    }
}

/// Splits `n` items into two halves, `[0, ⌈n/2⌉)` and the rest, and runs
/// `part(first, count)` for both at once: here and on the helper core, or by
/// one `rayon::join` if the helper is busy. For work whose halves never need
/// to meet until the end (an LSTM's samples over a whole sequence).
pub(crate) fn run_halves(n: usize, part: &(dyn Fn(usize, usize) + Sync)) {
    run_split(n.div_ceil(2), n, &|lo, hi| part(lo, hi - lo));
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
    post(p);
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

    #[test]
    fn a_pinned_helper_runs_on_its_cpu_alone_and_the_caller_elsewhere() {
        within_deadline(pinned_helper);
    }

    fn pinned_helper() {
        let Ok(cpus) = super::super::affinity::allowed() else {
            eprintln!("skipped: no CPU affinity here");
            return;
        };
        let Some(&helper_cpu) = cpus.last().filter(|_| cpus.len() >= 2) else {
            eprintln!("skipped: one CPU");
            return;
        };
        // This test's own thread is the caller (within_deadline's), so its
        // narrowed mask leaves the other tests alone; the helper is shared,
        // and any CPU is fine for them.
        let rest = pin_helper(helper_cpu).unwrap();
        assert!(!rest.contains(&helper_cpu) && !rest.is_empty(), "{rest:?}");
        // Each half's mask (what the scheduler may do), and where it ran.
        let masks = [Mutex::new(Vec::new()), Mutex::new(Vec::new())];
        let seen = [AtomicUsize::new(usize::MAX), AtomicUsize::new(usize::MAX)];
        run_when_free(&|part, _| {
            *masks[part].lock().unwrap() = super::super::affinity::allowed().unwrap();
            seen[part].store(super::super::affinity::current().unwrap_or(usize::MAX), Ordering::Relaxed);
        });
        assert_eq!(*masks[1].lock().unwrap(), vec![helper_cpu], "the helper's CPUs");
        assert_eq!(*masks[0].lock().unwrap(), rest, "the caller's CPUs");
        assert_eq!(seen[1].load(Ordering::Relaxed), helper_cpu, "where the helper's half ran");
        assert_ne!(seen[0].load(Ordering::Relaxed), helper_cpu, "where the caller's half ran");
        let e = pin_helper(usize::MAX - 1).unwrap_err().to_string();
        assert!(e.contains("helper-cpu") && e.contains("may use"), "{e}");
    }
}
