//! Intel AMX (Sapphire Rapids and later): the int8 products' integer sums
//! on the tile unit. `tdpbusd` multiplies a tile of up to 16 activation rows
//! (64 unsigned bytes each) by a tile of 16 weight columns (16 quads of
//! signed bytes each) and adds the exact i32 sums into a 16 × 16 tile: the
//! sums `vpdpbusd` makes, many times as many per cycle, so the int8
//! products keep their bits (`Madd::finish` makes them f32 as before). A
//! step is 32 rows by 32 columns: four sum tiles in flight.
//!
//! The layouts are small_gemm's: an activation row is `depth` quads, a
//! weight panel row (one depth quad) holds one quad per column, which is
//! what a weight tile's rows are. Linux hands a process the tile state only
//! when asked (`arch_prctl(ARCH_REQ_XCOMP_PERM)`), which `available` does
//! once. `QUORUM_CPU_AMX=0` keeps the products on VNNI (to compare them).

use std::sync::OnceLock;

/// Whether the tile unit can run the int8 sums here (AMX-TILE, AMX-INT8,
/// the kernel's permission), unless `QUORUM_CPU_AMX=0`.
pub(crate) fn available() -> bool {
    static READY: OnceLock<bool> = OnceLock::new();
    *READY.get_or_init(|| std::env::var("QUORUM_CPU_AMX").map_or(true, |v| v != "0") && detect())
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn detect() -> bool {
    use std::arch::x86_64::__cpuid_count;
    let (max, features) = (__cpuid_count(0, 0).eax, __cpuid_count(7, 0).edx);
    let (tile, int8) = (features >> 24 & 1 == 1, features >> 25 & 1 == 1);
    if max < 7 || !tile || !int8 || !super::small_gemm::int8_available() {
        return false;
    }
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: a system call with two integer arguments; it fails cleanly
    // (non-zero) where the kernel or the hypervisor withholds the state.
    unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0 }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn detect() -> bool {
    false
}

/// Depth quads per tile multiply (64 bytes a row): an AMX product's depth
/// is a multiple of it (every int8 layer's here is).
pub(crate) const QUADS: usize = 16;

/// The tile configuration `ldtilecfg` reads (palette 1).
#[repr(C, align(64))]
struct Config {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    bytes_per_row: [u16; 16],
    rows: [u8; 16],
}

/// Configures this thread's tiles for two row tiles of `upper` (1 to 16)
/// and `lower` (0 to 16) activation rows, against two 16-column groups:
/// - tmm0, tmm1: the upper rows' sums for each group; tmm2, tmm3: the
///   lower rows' (`lower` × 16 i32);
/// - tmm4, tmm5: 16 quads of the upper and the lower rows;
/// - tmm6, tmm7: 16 quads of each column group.
///
/// Four sums in flight hide `tdpbusd`'s latency; each loaded tile serves two.
///
/// # Safety
/// `available()` must be true.
#[cfg(target_arch = "x86_64")]
pub(crate) unsafe fn configure(upper: usize, lower: usize) {
    debug_assert!((1..=16).contains(&upper) && lower <= 16);
    let mut c = Config { palette: 1, start_row: 0, reserved: [0; 14], bytes_per_row: [0; 16], rows: [0; 16] };
    let full = 4 * QUADS as u16;
    for (t, n) in [(0, upper), (1, upper), (2, lower), (3, lower), (4, upper), (5, lower), (6, QUADS), (7, QUADS)] {
        if n > 0 {
            (c.bytes_per_row[t], c.rows[t]) = (full, n as u8);
        }
    }
    std::arch::asm!("ldtilecfg [{}]", in(reg) &c as *const Config, options(nostack, readonly));
}

/// Gives the tile state back (the thread's context switches save less).
///
/// # Safety
/// `available()` must be true.
#[cfg(target_arch = "x86_64")]
pub(crate) unsafe fn release() {
    std::arch::asm!("tilerelease", options(nostack, nomem));
}

/// The exact sums of the configured row tiles (`a`, rows `a_stride` bytes
/// apart: the upper tile's, then the lower tile's from row 16) against two
/// 16-column groups of the weight (`b`, rows of quads `b_stride` bytes apart,
/// the second group 64 bytes on), over `depth` quads (a multiple of
/// `QUADS`), into `out`: row `i`, column `j` at `out[i·32 + j]`.
///
/// # Safety
/// `configure(upper, lower)` on this thread, with `lower > 0` exactly when
/// `lower` rows follow; every byte read must lie in its buffer: the rows'
/// `4·depth` bytes at `a`, `depth` rows of 128 bytes at `b`.
#[cfg(target_arch = "x86_64")]
pub(crate) unsafe fn sums(
    a: *const u8,
    a_stride: usize,
    lower: bool,
    b: *const u8,
    b_stride: usize,
    depth: usize,
    out: &mut [i32; 32 * 32],
) {
    use std::arch::asm;
    debug_assert!(depth.is_multiple_of(QUADS));
    asm!("tilezero tmm0", "tilezero tmm1", options(nostack, nomem));
    if lower {
        asm!("tilezero tmm2", "tilezero tmm3", options(nostack, nomem));
    }
    // Only read when `lower`; past a lone upper tile it may point beyond `a`'s buffer.
    let a_lower = a.wrapping_add(16 * a_stride);
    for k in 0..depth / QUADS {
        let (ak, bk) = (k * 4 * QUADS, b.add(k * QUADS * b_stride));
        asm!(
            "tileloadd tmm6, [{b} + {sb} * 1]",
            "tileloadd tmm7, [{b2} + {sb} * 1]",
            "tileloadd tmm4, [{a} + {sa} * 1]",
            "tdpbusd tmm0, tmm4, tmm6",
            "tdpbusd tmm1, tmm4, tmm7",
            a = in(reg) a.add(ak), sa = in(reg) a_stride, b = in(reg) bk, b2 = in(reg) bk.add(64), sb = in(reg) b_stride,
            options(nostack, readonly),
        );
        if lower {
            asm!(
                "tileloadd tmm5, [{a} + {sa} * 1]",
                "tdpbusd tmm2, tmm5, tmm6",
                "tdpbusd tmm3, tmm5, tmm7",
                a = in(reg) a_lower.wrapping_add(ak), sa = in(reg) a_stride,
                options(nostack, readonly),
            );
        }
    }
    let (o, s) = (out.as_mut_ptr(), 128usize);
    asm!(
        "tilestored [{o} + {s} * 1], tmm0",
        "tilestored [{o2} + {s} * 1], tmm1",
        o = in(reg) o, o2 = in(reg) o.add(16), s = in(reg) s, options(nostack),
    );
    if lower {
        asm!(
            "tilestored [{o} + {s} * 1], tmm2",
            "tilestored [{o2} + {s} * 1], tmm3",
            o = in(reg) o.add(16 * 32), o2 = in(reg) o.add(16 * 32 + 16), s = in(reg) s, options(nostack),
        );
    }
}
