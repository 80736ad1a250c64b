//! The CPU backend: the reference every other backend is tested against, and a
//! fast path in its own right: hand-written AVX-512 products over the weights
//! as prepared at load (`small_gemm`), each batch-1 op split across two cores
//! (`pair`), fused loops (`simd`), the `gemm` crate where AVX-512 is missing
//! and for attention; f32, bf16 products on CPUs with AVX512_BF16 (`bf16`),
//! or int8 products on CPUs with AVX512_VNNI (`int8`).
//!
//! Buffers are plain `Vec<f32>` (bf16 and int8 weights are stored bit for bit).
//! Scratch space (padded inputs, patches, gates, bf16 pairs) lives in
//! thread-local vectors that grow to the largest size seen and are reused:
//! after the first forward at a given batch size, nothing allocates.

pub mod affinity;
pub(crate) mod amx;
pub(crate) mod bf16;
pub mod int8;
pub(crate) mod pair;
pub mod simd;
pub(crate) mod small_gemm;
mod strided_gemm;

pub use pair::pin_helper;
pub(crate) use strided_gemm::{add_weight_grad, gemm_depth_halves, gemm_strided, rows_product, Dst, View};

use std::cell::RefCell;
use std::ops::Range;

use rayon::prelude::*;
use small_gemm::Elem;

use super::{
    AttentionShape, Backend, BroadcastShape, ConvShape, ConvWeights, Epilogue, HeadsOut, HeadsRef, LinearShape,
    LstmShape, PatchShape, Pool, Precision,
};
use crate::error::{Error, Result};

/// Rows × columns below which an elementwise pass is not worth splitting across threads.
pub(crate) const PAR_MIN_ELEMS: usize = 1 << 15;

/// Values per rayon task of an elementwise pass over a flat buffer; below
/// one chunk the pass stays on the calling thread.
pub(crate) const ELEM_CHUNK: usize = 1 << 14;

/// Rows per chunk of a parallel row reduction (fixed, so results do not
/// depend on the thread count).
pub(crate) const ROW_CHUNK: usize = 64;

#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu {
    precision: Precision,
}

impl Cpu {
    /// f32 throughout: docs/models.md's f32 tolerances, and the reference the
    /// other backends are tested against.
    pub fn new() -> Self {
        Cpu { precision: Precision::F32 }
    }

    /// `Precision::Bf16` stores the matrix-product weights as bf16 and
    /// multiplies with AVX512_BF16 (`bf16.rs`); `Precision::Int8` quantizes
    /// the linear, conv and recurrent weights and multiplies with
    /// AVX512_VNNI (`int8.rs`). Each fails on a CPU
    /// without its extensions, and f16 fails: CPUs here cannot multiply it
    /// natively.
    pub fn with_precision(precision: Precision) -> Result<Self> {
        match precision {
            Precision::F32 => Ok(Cpu::new()),
            Precision::Bf16 if small_gemm::bf16_available() => Ok(Cpu { precision }),
            Precision::Bf16 => Err(Error::config(
                "precision",
                "bf16 on the CPU backend needs AVX512_BF16 (and AVX-512F), which this CPU lacks; use f32",
            )),
            Precision::Int8 if small_gemm::int8_available() => Ok(Cpu { precision }),
            Precision::Int8 => Err(Error::config(
                "precision",
                "int8 on the CPU backend needs AVX512_VNNI (and AVX-512F), which this CPU lacks; use f32",
            )),
            Precision::F16 => Err(Error::config(
                "precision",
                "the CPU backend computes in f32, bf16 or int8 (f16 is for --backend cuda or emu)",
            )),
        }
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Values a prepared `(n_out, n_in)` weight holds in this precision.
    pub(crate) fn linear_len(&self, n_out: usize, n_in: usize) -> usize {
        match self.precision {
            Precision::Bf16 => bf16::linear_len(n_out, n_in),
            Precision::Int8 => int8::linear_len(n_out, n_in),
            Precision::F32 | Precision::F16 => n_out * n_in,
        }
    }

    /// `g`'s product (then `+ bias[j]`, GELU) for a weight from
    /// `prepare_linear`, in this backend's precision.
    pub(crate) fn product(&self, x: &[f32], w: &[f32], y: &mut [f32], g: Gemm, bias: Option<(&[f32], bool)>) {
        match self.precision {
            Precision::Bf16 => bf16::product(x, w, y, g, bias),
            Precision::Int8 => int8::product(x, w, y, g, bias),
            Precision::F32 | Precision::F16 => matmul(x, w, y, g, true, bias),
        }
    }

    /// Training on the CPU runs in f32, or with bf16 products (use_amp,
    /// docs/training.md); an int8 backend serves inference only.
    pub(crate) fn trainable(&self, op: &str) -> Result<()> {
        if !matches!(self.precision, Precision::F32 | Precision::Bf16) {
            let p = self.precision.name();
            return Err(Error::Backend {
                backend: "cpu".into(),
                reason: format!(
                    "{op}: training on the CPU runs in f32 or with bf16 products (use_amp); this backend was made with {p} weights"
                ),
            });
        }
        Ok(())
    }
}

thread_local! {
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with a thread-local scratch slice of at least `len` floats
/// (contents unspecified).
pub(crate) fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    with_local(&SCRATCH, len, f)
}

/// Runs `f` with the first `len` elements of this thread's vector in `cell`,
/// grown as needed (contents unspecified).
pub(crate) fn with_local<T: Copy + Default, R>(
    cell: &'static std::thread::LocalKey<RefCell<Vec<T>>>,
    len: usize,
    f: impl FnOnce(&mut [T]) -> R,
) -> R {
    cell.with(|s| match s.try_borrow_mut() {
        Ok(mut s) => {
            if s.len() < len {
                s.resize(len, T::default());
            }
            f(&mut s[..len])
        }
        // Re-entered: this thread stole another op's task while inside a GEMM
        // that holds the scratch. Rare; a temporary buffer keeps it correct.
        Err(_) => f(&mut vec![T::default(); len]),
    })
}

/// Fails with a backend error unless `buf` holds at least `need` values.
pub(crate) fn check_len(op: &str, what: &str, have: usize, need: usize) -> Result<()> {
    if have < need {
        return Err(Error::Backend { backend: "cpu".into(), reason: super::short_buffer(op, what, have, need) });
    }
    Ok(())
}

/// A CPU backend error of `op`: "`op`: `reason`".
pub(crate) fn refuse(op: &str, reason: impl std::fmt::Display) -> Error {
    Error::Backend { backend: "cpu".into(), reason: format!("{op}: {reason}") }
}

/// A raw pointer that may cross to rayon's threads: each task writes a
/// disjoint block of columns.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub(crate) *mut f32);
// SAFETY: only used to hand disjoint column blocks of one buffer to tasks
// that all finish before the buffer's borrow ends.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    // A method, so closures capture the wrapper rather than its raw field.
    pub(crate) fn at(self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}

/// Multiply-adds below which a product runs on one thread.
pub(crate) const PAR_MIN_MACS: usize = 1 << 17;

/// The shape of `y[.., ..n] (rows, ld_y) [+]= x (rows, k) · W`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Gemm {
    pub rows: usize,
    pub k: usize,
    pub n: usize,
    pub ld_y: usize,
    pub accumulate: bool,
}

/// `y[.., ..n] (rows, ld_y) [+]= x (rows, k) · wt (+ bias[j], GELU)` for a
/// weight prepared as `wt (k, n)` row-major (`prepare_linear`'s layout),
/// split across the cores only when `parallel` (callers that already split
/// the work across the cores pass `false`: a split inside would only add
/// scheduling).
///
/// Where AVX-512 runs, `small_gemm` reads the weight in place and adds the
/// bias per tile. Elsewhere the `gemm` crate does (it computes `dst =
/// alpha·dst + beta·lhs·rhs`, alpha and beta swapped relative to BLAS), over
/// column blocks we split across threads ourselves: at tens of rows its own
/// threading does not pay.
pub(crate) fn matmul(x: &[f32], wt: &[f32], y: &mut [f32], g: Gemm, parallel: bool, bias: Option<(&[f32], bool)>) {
    let Gemm { rows, k, n, ld_y, accumulate } = g;
    if rows == 0 || n == 0 {
        return;
    }
    assert!(x.len() >= rows * k && wt.len() >= k * n && y.len() >= (rows - 1) * ld_y + n && n <= ld_y);
    assert!(bias.is_none_or(|(b, _)| b.len() >= n));
    if small_gemm::f32_available() {
        let pr = small_gemm::Product {
            a: small_gemm::Lhs::rows(x.as_ptr() as *const u32, k),
            b: small_gemm::Operand { ptr: wt.as_ptr() as *const u32, ld: n },
            y: small_gemm::Output { ptr: y.as_mut_ptr(), ld: ld_y, accumulate },
            rows,
            depth: k,
            taps: small_gemm::Taps::ONE,
            bias: bias.map(|(b, gelu)| small_gemm::Bias { ptr: b.as_ptr(), gelu, keep: std::ptr::null_mut() }),
            dequant: None,
        };
        // SAFETY: the assertions above bound every row, column and bias the
        // kernel reads or writes.
        return unsafe { run_product(Elem::F32, &pr, n, parallel && rows * k * n >= PAR_MIN_MACS) };
    }
    let threads = if parallel { rayon::current_num_threads() } else { 1 };
    let blocks = if rows * k * n >= PAR_MIN_MACS && n >= 32 && threads > 1 { threads.min(n / 16) } else { 1 };
    // Column blocks in multiples of 16 floats (one AVX-512 register).
    let width = n.div_ceil(blocks).div_ceil(16) * 16;
    let dst = SendPtr(y.as_mut_ptr());
    let run = |j0: usize| {
        let nb = width.min(n - j0);
        // SAFETY: the assertion above bounds every (row, column) that gemm
        // touches inside x, wt and y; blocks write disjoint columns.
        unsafe {
            gemm::gemm(
                rows,
                nb,
                k,
                dst.at(j0),
                1,
                ld_y as isize,
                accumulate,
                x.as_ptr(),
                1,
                k as isize,
                wt.as_ptr().add(j0),
                1,
                n as isize,
                1.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
    };
    if blocks == 1 {
        run(0);
    } else {
        // A parallel iterator rather than scope/spawn: spawned closures are
        // boxed, and the inference path must not allocate.
        (0..n.div_ceil(width)).into_par_iter().for_each(|blk| run(blk * width));
    }
    if let Some((b, gelu)) = bias {
        bias_act(y, &b[..n], rows, ld_y, 0, gelu);
    }
}

/// `pre = x·wt + b` and `y = GELU(pre)` (dense rows of `n`) in one pass:
/// the training forward keeps the pre-activation for the backward, and
/// storing both from the tile's registers saves a pass that read `pre`
/// back and wrote `y` (at batch 32 both are far larger than the caches).
/// The same bits as the product then `Train::gelu` (`simd::gelu_avx512` is
/// the scalar GELU lane for lane). Needs AVX-512F (`small_gemm::f32_available`):
/// elsewhere the caller runs the product, then `gelu`.
pub(crate) fn matmul_gelu_keep(x: &[f32], wt: &[f32], b: &[f32], pre: &mut [f32], y: &mut [f32], s: LinearShape) {
    let LinearShape { rows, n_in: k, n_out: n } = s;
    if rows == 0 || n == 0 {
        return;
    }
    assert!(x.len() >= rows * k && wt.len() >= k * n && b.len() >= n && pre.len() >= rows * n && y.len() >= rows * n);
    assert!(small_gemm::f32_available(), "matmul_gelu_keep needs AVX-512F");
    let pr = small_gemm::Product {
        a: small_gemm::Lhs::rows(x.as_ptr() as *const u32, k),
        b: small_gemm::Operand { ptr: wt.as_ptr() as *const u32, ld: n },
        y: small_gemm::Output { ptr: y.as_mut_ptr(), ld: n, accumulate: false },
        rows,
        depth: k,
        taps: small_gemm::Taps::ONE,
        bias: Some(small_gemm::Bias { ptr: b.as_ptr(), gelu: true, keep: pre.as_mut_ptr() }),
        dequant: None,
    };
    // SAFETY: the assertion above bounds every row, column and bias the
    // kernel reads, and both outputs it writes.
    unsafe { run_product(Elem::F32, &pr, n, rows * k * n >= PAR_MIN_MACS) };
}

/// Runs `part` over the columns `0..n`: in two halves on the two cores when
/// `worth` it, split on a 16-column boundary (one AVX-512 register).
pub(crate) fn split_columns(n: usize, worth: bool, part: &(dyn Fn(Range<usize>) + Sync)) {
    if worth && n >= 32 && rayon::current_num_threads() > 1 {
        let mid = (n / 2).div_ceil(16) * 16;
        pair::run_split(mid, n, &|lo, hi| part(lo..hi));
    } else {
        part(0..n);
    }
}

/// Runs `part` over the items `0..n` (rows, tasks): in two halves on the two
/// cores when `worth` it.
pub(crate) fn split_items(n: usize, worth: bool, part: &(dyn Fn(Range<usize>) + Sync)) {
    if worth && n >= 2 && rayon::current_num_threads() > 1 {
        pair::run_split(n.div_ceil(2), n, &|lo, hi| part(lo..hi));
    } else {
        part(0..n);
    }
}

/// Runs `f(i, chunk)` for the chunks `i < n` of `data`, chunk `i` being
/// `data[i·stride..][..len]` (rows of a matrix, `len ≤ stride`), in two
/// halves on the two cores when `worth` it.
pub(crate) fn split_chunks<T: Send>(
    data: &mut [T],
    n: usize,
    stride: usize,
    len: usize,
    worth: bool,
    f: &(dyn Fn(usize, &mut [T]) + Sync),
) {
    assert!(n == 0 || (len <= stride && data.len() >= (n - 1) * stride + len));
    struct Base<T>(*mut T);
    // SAFETY: the halves take disjoint chunks of `data`, which stays borrowed
    // mutably until both are done.
    unsafe impl<T: Send> Sync for Base<T> {}
    let base = Base(data.as_mut_ptr());
    let base = &base;
    split_items(n, worth, &|range| {
        for i in range {
            // SAFETY: chunk i is inside `data` (asserted) and this half's alone.
            f(i, unsafe { std::slice::from_raw_parts_mut(base.0.wrapping_add(i * stride), len) });
        }
    });
}

/// Runs `pr` over its columns `0..n` as elements `elem`, in two halves on
/// the two cores when `worth` it.
///
/// # Safety
/// As `small_gemm::run`, for every column of `0..n`.
pub(crate) unsafe fn run_product(elem: Elem, pr: &small_gemm::Product, n: usize, worth: bool) {
    // SAFETY: the caller's; the halves write disjoint columns.
    split_columns(n, worth, &|cols| unsafe { small_gemm::run(elem, pr, cols) });
}

/// `(n_out, n_in)` row-major → `(n_in, n_out)` row-major.
pub(crate) fn transpose(w: &[f32], n_out: usize, n_in: usize) -> Vec<f32> {
    let mut t = vec![0f32; w.len()];
    for o in 0..n_out {
        for i in 0..n_in {
            t[i * n_out + o] = w[o * n_in + i];
        }
    }
    t
}

/// `(rows, cols)` → `(cols, rows)` row-major, in tiles so both sides stay in
/// cache (a plain double loop strides through the destination); runs after
/// every optimizer step for every matrix.
pub(crate) fn transpose_into(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    if rows == 0 || cols == 0 {
        return;
    }
    const T: usize = 32;
    // Parallel over destination row blocks (source column blocks): disjoint writes.
    dst.par_chunks_mut(T * rows).enumerate().for_each(|(cb, block)| {
        let c0 = cb * T;
        let c1 = (c0 + T).min(cols);
        for r0 in (0..rows).step_by(T) {
            for r in r0..(r0 + T).min(rows) {
                let row = &src[r * cols..];
                for c in c0..c1 {
                    block[(c - c0) * rows + r] = row[c];
                }
            }
        }
    });
}

/// Adds the bias (then GELU) to columns `off..off+b.len()` of every row.
pub(crate) fn bias_act(y: &mut [f32], b: &[f32], rows: usize, ld: usize, off: usize, gelu: bool) {
    let n = b.len();
    split_chunks(&mut y[off..], rows, ld, n, rows * n >= PAR_MIN_ELEMS, &|_, row| simd::bias_act_row(row, b, gelu));
}

impl Backend for Cpu {
    type Buf = Vec<f32>;
    type Graph = ();

    fn name(&self) -> &'static str {
        "cpu"
    }

    /// Fallible: a size the memory cannot hold is an error, not an abort.
    fn alloc(&self, len: usize) -> Result<Vec<f32>> {
        crate::tensor::try_zeros(len, "cpu buffer")
    }

    fn upload(&self, data: &[f32]) -> Result<Vec<f32>> {
        crate::tensor::try_copy(data, "cpu buffer")
    }

    fn prepare_recurrent(&self, w_hh: &[f32], hidden: usize) -> Result<Vec<f32>> {
        super::ops::lstm::prepare_cpu(self, w_hh, hidden)
    }

    fn prepare_linear(&self, w: &[f32], n_out: usize, n_in: usize) -> Result<Vec<f32>> {
        super::ops::linear::prepare_cpu(self, w, n_out, n_in)
    }

    fn prepare_conv(&self, w: &[f32], c_out: usize, c_in: usize, kernel: usize) -> Result<Vec<f32>> {
        super::ops::conv1d::prepare_cpu(self, w, c_out, c_in, kernel)
    }

    fn write(&self, dst: &mut Vec<f32>, src: &[f32]) -> Result<()> {
        check_len("write", "dst", dst.len(), src.len())?;
        dst[..src.len()].copy_from_slice(src);
        Ok(())
    }

    fn read(&self, src: &Vec<f32>, dst: &mut [f32]) -> Result<()> {
        check_len("read", "src", src.len(), dst.len())?;
        dst.copy_from_slice(&src[..dst.len()]);
        Ok(())
    }

    fn standardize(&self, x: &mut Vec<f32>, mean: &Vec<f32>, std: &Vec<f32>, rows: usize, dim: usize) -> Result<()> {
        super::ops::standardize::forward_cpu(x, mean, std, rows, dim)
    }

    fn linear(
        &self,
        x: &Vec<f32>,
        w: &Vec<f32>,
        b: &Vec<f32>,
        y: &mut Vec<f32>,
        s: LinearShape,
        epi: Epilogue,
    ) -> Result<()> {
        super::ops::linear::forward_cpu(self, x, w, b, y, s, epi)
    }

    fn layernorm(
        &self,
        x: &Vec<f32>,
        g: &Vec<f32>,
        b: &Vec<f32>,
        y: &mut Vec<f32>,
        rows: usize,
        dim: usize,
    ) -> Result<()> {
        super::ops::layernorm::forward_cpu(x, g, b, y, rows, dim)
    }

    fn attention(&self, qkv: &Vec<f32>, out: &mut Vec<f32>, s: AttentionShape) -> Result<()> {
        super::ops::attention::forward_cpu(qkv, out, s)
    }

    fn patch_embed(
        &self,
        x: &Vec<f32>,
        w: &Vec<f32>,
        b: &Vec<f32>,
        cls: Option<&Vec<f32>>,
        pos: &Vec<f32>,
        out: &mut Vec<f32>,
        s: PatchShape,
    ) -> Result<()> {
        super::ops::patch_embed::forward_cpu(self, x, w, b, cls, pos, out, s)
    }

    fn conv1d(
        &self,
        x: &Vec<f32>,
        w: &Vec<f32>,
        b: &Vec<f32>,
        y: &mut Vec<f32>,
        s: ConvShape,
        gelu: bool,
    ) -> Result<()> {
        super::ops::conv1d::forward_cpu(self, x, w, b, y, s, gelu)
    }

    fn multiscale_conv(
        &self,
        x: &Vec<f32>,
        branches: &[ConvWeights<Self>],
        y: &mut Vec<f32>,
        samples: usize,
        len: usize,
        dim: usize,
    ) -> Result<()> {
        super::ops::conv1d::multiscale_cpu(self, x, branches, y, samples, len, dim)
    }

    fn lstm(&self, gx: &Vec<f32>, w_hh: &Vec<f32>, h_seq: &mut Vec<f32>, s: LstmShape) -> Result<()> {
        super::ops::lstm::forward_cpu(self, gx, w_hh, h_seq, s)
    }

    fn broadcast_add(&self, x: &mut Vec<f32>, src: &Vec<f32>, s: BroadcastShape) -> Result<()> {
        super::ops::broadcast_add::forward_cpu(x, src, s)
    }

    fn pool(&self, x: &Vec<f32>, out: &mut Vec<f32>, batch: usize, tokens: usize, dim: usize, how: Pool) -> Result<()> {
        super::ops::pool::forward_cpu(x, out, batch, tokens, dim, how)
    }

    fn heads(
        &self,
        z: &Vec<f32>,
        p: HeadsRef<'_, Self>,
        out: HeadsOut<'_, Self>,
        batch: usize,
        dim: usize,
    ) -> Result<()> {
        super::ops::heads::forward_cpu(z, p, out, batch, dim)
    }

    fn begin_capture(&self) -> Result<bool> {
        Ok(false)
    }

    fn end_capture(&self) -> Result<()> {
        Err(Error::Backend { backend: "cpu".into(), reason: "end_capture: the CPU backend does not record".into() })
    }

    fn replay(&self, _graph: &()) -> Result<()> {
        Err(Error::Backend { backend: "cpu".into(), reason: "replay: the CPU backend does not record".into() })
    }
}
