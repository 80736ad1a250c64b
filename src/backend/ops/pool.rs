//! Sequence pooling, `x (batch, tokens, dim)` → `out (batch, dim)`: the
//! first token, the mean over the tokens or the last token (`Pool`), and its
//! backward, which writes all of `dx (batch, tokens, dim)`.
//!
//! Every piece of the op but its signatures (`Backend::pool`,
//! `Train::pool_backward`) and its kernels (`kernels/pool.cu`):
//! - the shape checks, one list for both backends (zero tokens: the GPU
//!   refuses the forward, both refuse the backward; the CPU's forward does not
//!   check it, as before the move);
//! - the reference, plain f64 loops the tests compare with;
//! - the CPU: plain loops, the mean summed token by token in order (the
//!   kernels' order, so CPU and GPU agree bit for bit);
//! - the GPU: the two kernels' parameter structs and launches (grid-stride,
//!   a thread per output value, `launch::elementwise`);
//! - the tests: the CPU and the emulator against the reference, and each
//!   other bit for bit, in every mode; the refusals.
//!
//! Also exercised from `tests/`: against the CPU on the emulator and on a
//! GPU through `tests/common/kernels.rs` (`elementwise_ops`) and
//! `tests/common/train_elementwise.rs` (`pool_backward_all_modes`).

use crate::backend::cpu::{check_len, refuse};
use crate::backend::gpu::launch;
use crate::backend::gpu::params::{params, KernelParams};
use crate::backend::gpu::{Device, Gpu};
use crate::backend::Pool;
use crate::error::Result;

const OP: &str = "pool";
const OP_BACKWARD: &str = "pool_backward";

// ------------------------------------------------------------------ shapes

/// The forward's buffers and the values each must hold, checked in this order.
fn check_forward<B: ?Sized>(
    x: &B,
    out: &B,
    batch: usize,
    tokens: usize,
    dim: usize,
    check: impl Fn(&str, &B, usize) -> Result<()>,
) -> Result<()> {
    check("x", x, batch * tokens * dim)?;
    check("out", out, batch * dim)
}

/// The backward's buffers and the values each must hold, checked in this order.
fn check_backward<B: ?Sized>(
    dout: &B,
    dx: &B,
    batch: usize,
    tokens: usize,
    dim: usize,
    check: impl Fn(&str, &B, usize) -> Result<()>,
) -> Result<()> {
    check("dout", dout, batch * dim)?;
    check("dx", dx, batch * tokens * dim)
}

// --------------------------------------------------------------- reference

/// The forward in f64: `out (batch, dim)`.
pub fn reference_forward(x: &[f64], batch: usize, tokens: usize, dim: usize, how: Pool) -> Vec<f64> {
    let mut out = Vec::with_capacity(batch * dim);
    for b in 0..batch {
        let at = |t: usize, c: usize| x[(b * tokens + t) * dim + c];
        for c in 0..dim {
            out.push(match how {
                Pool::First => at(0, c),
                Pool::Last => at(tokens - 1, c),
                Pool::Mean => (0..tokens).map(|t| at(t, c)).sum::<f64>() / tokens as f64,
            });
        }
    }
    out
}

/// The backward in f64: `dx (batch, tokens, dim)` from `dout (batch, dim)`.
pub fn reference_backward(dout: &[f64], batch: usize, tokens: usize, dim: usize, how: Pool) -> Vec<f64> {
    let mut dx = Vec::with_capacity(batch * tokens * dim);
    for b in 0..batch {
        for t in 0..tokens {
            for c in 0..dim {
                let g = dout[b * dim + c];
                dx.push(match how {
                    Pool::First => f64::from(u8::from(t == 0)) * g,
                    Pool::Last => f64::from(u8::from(t == tokens - 1)) * g,
                    Pool::Mean => g / tokens as f64,
                });
            }
        }
    }
    dx
}

// --------------------------------------------------------------------- CPU

/// `Backend::pool` on the CPU.
pub(crate) fn forward_cpu(
    x: &[f32],
    out: &mut [f32],
    batch: usize,
    tokens: usize,
    dim: usize,
    how: Pool,
) -> Result<()> {
    check_forward(x, out, batch, tokens, dim, |what, b: &[f32], need| check_len(OP, what, b.len(), need))?;
    if tokens == 0 {
        // There is no first, last or mean token (the GPU refuses it too).
        return Err(refuse(OP, "zero tokens"));
    }
    if batch == 0 || dim == 0 {
        return Ok(());
    }
    for bi in 0..batch {
        let seq = &x[bi * tokens * dim..(bi + 1) * tokens * dim];
        let o = &mut out[bi * dim..(bi + 1) * dim];
        match how {
            Pool::First => o.copy_from_slice(&seq[..dim]),
            Pool::Last => o.copy_from_slice(&seq[(tokens - 1) * dim..]),
            Pool::Mean => {
                o.fill(0.0);
                for row in seq.chunks(dim) {
                    o.iter_mut().zip(row).for_each(|(a, v)| *a += v);
                }
                let inv = 1.0 / tokens as f32;
                o.iter_mut().for_each(|a| *a *= inv);
            }
        }
    }
    Ok(())
}

/// `Train::pool_backward` on the CPU.
pub(crate) fn backward_cpu(
    dout: &[f32],
    dx: &mut [f32],
    batch: usize,
    tokens: usize,
    dim: usize,
    how: Pool,
) -> Result<()> {
    check_backward(dout, dx, batch, tokens, dim, |what, b: &[f32], need| check_len(OP_BACKWARD, what, b.len(), need))?;
    if tokens == 0 {
        return Err(refuse(OP_BACKWARD, "zero tokens"));
    }
    if batch == 0 || dim == 0 {
        return Ok(());
    }
    for bi in 0..batch {
        let g = &dout[bi * dim..(bi + 1) * dim];
        let seq = &mut dx[bi * tokens * dim..(bi + 1) * tokens * dim];
        match how {
            Pool::First | Pool::Last => {
                seq.fill(0.0);
                let t = if how == Pool::First { 0 } else { tokens - 1 };
                seq[t * dim..(t + 1) * dim].copy_from_slice(g);
            }
            Pool::Mean => {
                let inv = 1.0 / tokens as f32;
                for row in seq.chunks_mut(dim) {
                    row.iter_mut().zip(g).for_each(|(a, v)| *a = v * inv);
                }
            }
        }
    }
    Ok(())
}

// --------------------------------------------------------------------- GPU

params!(
    /// `kernels/pool.cu` PoolParams (mode 0 first, 1 mean, 2 last)
    PoolParams => Pool { x: u64, out: u64, batch: i32, tokens: i32, dim: i32, mode: i32 }
);
params!(
    /// `kernels/pool.cu` PoolBackwardParams (mode 0 first, 1 mean, 2 last)
    PoolBackwardParams => PoolBackward { dout: u64, dx: u64, batch: i32, tokens: i32, dim: i32, mode: i32 }
);

/// The kernels' `mode`.
fn mode(how: Pool) -> i32 {
    match how {
        Pool::First => 0,
        Pool::Mean => 1,
        Pool::Last => 2,
    }
}

/// `Backend::pool` on a `Gpu`: one launch of `quorum_pool`, a thread per output value.
pub(crate) fn forward_gpu<D: Device>(
    gpu: &Gpu<D>,
    x: &D::Mem,
    out: &mut D::Mem,
    batch: usize,
    tokens: usize,
    dim: usize,
    how: Pool,
) -> Result<()> {
    check_forward(x, &*out, batch, tokens, dim, |what, m, need| gpu.check(OP, what, m, need))?;
    if tokens == 0 {
        return Err(gpu.err("pool: zero tokens".into()));
    }
    let dev = gpu.device();
    let p = PoolParams {
        x: dev.ptr(x),
        out: dev.ptr_mut(out),
        batch: gpu.int(OP, batch)?,
        tokens: gpu.int(OP, tokens)?,
        dim: gpu.int(OP, dim)?,
        mode: mode(how),
    };
    // SAFETY: sizes checked above.
    unsafe { dev.launch(launch::elementwise(batch * dim)?, &p) }
}

/// `Train::pool_backward` on a `Gpu`: one launch of `quorum_pool_backward`,
/// a thread per value of `dx`.
pub(crate) fn backward_gpu<D: Device>(
    gpu: &Gpu<D>,
    dout: &D::Mem,
    dx: &mut D::Mem,
    batch: usize,
    tokens: usize,
    dim: usize,
    how: Pool,
) -> Result<()> {
    let op = OP_BACKWARD;
    check_backward(dout, &*dx, batch, tokens, dim, |what, m, need| gpu.check(op, what, m, need))?;
    if tokens == 0 {
        return Err(gpu.err(format!("{op}: zero tokens")));
    }
    gpu.int(op, batch * tokens * dim)?;
    let dev = gpu.device();
    let p = PoolBackwardParams {
        dout: dev.ptr(dout),
        dx: dev.ptr_mut(dx),
        batch: gpu.int(op, batch)?,
        tokens: gpu.int(op, tokens)?,
        dim: gpu.int(op, dim)?,
        mode: mode(how),
    };
    // SAFETY: sizes checked above.
    unsafe { dev.launch(launch::elementwise(batch * tokens * dim)?, &p) }
}

/// This op's parameter structs, each checked against its C size.
#[cfg(test)]
pub(crate) fn parameter_structs_checked() -> Vec<crate::backend::gpu::Kernel> {
    use crate::backend::gpu::emu::c_size_agrees;
    vec![c_size_agrees::<PoolParams>(), c_size_agrees::<PoolBackwardParams>()]
}

// ------------------------------------------------------------------- tests

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::gpu::Emu;
    use crate::backend::ops::testing::{data, emulator_gives_the_cpus_bits, read_close, wide};
    use crate::backend::{Backend, Train};
    use crate::Cpu;

    /// (batch, tokens, dim): MPD's and TLOB's sequences, one token, odd widths.
    const SHAPES: [(usize, usize, usize); 4] = [(3, 49, 112), (1, 1, 5), (17, 100, 33), (2, 7, 1)];
    const MODES: [Pool; 3] = [Pool::First, Pool::Mean, Pool::Last];

    /// Forward and backward on `be`, through the traits, against the
    /// reference; returns both outputs' bits for comparing backends.
    fn run<B: Train>(be: &B, what: &str) -> Vec<Vec<u32>> {
        let mut bits = Vec::new();
        for (i, &(batch, tokens, dim)) in SHAPES.iter().enumerate() {
            let x = data(batch * tokens * dim, 1 + i as u64, 2.0);
            let dout = data(batch * dim, 100 + i as u64, 1.0);
            for how in MODES {
                let what = format!("{what} {how:?} {batch}x{tokens}x{dim}");
                let mut out = be.upload(&vec![f32::NAN; batch * dim]).unwrap();
                be.pool(&be.upload(&x).unwrap(), &mut out, batch, tokens, dim, how).unwrap();
                let want = reference_forward(&wide(&x), batch, tokens, dim, how);
                bits.push(read_close(be, &out, &format!("{what}: out"), &want));
                // dx starts as garbage: the backward writes all of it.
                let mut dx = be.upload(&vec![f32::NAN; batch * tokens * dim]).unwrap();
                be.pool_backward(&be.upload(&dout).unwrap(), &mut dx, batch, tokens, dim, how).unwrap();
                let want = reference_backward(&wide(&dout), batch, tokens, dim, how);
                bits.push(read_close(be, &dx, &format!("{what}: dx"), &want));
            }
        }
        bits
    }

    #[test]
    fn cpu_and_emulator_match_the_reference_and_each_other_bit_for_bit() {
        emulator_gives_the_cpus_bits(&run(&Cpu::new(), "cpu"), run);
    }

    #[test]
    fn short_buffers_and_zero_tokens_are_refused() {
        fn refuses<B: Train>(be: &B) {
            let z = |n: usize| be.alloc(n).unwrap();
            let (batch, tokens, dim) = (2, 3, 4);
            let fwd = |x, o| be.pool(&z(x), &mut z(o), batch, tokens, dim, Pool::Mean);
            fwd(24, 8).unwrap();
            assert!(fwd(23, 8).unwrap_err().to_string().contains("pool: buffer x "));
            assert!(fwd(24, 7).unwrap_err().to_string().contains("pool: buffer out "));
            let bwd = |d, x, tokens| be.pool_backward(&z(d), &mut z(x), batch, tokens, dim, Pool::Mean);
            bwd(8, 24, tokens).unwrap();
            assert!(bwd(7, 24, tokens).unwrap_err().to_string().contains("pool_backward: buffer dout "));
            assert!(bwd(8, 23, tokens).unwrap_err().to_string().contains("pool_backward: buffer dx "));
            assert!(bwd(8, 24, 0).unwrap_err().to_string().contains("pool_backward: zero tokens"));
        }
        refuses(&Cpu::new());
        let gpu = Gpu::new(Emu::new());
        refuses(&gpu);
        let err = gpu.pool(&gpu.alloc(1).unwrap(), &mut gpu.alloc(8).unwrap(), 2, 0, 4, Pool::First).unwrap_err();
        assert!(err.to_string().contains("pool: zero tokens"), "{err}");
    }
}
