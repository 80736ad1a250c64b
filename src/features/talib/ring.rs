//! Fixed-capacity buffers for the streams: allocated once, never grown.

/// A FIFO of at most `cap` values in a boxed slice.
#[derive(Debug, Clone)]
pub(crate) struct Ring {
    buf: Box<[f64]>,
    head: usize,
    len: usize,
}

impl Ring {
    /// A ring that holds up to `cap` values (`cap` ≥ 1).
    pub(crate) fn new(cap: usize) -> Self {
        Self { buf: vec![0.0; cap.max(1)].into_boxed_slice(), head: 0, len: 0 }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Appends `x`; when full, drops the oldest value first and returns it.
    pub(crate) fn push(&mut self, x: f64) -> Option<f64> {
        let cap = self.buf.len();
        if self.len == cap {
            let old = self.buf[self.head];
            self.buf[self.head] = x;
            self.head = wrap(self.head + 1, cap);
            Some(old)
        } else {
            let tail = wrap(self.head + self.len, cap);
            self.buf[tail] = x;
            self.len += 1;
            None
        }
    }

    /// Removes and returns the oldest value.
    pub(crate) fn pop(&mut self) -> Option<f64> {
        if self.len == 0 {
            return None;
        }
        let old = self.buf[self.head];
        self.head = wrap(self.head + 1, self.buf.len());
        self.len -= 1;
        Some(old)
    }

    /// The `i`-th oldest value (0 = oldest); `i < len`.
    pub(crate) fn get(&self, i: usize) -> f64 {
        self.buf[wrap(self.head + i, self.buf.len())]
    }

    /// The values, oldest first, as two contiguous runs.
    pub(crate) fn as_slices(&self) -> (&[f64], &[f64]) {
        let cap = self.buf.len();
        let end = self.head + self.len;
        if end <= cap {
            (&self.buf[self.head..end], &[])
        } else {
            (&self.buf[self.head..], &self.buf[..end - cap])
        }
    }
}

/// `i mod cap` for `i < 2 · cap` (cheaper than `%`).
#[inline]
fn wrap(i: usize, cap: usize) -> usize {
    if i >= cap {
        i - cap
    } else {
        i
    }
}

/// The extreme (max or min) of a sliding window, with the index at which it
/// occurred (the latest one on ties, as TA-Lib's AROON scans with `>=`/`<=`):
/// a monotonic deque, O(1) amortized per push, at most `window` entries.
#[derive(Debug, Clone)]
pub(crate) struct Extreme {
    idx: Box<[u64]>,
    val: Box<[f64]>,
    head: usize,
    len: usize,
    window: u64,
    max: bool,
}

impl Extreme {
    /// The max (`max = true`) or min over the last `window` pushes.
    pub(crate) fn new(window: usize, max: bool) -> Self {
        let cap = window.max(1);
        Self {
            idx: vec![0; cap].into_boxed_slice(),
            val: vec![0.0; cap].into_boxed_slice(),
            head: 0,
            len: 0,
            window: cap as u64,
            max,
        }
    }

    fn slot(&self, i: usize) -> usize {
        wrap(self.head + i, self.idx.len())
    }

    /// Adds the value of bar `t` (bars numbered 0, 1, 2, … in order) and
    /// returns the window's extreme and its bar number.
    pub(crate) fn push(&mut self, t: u64, x: f64) -> (f64, u64) {
        // Drop entries that left the window (t − window, t].
        while self.len > 0 && self.idx[self.head] + self.window <= t {
            self.head = wrap(self.head + 1, self.idx.len());
            self.len -= 1;
        }
        // Drop entries that x dominates (ties: the newer bar wins).
        while self.len > 0 {
            let back = self.val[self.slot(self.len - 1)];
            let dominated = if self.max { back <= x } else { back >= x };
            if !dominated {
                break;
            }
            self.len -= 1;
        }
        if self.len == self.idx.len() {
            // Only reachable when NaN defeats the comparisons: keep the
            // bound by dropping the oldest entry.
            self.head = wrap(self.head + 1, self.idx.len());
            self.len -= 1;
        }
        let s = self.slot(self.len);
        self.idx[s] = t;
        self.val[s] = x;
        self.len += 1;
        (self.val[self.head], self.idx[self.head])
    }
}
