//! Launch configurations: grid, block and shared-memory sizes for each kernel
//! as plain functions of the problem shape, shared by every device. Each rule
//! encodes an assumption of its kernel (e.g. 256 threads for the GEMM tile);
//! the tests pin them.

use super::device::LaunchConfig;
use crate::error::{Error, Result};

/// Threads per block of the f32 GEMM tile (gemm_tile.cuh GEMM_THREADS) and its tile size.
pub const GEMM_THREADS: u32 = 256;
pub const GEMM_TILE: usize = 64;
/// Shared memory a block may use without opting in (every arch since sm_20).
pub const DEFAULT_SHARED_LIMIT: usize = 48 * 1024;
/// CUDA's limit on grid.y and grid.z.
const MAX_GRID_YZ: usize = 65_535;
/// Blocks of a grid-stride elementwise kernel: enough to fill a big GPU,
/// bounded so tiny tensors do not launch empty blocks.
const ELEMENTWISE_MAX_BLOCKS: usize = 1024;
const ELEMENTWISE_THREADS: u32 = 256;

pub(crate) fn err(reason: String) -> Error {
    Error::Backend { backend: "gpu".into(), reason }
}

pub(crate) fn cfg(grid: [usize; 3], block: u32, shared: usize) -> Result<LaunchConfig> {
    if grid[1] > MAX_GRID_YZ || grid[2] > MAX_GRID_YZ || grid[0] > u32::MAX as usize {
        return Err(err(format!("grid {grid:?} exceeds CUDA's limits")));
    }
    if shared > DEFAULT_SHARED_LIMIT {
        return Err(err(format!("{shared} bytes of shared memory exceed the {DEFAULT_SHARED_LIMIT}-byte default")));
    }
    Ok(LaunchConfig { grid: grid.map(|g| g as u32), block: [block, 1, 1], shared_bytes: shared as u32 })
}

/// Grid-stride kernels over `n` elements (standardize, broadcast_add, pool).
pub fn elementwise(n: usize) -> Result<LaunchConfig> {
    let blocks = n.div_ceil(ELEMENTWISE_THREADS as usize).clamp(1, ELEMENTWISE_MAX_BLOCKS);
    cfg([blocks, 1, 1], ELEMENTWISE_THREADS, 0)
}

/// gemm_tile.cuh (every f32 matrix product, forward and backward: linear,
/// conv1d, patch_embed): one 256-thread block per 64×64 tile of the output, `branches`
/// independent products along z.
pub fn gemm(rows: usize, n: usize, branches: usize) -> Result<LaunchConfig> {
    cfg([n.div_ceil(GEMM_TILE), rows.div_ceil(GEMM_TILE), branches], GEMM_THREADS, 0)
}

/// gemm_tile_mma.cuh, the 16-bit forward products' tensor-core tile: 128 threads (4 warps) per 64×32 tile.
pub fn gemm_mma(rows: usize, n: usize, branches: usize) -> Result<LaunchConfig> {
    cfg([n.div_ceil(32), rows.div_ceil(64), branches], 128, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemm_covers_awkward_sizes_with_whole_tiles() {
        let c = gemm(49, 768, 1).unwrap();
        assert_eq!(c.grid, [12, 1, 1]);
        assert_eq!(c.block, [256, 1, 1]);
        assert_eq!(gemm(17 * 100, 112, 3).unwrap().grid, [2, 27, 3]);
        assert_eq!(gemm(64, 64, 1).unwrap().grid, [1, 1, 1]);
        assert_eq!(gemm(65, 65, 1).unwrap().grid, [2, 2, 1]);
        assert!(gemm(64 * 65_536, 8, 1).is_err(), "grid.y above 65535");
        assert_eq!(gemm_mma(49, 768, 1).unwrap().grid, [24, 1, 1]);
        assert_eq!(gemm_mma(100, 129, 3).unwrap().grid, [5, 2, 3]);
        assert_eq!(gemm_mma(1, 1, 1).unwrap().block, [128, 1, 1]);
    }

    #[test]
    fn small_kernels() {
        assert_eq!(elementwise(1).unwrap().grid, [1, 1, 1]);
        assert_eq!(elementwise(10_000_000).unwrap().grid, [1024, 1, 1]);
    }
}
