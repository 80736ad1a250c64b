//! The bit lock for reshaping the backend and the models (#16): every golden
//! model case's outputs on the CPU (f32, and bf16 where the CPU has
//! AVX512_BF16) and on the emulator (f32 and bf16), and the weights after
//! five AdamW steps of each architecture on the CPU and the emulator, must be
//! bit for bit what they were when the lock was recorded.
//!
//! The CPU's code paths depend on its features (AVX-512 or not), so a lock
//! belongs to one CPU fingerprint: `tests/fixtures/bit_lock/<fingerprint>.json`.
//! On a CPU without a lock the test says so and checks nothing; record one
//! (before a reshaping, on the machine that will check it after) with
//! `QUORUM_RECORD_BIT_LOCK=1 cargo test --release --test bit_lock`.
//! Changing what the numbers are (a new kernel, a new summation order) is a
//! new lock, recorded in the same commit and said in its message.

mod common;
// Both helpers find the fixtures through common/fixtures.rs.
#[allow(clippy::duplicate_mod)]
#[path = "common/grads.rs"]
mod grads;

use std::collections::BTreeMap;
use std::path::PathBuf;

use common::{golden, ALL_CASES};
use quorum::backend::gpu::{Emu, Gpu, Precision};
use quorum::{Backend, Cpu};

/// FNV-1a over the bits of a sequence of floats: equal iff (almost surely) bit-identical.
fn fnv(values: &[f32]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for v in values {
        for b in v.to_bits().to_le_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

/// The CPU features that choose among the CPU backend's code paths.
fn fingerprint() -> String {
    let mut parts = vec![std::env::consts::ARCH.to_owned()];
    #[cfg(target_arch = "x86_64")]
    {
        let has = [
            ("avx2", std::is_x86_feature_detected!("avx2")),
            ("fma", std::is_x86_feature_detected!("fma")),
            ("avx512f", std::is_x86_feature_detected!("avx512f")),
            ("avx512bw", std::is_x86_feature_detected!("avx512bw")),
            ("avx512vl", std::is_x86_feature_detected!("avx512vl")),
            ("avx512bf16", std::is_x86_feature_detected!("avx512bf16")),
        ];
        parts.extend(has.iter().filter(|(_, on)| *on).map(|(name, _)| name.to_string()));
    }
    parts.join("+")
}

fn lock_path() -> PathBuf {
    common::fixtures::fixtures_dir().join("bit_lock").join(format!("{}.json", fingerprint()))
}

fn forwards<B: Backend>(be: &B, label: &str, out: &mut BTreeMap<String, String>) {
    for name in ALL_CASES {
        let g = golden(name);
        let mut model = g.model(be);
        for (output, t) in model.forward(be, &g.inputs()).unwrap() {
            out.insert(format!("forward/{name}/{label}/{output}"), fnv(&t.data));
        }
    }
}

fn training<B: quorum::backend::Train>(be: &B, label: &str, out: &mut BTreeMap<String, String>) {
    for config in grads::small_configs(0.2) {
        let weights: Vec<f32> = grads::train_steps(be, &config, 5).concat();
        out.insert(format!("train5/{}/{label}", config.kind()), fnv(&weights));
    }
}

fn current() -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let cpu = Cpu::new();
    forwards(&cpu, "cpu-f32", &mut out);
    if let Ok(cpu_bf16) = Cpu::with_precision(Precision::Bf16) {
        forwards(&cpu_bf16, "cpu-bf16", &mut out);
    }
    forwards(&Gpu::new(Emu::new()), "emu-f32", &mut out);
    forwards(&Gpu::with_precision(Emu::new(), Precision::Bf16).unwrap(), "emu-bf16", &mut out);
    training(&cpu, "cpu", &mut out);
    training(&Gpu::new(Emu::new()), "emu-f32", &mut out);
    training(&Gpu::with_precision(Emu::new(), Precision::Bf16).unwrap(), "emu-bf16", &mut out);
    out
}

#[test]
fn outputs_and_five_training_steps_are_bit_identical_to_the_lock() {
    let now = current();
    let path = lock_path();
    if std::env::var_os("QUORUM_RECORD_BIT_LOCK").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, serde_json::to_string_pretty(&now).unwrap() + "\n").unwrap();
        println!("recorded {} hashes in {}", now.len(), path.display());
        return;
    }
    let Ok(text) = std::fs::read_to_string(&path) else {
        println!(
            "no bit lock for this CPU ({}): nothing checked; record one with QUORUM_RECORD_BIT_LOCK=1",
            fingerprint()
        );
        return;
    };
    let locked: BTreeMap<String, String> = serde_json::from_str(&text).unwrap();
    let mut differ: Vec<String> = Vec::new();
    for (key, want) in &locked {
        match now.get(key) {
            Some(got) if got == want => {}
            Some(_) => differ.push(format!("{key}: different bits")),
            None => differ.push(format!("{key}: no longer computed")),
        }
    }
    differ.extend(now.keys().filter(|k| !locked.contains_key(*k)).map(|k| format!("{k}: new, not in the lock")));
    assert!(
        differ.is_empty(),
        "{} of {} differ from {}:\n{}",
        differ.len(),
        locked.len(),
        path.display(),
        differ.join("\n")
    );
    println!("checked {} hashes against {}: every one equal", locked.len(), path.display());
}
