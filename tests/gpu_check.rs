//! tools/gpu_check.sh's pieces that can be checked without a GPU, so that
//! device time is never spent on a script bug: the shell script parses, and
//! tools/gpu_check_summary.py reads `quorum bench`'s real output (the CPU
//! backend here, the same table as on CUDA), PyTorch's rows and criterion's
//! lines, and gives the right ratios and verdicts.

use std::path::{Path, PathBuf};
use std::process::Command;

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("quorum_gpu_check_{name}_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_script_parses() {
    let out = Command::new("bash").arg("-n").arg(repo().join("tools/gpu_check.sh")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// The median column of `quorum bench`'s row for (model, batch).
fn median_of(table: &str, model: &str, batch: usize) -> f64 {
    table
        .lines()
        .map(|l| l.trim().trim_matches('|').split('|').map(str::trim).collect::<Vec<_>>())
        .find(|c| c.len() == 6 && c[0] == model && c[1] == batch.to_string())
        .unwrap_or_else(|| panic!("no {model} batch {batch} row in:\n{table}"))[2]
        .parse()
        .unwrap()
}

#[test]
fn the_summary_reads_quorum_bench_pytorch_and_criterion() {
    let logs = scratch("logs");
    let bench = Command::new(env!("CARGO_BIN_EXE_quorum"))
        .args(["bench", "--backend", "cpu", "--iters", "3", "--batch", "1", "--ensemble"])
        .output()
        .unwrap();
    assert!(bench.status.success(), "{}", String::from_utf8_lossy(&bench.stderr));
    let table = String::from_utf8(bench.stdout).unwrap();
    assert!(table.contains("| whole tick"), "the ensemble table:\n{table}");
    std::fs::write(logs.join("bench_f32.log"), &table).unwrap();
    let (mpd, lstm) = (median_of(&table, "mpd_transformer", 1), median_of(&table, "cnn_lstm", 1));
    // PyTorch: CNN-LSTM eager 3.5× slower and graph 1.2× slower (the target
    // met); MPD eager only 2× slower (not met).
    let torch = format!(
        "what\tmodel\tdtype\tmode\tbatch\tmedian_us\tp99_us\truns\n\
         forward\tcnn_lstm\tf32\teager\t1\t{:.1}\t1.0\t500\n\
         forward\tcnn_lstm\tf32\tgraph\t1\t{:.1}\t1.0\t500\n\
         forward\tmpd_transformer\tf32\teager\t1\t{:.1}\t1.0\t500\n\
         forward\tmpd_transformer\tf32\tgraph\t1\t{:.1}\t1.0\t500\n\
         train_step\ttlob\tbf16_autocast\teager\t32\t2500.0\t2600.0\t50\n",
        3.5 * lstm,
        1.2 * lstm,
        2.0 * mpd,
        1.2 * mpd
    );
    std::fs::write(logs.join("torch.tsv"), torch).unwrap();
    std::fs::write(
        logs.join("criterion_train.log"),
        "Benchmarking train_step_cuda/tlob/32\ntrain_step_cuda/tlob/32\n                        time:   [1.9000 ms 2.0000 ms 2.1000 ms]\n",
    )
    .unwrap();
    std::fs::write(logs.join("test_kernels_cuda.log"), "test result: ok. 12 passed; 0 failed; 0 ignored\n").unwrap();
    std::fs::write(logs.join("sanitizer_memcheck.log"), "========= ERROR SUMMARY: 0 errors\n").unwrap();
    let steps = logs.join("steps.tsv");
    std::fs::write(&steps, "tests\tok\t12\tcmd\nncu\tskipped\t0\tno ncu\n").unwrap();
    let out = Command::new("python3")
        .arg(repo().join("tools/gpu_check_summary.py"))
        .args([logs.to_str().unwrap(), steps.to_str().unwrap(), "0"])
        .output()
        .expect("python3 runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let summary = String::from_utf8(out.stdout).unwrap();
    let row = |starts: &str| {
        summary.lines().find(|l| l.starts_with(starts)).unwrap_or_else(|| panic!("no row {starts:?} in:\n{summary}"))
    };
    let lstm_row = row("| cnn_lstm | f32 | 1 |");
    assert!(lstm_row.contains("| 3.50× | 1.20× | met |"), "{lstm_row}");
    let mpd_row = row("| mpd_transformer | f32 | 1 |");
    assert!(mpd_row.contains("| 2.00× | 1.20× | NOT met |"), "{mpd_row}");
    assert!(row("| tlob | f32 | 1 |").ends_with("| — | — | — |"), "no PyTorch figure: no verdict");
    let train = row("| tlob | 2.00 ms |");
    assert!(train.contains("| 2.00 ms | — | — | 2.50 ms | 0.80× | met |"), "{train}");
    assert!(row("| test_kernels_cuda.log |").contains("12 passed, 0 failed"));
    assert!(row("| sanitizer_memcheck.log |").contains("errors: 0"));
    let tick = row("| ensemble tick (3 models + consensus) | f32 |");
    assert!(!tick.contains("| — | — |"), "the tick's median and p99 were read: {tick}");
    assert!(row("| ncu | skipped |").contains("no ncu"));
    let _ = std::fs::remove_dir_all(&logs);
}
