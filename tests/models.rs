//! Every model, at the default configs and at non-default ones, against the
//! PyTorch goldens in tests/fixtures/models (docs/models.md's tolerances).

mod common;

use common::{assert_close, check_golden, check_golden_within, golden, inputs_of, one_sample, sample, ALL_CASES};
use quorum::backend::Precision;
use quorum::model::{param_specs, ModelConfig, ModelKind};
use quorum::Cpu;

fn check_case(name: &str) {
    let worst = check_golden(&Cpu::new(), name);
    eprintln!("{name}: worst error / tolerance = {worst:.3}");
}

common::golden_case_tests!(check_case);

#[test]
fn every_case_is_tested() {
    assert_eq!(ALL_CASES.len(), 10);
    for c in ALL_CASES {
        assert!(common::fixture(&format!("{c}.safetensors")).exists(), "{c}");
    }
}

#[test]
fn parameter_counts_at_defaults_match_the_spec() {
    let count = |k| param_specs(&ModelConfig::default_for(k)).count();
    assert_eq!(count(ModelKind::MpdTransformer), 4_789_253);
    assert_eq!(count(ModelKind::Tlob), 1_480_815);
    assert_eq!(count(ModelKind::CnnLstm), 1_015_813);
}

#[test]
fn every_case_run_one_sample_at_a_time_matches_the_goldens() {
    // Batch 1 takes its own code paths (the split LSTM recurrence, one
    // attention task per head): each sample alone must match PyTorch too.
    let be = Cpu::new();
    for name in ALL_CASES {
        let g = golden(name);
        let mut model = g.model(&be);
        let batch = g.inputs.values().next().unwrap().shape[0];
        for b in 0..batch {
            let out = model.forward(&be, &inputs_of(&one_sample(&g, b), true)).unwrap();
            for (k, want) in &g.outputs {
                assert_close(&format!("{name}[{b}]"), k, &out[k], &sample(want, b), false);
            }
        }
    }
}

/// The CPU's bf16 mode (`--precision bf16`: bf16 weights, `vdpbf16ps`
/// products, f32 sums) on every golden case, within docs/models.md's f16/bf16
/// column; where the CPU lacks AVX512_BF16, asking for it must say so.
#[test]
fn every_case_in_bf16_on_the_cpu_within_the_half_precision_tolerances() {
    let be = match Cpu::with_precision(Precision::Bf16) {
        Ok(be) => be,
        Err(e) => {
            assert!(e.to_string().contains("AVX512_BF16"), "{e}");
            eprintln!("skipped: {e}");
            return;
        }
    };
    for name in ALL_CASES {
        let worst = check_golden_within(&be, name, true);
        eprintln!("{name} on the CPU in bf16: worst error / tolerance = {worst:.3}");
    }
}

/// In bf16 and int8 each sample's rows are rounded (quantized) and
/// multiplied on their own, so a sample computes the same bits alone as
/// inside its batch (batch 1 takes other paths: two-row tiles, the
/// recurrence split by units): what batching symbols into one forward needs.
#[test]
fn bf16_and_int8_on_the_cpu_give_each_sample_the_same_bits_alone_as_in_its_batch() {
    for p in [Precision::Bf16, Precision::Int8] {
        let Ok(be) = Cpu::with_precision(p) else {
            eprintln!("skipped {p:?}: not on this CPU");
            continue;
        };
        for name in ALL_CASES {
            let g = golden(name);
            let mut model = g.model(&be);
            let whole = model.forward(&be, &g.inputs()).unwrap();
            let batch = g.inputs.values().next().unwrap().shape[0];
            for b in 0..batch {
                let out = model.forward(&be, &inputs_of(&one_sample(&g, b), true)).unwrap();
                for (k, all) in &whole {
                    assert_eq!(out[k].data, sample(all, b).data, "{p:?} {name}[{b}] {k}");
                }
            }
        }
    }
}

#[test]
fn the_cpu_refuses_f16_by_name() {
    let e = Cpu::with_precision(Precision::F16).unwrap_err().to_string();
    assert!(e.contains("precision") && e.contains("f16"), "{e}");
}

#[test]
fn fixtures_are_found_from_the_variable_the_tree_or_beside_the_binary() {
    use common::fixtures::resolve;
    let root = std::env::temp_dir().join(format!("quorum_fixtures_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let carried = root.join("carry");
    std::fs::create_dir_all(carried.join("fixtures/models")).unwrap();
    std::fs::create_dir_all(root.join("tree/tests/fixtures")).unwrap();
    let exe = carried.join("bin/models_cuda-0123");
    let gone = root.join("no-such-tree");
    assert_eq!(resolve(Some(root.join("set")), &root.join("tree"), &exe), root.join("set"), "the variable wins");
    assert_eq!(resolve(None, &root.join("tree"), &exe), root.join("tree/tests/fixtures"), "then the source tree");
    assert_eq!(resolve(None, &gone, &exe), carried.join("fixtures"), "then beside the binary");
    assert_eq!(resolve(Some("".into()), &gone, &exe), carried.join("fixtures"), "an empty variable is unset");
    let lone = root.join("elsewhere/bin/x");
    assert_eq!(
        resolve(None, &gone, &lone),
        gone.join("tests/fixtures"),
        "nothing found: the tree's path, for the error"
    );
    let _ = std::fs::remove_dir_all(&root);
}
