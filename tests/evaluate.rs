//! `quorum evaluate` on a simulated store: every candidate on the same
//! decisions, and every figure of report.json recomputed from
//! decisions.parquet by this file's own arithmetic.

mod server_util;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use quorum::ensemble::EnsembleConfig;
use quorum::evaluate::{evaluate, read_decisions, Bound, DecisionRow, EvaluateOptions};
use quorum::market::{simulate_to_parquet, SimConfig};
use serde_json::Value;
use server_util::{engine_with, save_weights, small_configs, tempdir, weights};

const SYMBOL: &str = "SIMUSDT";

/// Nine minutes of the simulator (seeded) under `dir`.
fn simulated_store(dir: &Path, seed: u64) {
    let config = SimConfig { symbol: SYMBOL.into(), seed, ..SimConfig::default() };
    simulate_to_parquet(&config, dir, Duration::from_secs(9 * 60), |_, _| {}).unwrap();
}

fn options(data: &Path) -> EvaluateOptions {
    EvaluateOptions {
        from: Some(Bound::AfterStart(5 * 60_000)),
        horizons: vec![30, 10],
        resamples: 200,
        ..EvaluateOptions::new(data, SYMBOL)
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * (1.0 + a.abs().max(b.abs()))
}

fn num(v: &Value) -> Option<f64> {
    v.as_f64()
}

/// accuracy, macro-F1 over the classes present, multiclass MCC, confusion.
fn classification(rows: &[&DecisionRow]) -> (f64, f64, f64, [[u64; 3]; 3]) {
    let mut c = [[0u64; 3]; 3];
    for r in rows {
        c[(r.label + 1) as usize][(r.direction + 1) as usize] += 1;
    }
    let n = rows.len() as f64;
    let correct = (0..3).map(|k| c[k][k]).sum::<u64>() as f64;
    let truth: Vec<f64> = (0..3).map(|k| c[k].iter().sum::<u64>() as f64).collect();
    let pred: Vec<f64> = (0..3).map(|k| (0..3).map(|t| c[t][k]).sum::<u64>() as f64).collect();
    let present: Vec<usize> = (0..3).filter(|&k| truth[k] + pred[k] > 0.0).collect();
    let f1 = present.iter().map(|&k| 2.0 * c[k][k] as f64 / (truth[k] + pred[k])).sum::<f64>() / present.len() as f64;
    let cov = |x: &[f64], y: &[f64]| n * n - x.iter().zip(y).map(|(a, b)| a * b).sum::<f64>();
    let den = (cov(&pred, &pred) * cov(&truth, &truth)).sqrt();
    let mcc =
        if den > 0.0 { (correct * n - pred.iter().zip(&truth).map(|(p, t)| p * t).sum::<f64>()) / den } else { 0.0 };
    (correct / n, f1, mcc, c)
}

#[test]
fn every_candidate_answers_the_same_decisions_and_the_report_recomputes_from_the_parquet() {
    let root = tempdir("evaluate-recompute");
    simulated_store(&root, 11);
    let engine = engine_with(&small_configs(), EnsembleConfig::default());
    let out = root.join("report");
    let report = evaluate(engine, &options(&root), &out, &mut |_| {}).unwrap();
    let json: Value = serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    let rows = read_decisions(&out.join("decisions.parquet")).unwrap();

    // 3 models, 5 strategies, 3 baselines.
    let names: BTreeSet<&str> = rows.iter().map(|r| r.candidate.as_str()).collect();
    assert_eq!(names.len(), 11, "{names:?}");
    assert_eq!(json["models"].as_array().unwrap().len(), 3);
    // Decisions from the evaluated period only, and not before the fit period ends.
    let from = json["period"]["from_ms"].as_i64().unwrap();
    assert_eq!(from, json["period"]["first_ms"].as_i64().unwrap() + 5 * 60_000);
    assert!(rows.iter().all(|r| r.ts_ms >= from));

    let horizons = json["horizons"].as_array().unwrap();
    assert_eq!(horizons.len(), 2);
    for h in horizons {
        let k = h["horizon"].as_u64().unwrap() as u32;
        let mut by: BTreeMap<&str, Vec<&DecisionRow>> = BTreeMap::new();
        for r in rows.iter().filter(|r| r.horizon == k) {
            by.entry(&r.candidate).or_default().push(r);
        }
        // The same decision times for every candidate, as many as the report says.
        let times: Vec<Vec<i64>> = by.values().map(|v| v.iter().map(|r| r.ts_ms).collect()).collect();
        assert!(times.windows(2).all(|w| w[0] == w[1]), "horizon {k}: candidates on different decisions");
        assert_eq!(times[0].len() as u64, h["decisions"].as_u64().unwrap());
        assert!(times[0].len() > 1000, "horizon {k}: {} decisions", times[0].len());

        for s in h["scores"].as_array().unwrap() {
            let name = s["candidate"].as_str().unwrap();
            let rs = &by[name];
            let (acc, f1, mcc, confusion) = classification(rs);
            let cm = &s["classification"];
            assert!(close(acc, num(&cm["accuracy"]).unwrap()), "{name} {k}: accuracy");
            assert!(close(f1, num(&cm["f1_macro"]).unwrap()), "{name} {k}: F1");
            assert!(close(mcc, num(&cm["mcc"]).unwrap()), "{name} {k}: MCC");
            assert_eq!(serde_json::to_value(confusion).unwrap(), cm["confusion"], "{name} {k}: confusion");

            // Trading: a position opens only when wanted and flat, closes k ticks
            // (k × 100 ms here: the simulator has no gaps) later; net = sign·return − cost.
            let mut pnls = Vec::new();
            let mut costs = 0.0;
            let mut busy_until = i64::MIN;
            for r in rs {
                let wants = r.should_trade && r.direction != 0;
                assert_eq!(r.opened, wants && r.ts_ms >= busy_until, "{name} {k} at {}", r.ts_ms);
                if r.opened {
                    busy_until = r.ts_ms + k as i64 * 100;
                    assert!(close(r.pnl_bps, r.direction as f64 * r.realized_return_bps - r.cost_bps));
                    pnls.push(r.pnl_bps);
                    costs += r.cost_bps;
                } else {
                    assert_eq!(r.pnl_bps, 0.0);
                }
            }
            let t = &s["trading"];
            assert_eq!(t["trades"].as_u64().unwrap(), pnls.len() as u64, "{name} {k}: trades");
            let net: f64 = pnls.iter().sum();
            assert!(close(net, num(&t["net_pnl_bps"]).unwrap()), "{name} {k}: net");
            assert!(close(costs, num(&t["costs_bps"]).unwrap()), "{name} {k}: costs");
            let wins: f64 = pnls.iter().filter(|p| **p > 0.0).sum();
            let losses: f64 = -pnls.iter().filter(|p| **p < 0.0).sum::<f64>();
            match num(&t["profit_factor"]) {
                Some(pf) => assert!(close(pf, wins / losses), "{name} {k}: PF"),
                None => assert_eq!(losses, 0.0),
            }
            match num(&t["hit_rate"]) {
                Some(hr) => assert!(close(hr, pnls.iter().filter(|p| **p > 0.0).count() as f64 / pnls.len() as f64)),
                None => assert!(pnls.is_empty()),
            }
            if let Some(sh) = num(&t["sharpe_per_trade"]) {
                let m = net / pnls.len() as f64;
                let sd = (pnls.iter().map(|p| (p - m).powi(2)).sum::<f64>() / (pnls.len() - 1) as f64).sqrt();
                assert!(close(sh, m / sd), "{name} {k}: Sharpe");
            }
            let (mut eq, mut peak, mut dd) = (0.0f64, 0.0f64, 0.0f64);
            for p in &pnls {
                eq += p;
                peak = peak.max(eq);
                dd = dd.max(peak - eq);
            }
            assert!(close(dd, num(&t["max_drawdown_bps"]).unwrap()), "{name} {k}: drawdown");
        }
        // always-neutral never trades and is right exactly on the NEUTRAL labels.
        let neutral = &by["always_neutral"];
        assert!(neutral.iter().all(|r| !r.opened));
        let share = neutral.iter().filter(|r| r.label == 0).count() as f64 / neutral.len() as f64;
        assert!(close(share, num(&h["class_shares"][1]).unwrap()));
        // 5 strategies vs the best model, adaptive vs fixed, 3 models vs the logistic
        // baseline, (3 models + the engine's strategy) vs always-neutral and vs the majority class.
        let comparisons = h["comparisons"].as_array().unwrap();
        assert_eq!(comparisons.len(), 5 + 1 + 3 + 4 * 2);
        let accuracy =
            |name: &str| by[name].iter().filter(|r| r.direction == r.label).count() as f64 / by[name].len() as f64;
        let net = |name: &str| by[name].iter().map(|r| r.pnl_bps).sum::<f64>();
        for c in comparisons {
            let (a, b) = (c["first"].as_str().unwrap(), c["second"].as_str().unwrap());
            let acc = num(&c["accuracy_diff_pp"]["estimate"]).unwrap();
            assert!(close(acc, 100.0 * (accuracy(a) - accuracy(b))), "{a} vs {b}: accuracy difference");
            let pnl = num(&c["net_pnl_diff_bps"]["estimate"]).unwrap();
            assert!((pnl - (net(a) - net(b))).abs() < 1e-6 * (1.0 + pnl.abs()), "{a} vs {b}: PnL difference");
            let (lo, hi) = (num(&c["accuracy_diff_pp"]["low"]).unwrap(), num(&c["accuracy_diff_pp"]["high"]).unwrap());
            assert!(lo <= acc + 1e-9 && acc <= hi + 1e-9, "{a} vs {b}: the interval holds its estimate");
        }
    }
    assert_eq!(report.verdicts.len(), json["verdicts"].as_array().unwrap().len());
    // The page: every chart drawn (equity and reliability per horizon, weights, latency), every candidate named.
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert_eq!(html.matches("<svg").count(), 2 * horizons.len() + 2, "charts in report.html");
    assert!(!html.contains("not drawn"));
    for name in &names {
        assert!(html.contains(name), "{name} missing from report.html");
    }
    assert!(!html.contains("<script") && !html.contains("<link") && !html.contains("src="), "self-contained");
    let _ = std::fs::remove_dir_all(&root);
}

fn quorum() -> Command {
    Command::new(env!("CARGO_BIN_EXE_quorum"))
}

fn weights_dir(root: &Path) -> PathBuf {
    let dir = root.join("models");
    std::fs::create_dir_all(&dir).unwrap();
    for c in small_configs() {
        // The names `quorum train` writes.
        save_weights(&dir.join(format!("{}_best.safetensors", c.kind().as_str())), &weights(&c, 1.0));
    }
    dir
}

#[test]
fn quorum_evaluate_reads_a_training_output_folder_and_names_what_is_wrong() {
    let root = tempdir("evaluate-cli");
    simulated_store(&root, 12);
    let models = weights_dir(&root);
    let out = root.join("report");
    let run = |extra: &[&str]| {
        let mut cmd = quorum();
        cmd.args(["evaluate", "--data"]).arg(&root).args(["--symbol", SYMBOL, "--weights"]).arg(&models);
        cmd.arg("--out").arg(&out).args(["--resamples", "200"]).args(extra);
        cmd.output().unwrap()
    };
    let ok = run(&["--from", "+5m", "--to", "+8m"]);
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(ok.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&ok.stderr));
    for needle in
        ["always_neutral", "weighted_voting", "logistic_regression", "the same for every candidate", "at 95 %"]
    {
        assert!(stdout.contains(needle), "{needle} missing from:\n{stdout}");
    }
    let json: Value = serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(json["period"]["to_ms"].as_i64().unwrap() - json["period"]["from_ms"].as_i64().unwrap(), 3 * 60_000);

    // Each bad input is refused with its field named, and writes nothing new.
    std::fs::remove_dir_all(&out).unwrap();
    for (extra, needle) in [
        (&["--from", "+20m"][..], "holds no stored snapshot"),
        (&["--from", "+10s"][..], "no labelled tick"),
        (&["--horizons", "0"][..], "horizons"),
        (&["--cost-bps=-1"][..], "cost_bps"),
        (&["--from", "yesterday"][..], "neither Unix milliseconds"),
        (&["--symbol", "BTC/USDT"][..], "symbol"),
    ] {
        let o = run(extra);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(needle), "{extra:?}: {err}");
        assert!(!out.exists(), "{extra:?} wrote a report");
    }
    let empty = root.join("no-models");
    std::fs::create_dir_all(&empty).unwrap();
    let o = quorum()
        .args(["evaluate", "--data"])
        .arg(&root)
        .args(["--symbol", SYMBOL, "--weights"])
        .arg(&empty)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no model is loaded"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let _ = std::fs::remove_dir_all(&root);
}
