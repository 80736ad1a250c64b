//! The inverted-dropout mask: `mask[i] = 0` with probability `p`, else
//! `1 / (1 − p)`, value `i` decided by word `i` of the ChaCha8 stream
//! `ChaCha8Rng::seed_from_u64(seed)` on stream `stream` (below `p·2³²`:
//! dropped), so a model's masks are the same bits on every backend.
//!
//! Every piece of the op but its signature (`Train::dropout_mask`) and its
//! kernel (`kernels/dropout.cu`):
//! - the checks (the buffer's length, `p` in `[0, 1)`), one list for both
//!   backends;
//! - the reference: the stream drawn in one sequence by `rand_chacha`;
//! - the CPU: chunks of the mask on rayon's threads, each seeking to its
//!   first word, so the same words land on the same values;
//! - the GPU: the kernel's parameter struct (the key `seed_from_u64`
//!   derives, for the kernel's own ChaCha8), launch rule and launch;
//! - the tests: the CPU and the emulator against the reference bit for bit
//!   in every thread order; the refusals; the launch rule.
//!
//! Also exercised from `tests/`: against the CPU on the emulator and on a
//! GPU through `tests/common/train_elementwise.rs` (`dropout_mask_bits`).

use rand_chacha::rand_core::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::backend::cpu::check_len;
use crate::backend::gpu::launch::cfg;
use crate::backend::gpu::params::{params, KernelParams};
use crate::backend::gpu::{Device, Gpu, LaunchConfig};
use crate::error::{Error, Result};

const OP: &str = "dropout_mask";

/// The checks, in this order: the mask's length, then the drop rate (an
/// error of the backend's kind, `refuse`).
fn check<B: ?Sized>(
    mask: &B,
    len: usize,
    p: f32,
    check: impl Fn(&str, &B, usize) -> Result<()>,
    refuse: impl Fn(String) -> Error,
) -> Result<()> {
    check("mask", mask, len)?;
    if !(0.0..1.0).contains(&p) {
        return Err(refuse(format!("{OP}: p = {p} not in [0, 1)")));
    }
    Ok(())
}

/// Values below which a stream word drops its value: `p·2³²`.
fn cut(p: f32) -> u64 {
    (f64::from(p) * 4_294_967_296.0) as u64
}

/// The mask drawn in one sequence.
pub fn reference(len: usize, p: f32, seed: u64, stream: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    (0..len).map(|_| if u64::from(rng.next_u32()) < cut(p) { 0.0 } else { 1.0 / (1.0 - p) }).collect()
}

/// `Train::dropout_mask` on the CPU.
pub(crate) fn mask_cpu(mask: &mut [f32], len: usize, p: f32, seed: u64, stream: u64) -> Result<()> {
    check(
        &*mask,
        len,
        p,
        |what, b: &[f32], need| check_len(OP, what, b.len(), need),
        |reason| Error::Backend { backend: "cpu".into(), reason },
    )?;
    let mask = &mut mask[..len];
    let keep = 1.0 / (1.0 - p);
    // Drop when a uniform u32 falls below p·2³².
    let cut = cut(p);
    // Element i takes word i of the stream whatever the chunking: each chunk
    // seeks to its first word, so chunks run in parallel and the mask is
    // the same as drawn in one sequence.
    const CHUNK: usize = 1 << 14;
    mask.par_chunks_mut(CHUNK).enumerate().for_each(|(c, part)| {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(stream);
        rng.set_word_pos((c * CHUNK) as u128);
        for m in part.iter_mut() {
            *m = if u64::from(rng.next_u32()) < cut { 0.0 } else { keep };
        }
    });
    Ok(())
}

params!(
    /// `kernels/dropout.cu` DropoutParams: ChaCha8 `key` words, stream id, drop threshold.
    DropoutParams => DropoutMask { mask: u64, stream: u64, cut: u64, key: [u32; 8], n: i32, keep: f32 }
);

/// dropout.cu DROPOUT_THREADS and the mask values one block covers per
/// pass (16 ChaCha words per thread).
const DROPOUT_THREADS: u32 = 256;
const DROPOUT_TILE: usize = DROPOUT_THREADS as usize * 16;

/// `quorum_dropout_mask`: one 256-thread block per 4096 values per pass.
fn launch_cfg(n: usize) -> Result<LaunchConfig> {
    cfg([n.div_ceil(DROPOUT_TILE).clamp(1, 1024), 1, 1], DROPOUT_THREADS, 0)
}

/// `Train::dropout_mask` on a `Gpu`: the CPU's mask bit for bit; the key is
/// the seed `ChaCha8Rng::seed_from_u64` derives, the kernel runs the
/// ChaCha8 block function on it with the same counter and stream words.
pub(crate) fn mask_gpu<D: Device>(
    gpu: &Gpu<D>,
    mask: &mut D::Mem,
    len: usize,
    p: f32,
    seed: u64,
    stream: u64,
) -> Result<()> {
    check(&*mask, len, p, |what, m, need| gpu.check(OP, what, m, need), |reason| gpu.err(reason))?;
    let bytes = ChaCha8Rng::seed_from_u64(seed).get_seed();
    let key = std::array::from_fn(|i| u32::from_le_bytes([0, 1, 2, 3].map(|j| bytes[4 * i + j])));
    let dev = gpu.device();
    let prm = DropoutParams {
        mask: dev.ptr_mut(mask),
        stream,
        cut: cut(p),
        key,
        n: gpu.int(OP, len)?,
        keep: 1.0 / (1.0 - p),
    };
    // SAFETY: mask checked above.
    unsafe { dev.launch(launch_cfg(len)?, &prm) }
}

/// This op's parameter struct, checked against its C size.
#[cfg(test)]
pub(crate) fn parameter_structs_checked() -> Vec<crate::backend::gpu::Kernel> {
    vec![crate::backend::gpu::emu::c_size_agrees::<DropoutParams>()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::ops::testing::emulator_gives_the_cpus_bits;
    use crate::backend::Train;
    use crate::Cpu;

    /// Every case on `be`, against the reference bit for bit (over a buffer
    /// one longer, whose last value must stay); the bits.
    fn run<B: Train>(be: &B, what: &str) -> Vec<Vec<u32>> {
        let mut bits = Vec::new();
        // Within one block, across blocks and the CPU's chunks of 16384.
        for len in [0usize, 1, 15, 17, 4097, 40_000] {
            for (seed, stream) in [(0u64, 0u64), (0x1234_5678_9abc_def0, 12_345)] {
                for p in [0.0f32, 0.3] {
                    let mut m = be.upload(&vec![7.0; len + 1]).unwrap();
                    be.dropout_mask(&mut m, len, p, seed, stream).unwrap();
                    let mut got = vec![0f32; len + 1];
                    be.read(&m, &mut got).unwrap();
                    let mut want = reference(len, p, seed, stream);
                    want.push(7.0);
                    let case = format!("{what} len {len} seed {seed} stream {stream} p {p}");
                    assert!(got.iter().zip(&want).all(|(g, w)| g.to_bits() == w.to_bits()), "{case}");
                    bits.push(got.iter().map(|v| v.to_bits()).collect());
                }
            }
        }
        bits
    }

    #[test]
    fn cpu_and_emulator_give_the_references_bits() {
        emulator_gives_the_cpus_bits(&run(&Cpu::new(), "cpu"), run);
    }

    #[test]
    fn a_quarter_is_dropped_at_p_one_quarter() {
        let m = reference(100_000, 0.25, 5, 6);
        let dropped = m.iter().filter(|v| **v == 0.0).count();
        assert!((23_500..26_500).contains(&dropped), "{dropped} of 100000 dropped");
        assert!(m.iter().all(|v| *v == 0.0 || *v == 1.0 / 0.75));
    }

    #[test]
    fn bad_rates_and_short_buffers_are_refused_by_both_backends() {
        fn refuses<B: Train>(be: &B) {
            let mut m = be.alloc(4).unwrap();
            for p in [1.0, -0.1, f32::NAN] {
                let err = be.dropout_mask(&mut m, 4, p, 1, 1).unwrap_err().to_string();
                assert!(err.contains("dropout_mask: p = "), "{}: {err}", be.name());
            }
            let err = be.dropout_mask(&mut m, 5, 0.5, 1, 1).unwrap_err().to_string();
            assert!(err.contains("dropout_mask: buffer mask "), "{}: {err}", be.name());
        }
        refuses(&Cpu::new());
        refuses(&Gpu::new(crate::backend::gpu::Emu::new()));
    }

    #[test]
    fn launch_rule_and_parameter_size() {
        // Moved from gpu/train/elementwise.rs.
        assert_eq!(std::mem::size_of::<DropoutParams>(), 3 * 8 + 8 * 4 + 2 * 4);
        assert_eq!(launch_cfg(1).unwrap().grid, [1, 1, 1]);
        assert_eq!(launch_cfg(4097).unwrap().grid, [2, 1, 1]);
        assert_eq!(launch_cfg(100_000_000).unwrap().grid, [1024, 1, 1]);
    }
}
