//! Column sums over a strided view, the GPU's reduction for the gradients
//! that sum an output gradient over rows: the conv's bias, the patch
//! embedding's bias, class token and position embedding, the linear
//! backward's bias (`kernels/column_sum.cu`).
//!
//! Not a `Train` op of its own: the ops above call it. On the CPU each of
//! them sums in its own loops (the linear and conv biases through
//! `linear::col_sums`, in row chunks); here one thread per column sums in
//! (group, row) order, so the bits do not depend on scheduling (they may
//! differ from the CPU's in the last place: the tests compare within
//! docs/models.md's tolerance).
//!
//! Here: the reference, the parameter struct, the launch and the tests.

use crate::backend::gpu::launch;
use crate::backend::gpu::params::{params, KernelParams};
use crate::backend::gpu::{launch_nonempty, Device, Gpu};
use crate::error::Result;

/// `dst[c] += Σ_{g < groups} Σ_{r < rows} src[g·group_stride + r·row_stride + offset + c]`
/// for `c < n`: a bias (rows of dy, possibly at a column offset), the class
/// token (row 0 of every sample), the position embedding (`n = tokens·dim`,
/// one row per sample).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ColumnSum {
    pub(crate) n: usize,
    pub(crate) groups: usize,
    pub(crate) rows: usize,
    pub(crate) group_stride: usize,
    pub(crate) row_stride: usize,
    pub(crate) offset: usize,
}

impl ColumnSum {
    /// The columns `offset..offset + n` of `rows` rows of `row_stride` values.
    pub(crate) fn rows(n: usize, rows: usize, row_stride: usize, offset: usize) -> Self {
        ColumnSum { n, groups: 1, rows, group_stride: 0, row_stride, offset }
    }

    /// Values of `src` the sum reads up to (one past the last).
    pub(crate) fn extent(&self) -> usize {
        if self.n == 0 || self.groups == 0 || self.rows == 0 {
            return 0;
        }
        (self.groups - 1) * self.group_stride + (self.rows - 1) * self.row_stride + self.offset + self.n
    }
}

/// The sum on plain vectors, added to `dst0`.
#[cfg(test)]
pub(crate) fn reference(src: &[f64], dst0: &[f64], s: ColumnSum) -> Vec<f64> {
    let mut dst = dst0.to_vec();
    for (c, d) in dst.iter_mut().enumerate().take(s.n) {
        for g in 0..s.groups {
            for r in 0..s.rows {
                *d += src[g * s.group_stride + r * s.row_stride + s.offset + c];
            }
        }
    }
    dst
}

params!(
    /// `kernels/column_sum.cu` ColumnSumParams.
    ColumnSumParams => ColumnSum {
        src: u64, dst: u64, n: i32, groups: i32, rows: i32, group_stride: i32, row_stride: i32, offset: i32,
    }
);

/// `dst[..s.n] +=` the column sums of `src`, for `op`. The callers check
/// their buffers under their own names first; the extents are checked here
/// again so no caller's slip becomes an out-of-bounds launch, and every
/// stride and count must be an `int`.
pub(crate) fn sum_gpu<D: Device>(gpu: &Gpu<D>, op: &str, src: &D::Mem, dst: &mut D::Mem, s: ColumnSum) -> Result<()> {
    if s.n == 0 || s.groups == 0 || s.rows == 0 {
        return Ok(());
    }
    gpu.check(op, "column-sum source", src, s.extent())?;
    gpu.check(op, "column-sum destination", dst, s.n)?;
    let dev = gpu.device();
    let p = ColumnSumParams {
        src: dev.ptr(src),
        dst: dev.ptr_mut(dst),
        n: gpu.int(op, s.n)?,
        groups: gpu.int(op, s.groups)?,
        rows: gpu.int(op, s.rows)?,
        group_stride: gpu.int(op, s.group_stride)?,
        row_stride: gpu.int(op, s.row_stride)?,
        offset: gpu.int(op, s.offset)?,
    };
    launch_nonempty(gpu, launch::elementwise(s.n)?, &p)
}

/// This module's parameter struct, checked against its C size.
#[cfg(test)]
pub(crate) fn parameter_structs_checked() -> Vec<crate::backend::gpu::Kernel> {
    vec![crate::backend::gpu::emu::c_size_agrees::<ColumnSumParams>()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::gpu::Emu;
    use crate::backend::ops::testing::{data, read_close, same_bits_in_every_order, wide};
    use crate::backend::Backend;

    /// A bias at a column offset, a class token (row 0 of each group), a
    /// position table (one row per group), and empty sums.
    fn cases() -> [ColumnSum; 5] {
        [
            ColumnSum::rows(5, 37, 12, 4),
            ColumnSum { n: 8, groups: 3, rows: 1, group_stride: 40, row_stride: 8, offset: 0 },
            ColumnSum { n: 40, groups: 3, rows: 1, group_stride: 40, row_stride: 0, offset: 0 },
            ColumnSum::rows(5, 0, 12, 4),
            ColumnSum { n: 0, groups: 2, rows: 2, group_stride: 4, row_stride: 2, offset: 0 },
        ]
    }

    #[test]
    fn the_emulator_matches_the_reference_with_the_same_bits_in_every_order() {
        same_bits_in_every_order(|gpu, what| {
            let mut out = Vec::new();
            for (i, s) in cases().into_iter().enumerate() {
                let (src, dst0) = (data(s.extent().max(1), i as u64, 1.0), data(s.n.max(1), 50 + i as u64, 1.0));
                let mut dst = gpu.upload(&dst0).unwrap();
                sum_gpu(gpu, "column_sum", &gpu.upload(&src).unwrap(), &mut dst, s).unwrap();
                out.push(read_close(gpu, &dst, &format!("{what} {s:?}"), &reference(&wide(&src), &wide(&dst0), s)));
            }
            out
        });
    }

    #[test]
    fn a_view_past_the_source_or_an_int_is_refused() {
        let gpu = Gpu::new(Emu::new());
        let (src, mut dst) = (gpu.alloc(4).unwrap(), gpu.alloc(4).unwrap());
        let s = ColumnSum { n: 1, groups: 2, rows: 1, group_stride: 1 << 31, row_stride: 0, offset: 0 };
        let e = sum_gpu(&gpu, "conv1d_backward", &src, &mut dst, s).unwrap_err().to_string();
        assert!(e.contains("conv1d_backward: buffer column-sum source"), "{e}");
        // One group: the stride is never stepped, but must still be an int.
        let one = ColumnSum { groups: 1, ..s };
        let e = sum_gpu(&gpu, "conv1d_backward", &src, &mut dst, one).unwrap_err().to_string();
        assert!(e.contains("conv1d_backward") && e.contains("int range"), "{e}");
        let e = sum_gpu(&gpu, "bias", &src, &mut dst, ColumnSum::rows(5, 1, 5, 0)).unwrap_err().to_string();
        assert!(e.contains("bias: buffer column-sum source"), "{e}");
    }

    #[test]
    fn the_extent_is_one_past_the_last_value_read() {
        assert_eq!(ColumnSum::rows(5, 37, 12, 4).extent(), 36 * 12 + 4 + 5);
        assert_eq!(ColumnSum::rows(5, 0, 12, 4).extent(), 0);
    }
}
