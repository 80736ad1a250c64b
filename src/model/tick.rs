//! A TLOB tick that reuses its past (docs/models.md, "The TLOB tick").
//!
//! In live mode a tick adds one snapshot per symbol and drops the oldest.
//! TLOB's spatial CNN and its projection (about 44% of its FLOPs at the
//! defaults) see one snapshot at a time, so a snapshot's token does not
//! change while its input row does not. Under the `snapshot` input
//! normalization (`TlobConfig::lob_normalization`) a row never changes once
//! made; under `window` every row changes on every tick, and nothing repeats.
//!
//! `TokenCache` keeps the tokens of the rows the last two forwards saw,
//! keyed by the row's bits. A forward looks every row of its windows up,
//! encodes only the ones it has not seen (one `Encode` pass over all of them,
//! whatever window or symbol they come from), and runs the rest from the
//! tokens (one `Tokens` pass). It needs no notion of symbols or streams: a
//! live tick over 32 symbols encodes 32 new snapshots, and an HTTP client
//! sending successive windows gets the same reuse. The outputs have the bits
//! of the whole forward: a token is the same function of its row in both,
//! each snapshot encoded on its own (`tests/tlob_tick.rs`).

use std::collections::hash_map::{Entry, RandomState};
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};

use crate::tensor::Tensor;

/// Rows seen by the last two forwards and their tokens; slots are reused,
/// so a steady stream allocates nothing.
pub struct TokenCache {
    /// Values of one input row (`L · F`) and of one token (`D`).
    row_len: usize,
    dim: usize,
    /// The row's hash → its slot. A hash shared by two different rows keeps
    /// the first; the second is encoded on every forward (never confused:
    /// a hit compares the bits). Keyed afresh per cache, so rows crafted to
    /// collide elsewhere do not collide here.
    hasher: RandomState,
    index: HashMap<u64, usize>,
    /// Per slot: the row's bits, its token, its hash and the forward that last used it.
    keys: Vec<u32>,
    tokens: Vec<f32>,
    slots: Vec<Slot>,
    free: Vec<usize>,
    generation: u64,
    /// This forward: each window row's slot, the rows to encode and their slots.
    pub(super) window_slots: Vec<usize>,
    pub(super) missing: Tensor,
    pub(super) missing_slots: Vec<usize>,
    pub(super) encoded: Tensor,
    pub(super) window_tokens: Tensor,
    /// Rows encoded and rows found held (including a row repeated within
    /// one forward), over the cache's life.
    encoded_rows: u64,
    reused_rows: u64,
}

#[derive(Clone, Copy)]
struct Slot {
    hash: u64,
    used: u64,
    live: bool,
}

impl TokenCache {
    pub fn new(row_len: usize, dim: usize) -> Self {
        TokenCache {
            row_len,
            dim,
            hasher: RandomState::new(),
            index: HashMap::new(),
            keys: Vec::new(),
            tokens: Vec::new(),
            slots: Vec::new(),
            free: Vec::new(),
            generation: 0,
            window_slots: Vec::new(),
            missing: Tensor::zeros(vec![0]),
            missing_slots: Vec::new(),
            encoded: Tensor::zeros(vec![0]),
            window_tokens: Tensor::zeros(vec![0]),
            encoded_rows: 0,
            reused_rows: 0,
        }
    }

    /// `(rows encoded, rows reused)` so far.
    pub fn counts(&self) -> (u64, u64) {
        (self.encoded_rows, self.reused_rows)
    }

    /// Rows held now (at most those of the last two forwards).
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Starts a forward over `lob`'s rows (`windows` windows of `row_len`
    /// values a row, `levels` × `features`): finds each row's slot, and
    /// gathers the rows not held into `missing` (`(m', levels, features)`,
    /// padded as below) with their new slots.
    pub(super) fn look_up(&mut self, lob: &[f32], windows: usize, levels: usize, features: usize) {
        self.generation += 1;
        self.window_slots.clear();
        self.missing_slots.clear();
        self.missing.data.clear();
        for row in lob.chunks_exact(self.row_len) {
            let hash = self.row_hash(row);
            let held =
                self.index.get(&hash).copied().filter(|&s| self.key(s).iter().zip(row).all(|(k, v)| *k == v.to_bits()));
            let slot = match held {
                Some(s) => {
                    self.reused_rows += 1;
                    s
                }
                None => {
                    let s = self.take_slot(hash, row);
                    self.missing_slots.push(s);
                    self.missing.data.extend_from_slice(row);
                    s
                }
            };
            self.slots[slot].used = self.generation;
            self.window_slots.push(slot);
        }
        let m = self.missing_slots.len();
        self.encoded_rows += m as u64;
        // Padded with zero rows to a power of two of at least one row a
        // window, so a count of new rows that wanders from tick to tick (a
        // quiet book repeats a row: fewer than one a window) keeps the
        // encoding's shape, and with it its plan and recording. Rows are
        // encoded each on its own, so the padding changes no token.
        let padded = if m == 0 { 0 } else { m.max(windows).next_power_of_two() };
        self.missing.data.resize(padded * self.row_len, 0.0);
        // In place: a steady stream allocates nothing here.
        self.missing.shape.clear();
        self.missing.shape.extend_from_slice(&[padded, levels, features]);
    }

    /// Stores the tokens of the `missing` rows (`encoded`, `(m', D)`, its
    /// first `m` rows theirs), then
    /// gathers every window's tokens into `window_tokens` `(batch, steps, D)`.
    pub(super) fn fill(&mut self, batch: usize, steps: usize) {
        let d = self.dim;
        for (i, &s) in self.missing_slots.iter().enumerate() {
            self.tokens[s * d..(s + 1) * d].copy_from_slice(&self.encoded.data[i * d..(i + 1) * d]);
        }
        let t = &mut self.window_tokens;
        if t.shape != [batch, steps, d] {
            *t = Tensor::zeros(vec![batch, steps, d]);
        }
        for (out, &s) in t.data.chunks_exact_mut(d).zip(&self.window_slots) {
            out.copy_from_slice(&self.tokens[s * d..(s + 1) * d]);
        }
    }

    /// Drops the rows neither this forward nor the one before it used.
    pub(super) fn evict(&mut self) {
        for s in 0..self.slots.len() {
            let slot = self.slots[s];
            if slot.live && slot.used + 1 < self.generation {
                if let Entry::Occupied(e) = self.index.entry(slot.hash) {
                    if *e.get() == s {
                        e.remove();
                    }
                }
                self.slots[s].live = false;
                self.free.push(s);
            }
        }
    }

    /// Forgets every row (the model's weights changed).
    pub fn clear(&mut self) {
        self.index.clear();
        self.free = (0..self.slots.len()).collect();
        self.slots.iter_mut().for_each(|s| s.live = false);
    }

    fn row_hash(&self, row: &[f32]) -> u64 {
        let mut h = self.hasher.build_hasher();
        for v in row {
            h.write_u32(v.to_bits());
        }
        h.finish()
    }

    fn key(&self, slot: usize) -> &[u32] {
        &self.keys[slot * self.row_len..(slot + 1) * self.row_len]
    }

    /// A slot for `row` (reused or new), indexed unless its hash is taken.
    fn take_slot(&mut self, hash: u64, row: &[f32]) -> usize {
        let (n, d) = (self.row_len, self.dim);
        let s = self.free.pop().unwrap_or_else(|| {
            self.slots.push(Slot { hash: 0, used: 0, live: false });
            self.keys.resize(self.slots.len() * n, 0);
            self.tokens.resize(self.slots.len() * d, 0.0);
            self.slots.len() - 1
        });
        for (k, v) in self.keys[s * n..(s + 1) * n].iter_mut().zip(row) {
            *k = v.to_bits();
        }
        self.slots[s] = Slot { hash, used: self.generation, live: true };
        self.index.entry(hash).or_insert(s);
        s
    }
}
