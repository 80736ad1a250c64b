//! A TLOB tick that reuses its past (docs/models.md, "The TLOB tick").
//!
//! In live mode a tick adds one snapshot per symbol and drops the oldest.
//! TLOB's spatial CNN and its projection (about 44% of its FLOPs at the
//! defaults) see one snapshot at a time, so a snapshot's token does not
//! change while it stays in the window, provided its input row does not:
//! that holds under the `snapshot` input normalization
//! (`TlobConfig::lob_normalization`), not under `window`, which renormalizes
//! every row on every tick. `TlobTick` keeps each symbol's last `T` tokens in
//! a ring; a tick encodes only the new snapshots (one `Encode` pass, batch =
//! symbols) and runs the rest of the forward from the tokens (one `Tokens`
//! pass). The outputs have the bits of a whole forward over the same rows:
//! the encoding is per snapshot in both, and the rest is the same ops on the
//! same values (`tests/tlob_tick.rs`).

use super::{Model, ModelConfig, Outputs};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// The most symbols one tick takes (a batch the server bounds anyway).
pub const MAX_SYMBOLS: usize = 4096;

/// Every symbol's last `T` snapshot tokens, and the buffers a tick reuses.
pub struct TlobTick {
    symbols: usize,
    /// `T`, `D`, and the values of one input snapshot (`L · F`).
    steps: usize,
    dim: usize,
    row_len: usize,
    /// `(symbols, T, D)`: slot `i` of symbol `s` at `(s · T + i) · D`.
    ring: Vec<f32>,
    /// The slot the next snapshot's token goes to (all symbols tick together).
    next: usize,
    /// Snapshots held per symbol, up to `T`.
    filled: usize,
    encoded: Tensor,
    tokens: Tensor,
}

impl TlobTick {
    /// An empty tick for `symbols` symbols of `model` (a TLOB model).
    pub fn new<B: Backend>(model: &Model<B>, symbols: usize) -> Result<Self> {
        let ModelConfig::Tlob(c) = model.config() else {
            return Err(Error::input("model", format!("a tick cache is TLOB's, this model is {}", model.kind())));
        };
        if symbols == 0 || symbols > MAX_SYMBOLS {
            return Err(Error::input("symbols", format!("must be 1..={MAX_SYMBOLS}, got {symbols}")));
        }
        let (steps, dim) = (c.sequence_length, c.temporal_hidden);
        Ok(TlobTick {
            symbols,
            steps,
            dim,
            row_len: c.num_levels * c.lob_features,
            ring: vec![0.0; symbols * steps * dim],
            next: 0,
            filled: 0,
            encoded: Tensor::zeros(vec![symbols, dim]),
            tokens: Tensor::zeros(vec![symbols, steps, dim]),
        })
    }

    pub fn symbols(&self) -> usize {
        self.symbols
    }

    /// Snapshots held per symbol (at most `T`); `forward_into` needs `T`.
    pub fn filled(&self) -> usize {
        self.filled
    }

    /// Forgets every snapshot (a gap in the stream).
    pub fn clear(&mut self) {
        self.filled = 0;
        self.next = 0;
    }

    /// Adds one snapshot per symbol, `rows (symbols, L, F)` (each a TLOB
    /// input row), dropping each symbol's oldest once `T` are held.
    pub fn push<B: Backend>(&mut self, model: &mut Model<B>, be: &B, rows: &Tensor) -> Result<()> {
        if rows.shape.first() != Some(&self.symbols) || rows.data.len() != self.symbols * self.row_len {
            return Err(Error::input(
                "rows",
                format!(
                    "expected ({}, L, F) = {} values a symbol, got shape {:?}",
                    self.symbols, self.row_len, rows.shape
                ),
            ));
        }
        model.encode_snapshots_into(be, rows, &mut self.encoded)?;
        let (t, d) = (self.steps, self.dim);
        for s in 0..self.symbols {
            let slot = (s * t + self.next) * d;
            self.ring[slot..slot + d].copy_from_slice(&self.encoded.data[s * d..(s + 1) * d]);
        }
        self.next = (self.next + 1) % t;
        self.filled = (self.filled + 1).min(t);
        Ok(())
    }

    /// The forward of every symbol's window (its last `T` snapshots, oldest
    /// first), batch = symbols, with the optional `aux (symbols, A)`.
    pub fn forward_into<B: Backend>(
        &mut self,
        model: &mut Model<B>,
        be: &B,
        aux: Option<&Tensor>,
        out: &mut Outputs,
    ) -> Result<()> {
        let (t, d) = (self.steps, self.dim);
        if self.filled < t {
            return Err(Error::input(
                "tick",
                format!("a window needs {t} snapshots, {} pushed so far: push more before the forward", self.filled),
            ));
        }
        // Full, so the oldest slot is the next one to be written.
        let (older, newer) = (t - self.next, self.next);
        for s in 0..self.symbols {
            let ring = &self.ring[s * t * d..(s + 1) * t * d];
            let window = &mut self.tokens.data[s * t * d..(s + 1) * t * d];
            window[..older * d].copy_from_slice(&ring[newer * d..]);
            window[older * d..].copy_from_slice(&ring[..newer * d]);
        }
        model.forward_tokens_into(be, &self.tokens, aux, out)
    }
}
