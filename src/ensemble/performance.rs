//! Performance tracking (docs/consensus.md, "Performance and adaptation") and the
//! bounded history of issued results that `record_outcome` scores against.
//!
//! # Tracked figures
//!
//! Each model has a tracked `accuracy` and `profit_factor` and a count of the
//! reports that fed them. A report `(a, pf)` is taken as is when it is the
//! model's first, and otherwise blended: `x ← (1 − λ)·x + λ·new`, with
//! `λ = performance_decay`. Reports come from two sources:
//!
//! * `update_model_performance(model, a, pf)`: one report, as given.
//! * `record_outcome(result_id, realized_direction, realized_return)` (our
//!   choices, written into docs/consensus.md, "Performance and adaptation"):
//!   - the models scored are the result's eligible models E, every one of
//!     them, including those whose effective weight was 0 and those of a
//!     `zero_total_weight` result: otherwise a model that `adaptive` had
//!     weighted down to 0 could never win its weight back. Excluded models
//!     contributed nothing and are not scored.
//!   - a model's prediction is a *hit* when its own `direction` equals the
//!     realized direction, over all three classes: a NEUTRAL call is a hit
//!     exactly when the realized direction is NEUTRAL.
//!   - its *signed return* is `realized_return · s`, `s` = +1 for UP, −1 for
//!     DOWN, 0 for NEUTRAL (no position: neither a gain nor a loss).
//!   - each model keeps its last [`OUTCOME_WINDOW`] scored outcomes. Once it
//!     has at least [`MIN_OUTCOMES`], every new outcome makes one report of
//!     the window: `accuracy = hits / n`, `profit_factor = gains / losses`
//!     (sums of the positive signed returns and of the magnitudes of the
//!     negative ones), capped at [`OUTCOME_PF_CAP`]; a window with gains and
//!     no losses reports the cap, one with neither reports 1. Before
//!     [`MIN_OUTCOMES`] the outcomes are only stored, so that a single early
//!     hit or miss cannot set a model's figures to 1 or 0.
//!   - these reports count in `performance_reports` like any other.

use super::types::{Direction, EnsembleResult, MAX_MODELS};
use super::EnsembleError;

/// How many scored outcomes a model's window holds.
pub const OUTCOME_WINDOW: usize = 100;
/// How many scored outcomes a model needs before they make reports.
pub const MIN_OUTCOMES: usize = 10;
/// The largest profit factor an outcome window reports.
pub const OUTCOME_PF_CAP: f64 = 10.0;
/// How many issued results `record_outcome` can still find (at least
/// 10,000, as docs/consensus.md promises).
pub const HISTORY_CAPACITY: usize = 16_384;

/// A model's tracked figures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Tracked {
    pub accuracy: f64,
    pub profit_factor: f64,
}

#[derive(Debug, Clone)]
pub(crate) struct ModelPerformance {
    pub tracked: Option<Tracked>,
    pub reports: u64,
    /// Ring of (hit, signed return), oldest at `next` once full.
    outcomes: Vec<(bool, f64)>,
    next: usize,
}

impl ModelPerformance {
    pub fn new() -> Self {
        ModelPerformance { tracked: None, reports: 0, outcomes: Vec::with_capacity(OUTCOME_WINDOW), next: 0 }
    }

    /// One report, taken as is if first, else blended with `decay`.
    pub fn report(&mut self, accuracy: f64, profit_factor: f64, decay: f64) {
        self.tracked = Some(match self.tracked {
            None => Tracked { accuracy, profit_factor },
            Some(t) => Tracked {
                accuracy: (1.0 - decay) * t.accuracy + decay * accuracy,
                profit_factor: (1.0 - decay) * t.profit_factor + decay * profit_factor,
            },
        });
        self.reports += 1;
    }

    /// One scored outcome; a report of the window once it holds
    /// [`MIN_OUTCOMES`].
    pub fn record(&mut self, hit: bool, signed_return: f64, decay: f64) {
        if self.outcomes.len() < OUTCOME_WINDOW {
            self.outcomes.push((hit, signed_return));
        } else {
            self.outcomes[self.next] = (hit, signed_return);
            self.next = (self.next + 1) % OUTCOME_WINDOW;
        }
        let n = self.outcomes.len();
        if n < MIN_OUTCOMES {
            return;
        }
        // Oldest first, so the sums do not depend on where the ring starts.
        let (mut hits, mut gains, mut losses) = (0usize, 0.0f64, 0.0f64);
        for k in 0..n {
            let (h, r) = self.outcomes[(self.next + k) % n];
            hits += h as usize;
            if r > 0.0 {
                gains += r;
            } else {
                losses -= r;
            }
        }
        let accuracy = hits as f64 / n as f64;
        let profit_factor = if losses > 0.0 {
            (gains / losses).min(OUTCOME_PF_CAP)
        } else if gains > 0.0 {
            OUTCOME_PF_CAP
        } else {
            1.0
        };
        self.report(accuracy, profit_factor, decay);
    }

    /// `adaptive`'s score: `max(0.05, (acc − 1/3)/(2/3)) · min(pf, 3)/3`, with
    /// `acc = 0.5`, `pf = 1` before any report.
    pub fn score(&self) -> f64 {
        let (acc, pf) = match self.tracked {
            Some(t) => (t.accuracy, t.profit_factor),
            None => (0.5, 1.0),
        };
        f64::max(0.05, (acc - 1.0 / 3.0) / (2.0 / 3.0)) * pf.min(3.0) / 3.0
    }
}

/// The eligible models' directions of one result, 2 bits per config slot:
/// 0 = not in E, 1 + direction otherwise.
pub(crate) type Votes = u64;

pub(crate) fn pack_vote(votes: &mut Votes, slot: usize, direction: Direction) {
    debug_assert!(slot < MAX_MODELS);
    *votes |= (direction as u64 + 1) << (2 * slot);
}

/// The direction slot `slot` voted in `votes`, `None` if it was not in E.
pub(crate) fn unpack_vote(votes: Votes, slot: usize) -> Option<Direction> {
    match (votes >> (2 * slot)) & 3 {
        0 => None,
        v => Direction::from_index(v as usize - 1),
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    id: u64,
    votes: Votes,
    scored: bool,
}

/// The last [`HISTORY_CAPACITY`] results, as a ring indexed by `id %
/// capacity` (ids are consecutive, so the ring holds exactly the newest), and
/// the latest result for `get_status`. Allocated once, at construction.
pub(crate) struct History {
    entries: Vec<Entry>,
    next_id: u64,
    last: Option<EnsembleResult>,
}

impl History {
    pub fn new() -> Self {
        History { entries: vec![Entry::default(); HISTORY_CAPACITY], next_id: 1, last: None }
    }

    /// Issues the next id to `result`, remembers its votes, and keeps a copy of
    /// it as the latest (reusing the copy's buffers).
    pub fn insert(&mut self, votes: Votes, result: &mut EnsembleResult) {
        let id = self.next_id;
        self.next_id += 1;
        self.entries[(id % HISTORY_CAPACITY as u64) as usize] = Entry { id, votes, scored: false };
        result.id = id;
        match &mut self.last {
            Some(last) => last.clone_from(result),
            None => self.last = Some(result.clone()),
        }
    }

    /// Marks `id` scored and returns its votes; an error, with nothing
    /// changed, when it is unknown or already scored.
    pub fn take_for_scoring(&mut self, id: u64) -> Result<Votes, EnsembleError> {
        let entry = &mut self.entries[(id % HISTORY_CAPACITY as u64) as usize];
        if id == 0 || entry.id != id {
            return Err(EnsembleError::UnknownResult { id, capacity: HISTORY_CAPACITY });
        }
        if entry.scored {
            return Err(EnsembleError::AlreadyScored { id });
        }
        entry.scored = true;
        Ok(entry.votes)
    }

    pub fn last(&self) -> Option<&EnsembleResult> {
        self.last.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn votes_round_trip_in_every_slot() {
        let mut v = 0;
        for slot in 0..MAX_MODELS {
            pack_vote(&mut v, slot, Direction::ALL[slot % 3]);
        }
        for slot in 0..MAX_MODELS {
            assert_eq!(unpack_vote(v, slot), Some(Direction::ALL[slot % 3]));
        }
        assert_eq!(unpack_vote(0, 5), None);
    }

    #[test]
    fn window_wraps_and_keeps_the_newest() {
        let mut p = ModelPerformance::new();
        // 100 misses then 100 hits: the window holds only hits at the end.
        for _ in 0..OUTCOME_WINDOW {
            p.record(false, -1.0, 1.0);
        }
        assert_eq!(p.tracked.unwrap().accuracy, 0.0);
        for _ in 0..OUTCOME_WINDOW {
            p.record(true, 1.0, 1.0);
        }
        // decay 1: the tracked figures are the last window's report.
        assert_eq!(p.tracked.unwrap(), Tracked { accuracy: 1.0, profit_factor: OUTCOME_PF_CAP });
        assert_eq!(p.reports, (2 * OUTCOME_WINDOW - MIN_OUTCOMES + 1) as u64);
    }
}
