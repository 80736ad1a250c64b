//! Crash safety: `quorum collect` (the built binary, a child process) collects
//! from a loopback exchange started here, and is killed with SIGKILL after a
//! few saves. What it leaves must be complete, readable Parquet files only,
//! holding every snapshot of every completed save (so at most the snapshots
//! since the last save are lost), each equal to the simulator's true book.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use quorum::market::store::{list_files, read_snapshot_file, remove_stale_temp_files, SNAPSHOT_PREFIX};
use quorum::market::{ExchangeConfig, LoopbackExchange, SimConfig, NUM_LEVELS};

const SYMBOL: &str = "SIMUSDT";
const SAVE_INTERVAL: u64 = 25;

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// `saved=N` of a status line.
fn saved_of(line: &str) -> Option<u64> {
    line.split_whitespace().find_map(|w| w.strip_prefix("saved=")).and_then(|v| v.parse().ok())
}

#[test]
fn sigkill_leaves_only_complete_files() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let cfg = ExchangeConfig {
        sim: SimConfig { symbol: SYMBOL.into(), seed: 5, ..SimConfig::default() },
        tick_interval: Duration::from_millis(10),
        ..ExchangeConfig::default()
    };
    let ex = rt.block_on(LoopbackExchange::start("127.0.0.1:0".parse().unwrap(), cfg)).unwrap();
    let truth = ex.truth();
    let ep = ex.endpoint();
    let out = std::env::temp_dir().join(format!("quorum_crash_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);

    let mut child = Command::new(env!("CARGO_BIN_EXE_quorum"))
        .args(["collect", "--symbol", SYMBOL, "--out"])
        .arg(&out)
        .args(["--ws-url", &ep.ws_url, "--rest-url", &ep.rest_url])
        .args(["--interval-ms", "10", "--save-interval", &SAVE_INTERVAL.to_string(), "--status-ms", "50"])
        .args(["--duration", "120s"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn quorum collect");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last_saved = 0;
    let mut log = Vec::new();
    while last_saved < 4 * SAVE_INTERVAL {
        assert!(Instant::now() < deadline, "the collector did not save 4 times within 60 s:\n{}", log.join("\n"));
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            if let Some(s) = saved_of(&line) {
                last_saved = s;
            }
            log.push(line);
        } else if let Some(status) = child.try_wait().unwrap() {
            while let Ok(line) = rx.try_recv() {
                log.push(line);
            }
            panic!("quorum collect exited early ({status}):\n{}", log.join("\n"));
        }
    }
    // Let it run into the middle of the next saves, then kill it hard.
    std::thread::sleep(Duration::from_millis(170));
    child.kill().expect("SIGKILL"); // Child::kill sends SIGKILL on Unix.
    let status = child.wait().unwrap();
    assert!(!status.success());
    // Everything the status reported as saved before the kill.
    while let Ok(line) = rx.try_recv() {
        if let Some(s) = saved_of(&line) {
            last_saved = last_saved.max(s);
        }
    }

    // Every published file reads whole; temporary files are hidden names that readers skip.
    let published = list_files(&out, SYMBOL, SNAPSHOT_PREFIX).unwrap();
    let mut rows = Vec::new();
    for f in &published {
        let (info, snaps) = read_snapshot_file(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        assert_eq!(info.symbol, SYMBOL);
        assert_eq!(snaps.len() as u64, SAVE_INTERVAL, "{}: each save holds save_interval rows", f.display());
        rows.extend(snaps);
    }
    for f in files_under(&out) {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".parquet") {
            assert!(!name.starts_with('.'), "{name}");
        } else {
            assert!(name.starts_with('.') && name.contains(".tmp-"), "unexpected file {name}");
        }
    }
    assert!(rows.len() as u64 >= last_saved, "{} rows on disk, {last_saved} reported saved", rows.len());
    // What a restarted collector does first: the dead writer's temporary files go, published ones stay.
    let before = files_under(&out);
    let removed = remove_stale_temp_files(&out, SYMBOL).unwrap();
    let after = files_under(&out);
    assert!(after.iter().all(|f| !f.file_name().unwrap().to_string_lossy().contains(".tmp-")), "{after:?}");
    assert_eq!(before.len() - removed.len(), after.len());
    assert_eq!(list_files(&out, SYMBOL, SNAPSHOT_PREFIX).unwrap(), published);
    let eq = |x: f64, y: f64| x.to_bits() == y.to_bits();
    for r in &rows {
        let t = truth.get(r.last_update_id).expect("true book at the row's update id");
        assert!((0..NUM_LEVELS).all(|i| eq(r.bids[i].price, t.bids[i].price)
            && eq(r.bids[i].quantity, t.bids[i].quantity)
            && eq(r.asks[i].price, t.asks[i].price)
            && eq(r.asks[i].quantity, t.asks[i].quantity)));
    }
    rt.block_on(ex.shutdown());
    let _ = std::fs::remove_dir_all(&out);
}

/// Only temporary files of processes that no longer run are removed.
#[test]
fn stale_temp_files_of_dead_writers_only_are_removed() {
    let out = std::env::temp_dir().join(format!("quorum_stale_tmp_{}", std::process::id()));
    let day = out.join(SYMBOL).join("2026-11-24");
    std::fs::create_dir_all(&day).unwrap();
    // Above Linux's largest pid (2^22), so surely not running.
    let dead = day.join(".snapshots_1764000000000.parquet.tmp-4294967295");
    let ours = day.join(format!(".trades_1764000000000.parquet.tmp-{}", std::process::id()));
    let published = day.join("snapshots_1764000000000_1764000001000.parquet");
    let unrelated = day.join(".notes.tmp-4294967295");
    for f in [&dead, &ours, &published, &unrelated] {
        std::fs::write(f, b"x").unwrap();
    }
    let removed = remove_stale_temp_files(&out, SYMBOL).unwrap();
    if Path::new("/proc/self").exists() {
        assert_eq!(removed, vec![dead.clone()]);
        assert!(!dead.exists());
    } else {
        assert!(removed.is_empty(), "without /proc liveness is unknown: nothing is removed");
    }
    assert!(ours.exists() && published.exists() && unrelated.exists());
    let _ = std::fs::remove_dir_all(&out);
}

/// Runs `quorum collect` against a fresh exchange; `interrupt` sends SIGINT
/// (Ctrl-C) after a few saves instead of waiting for `--duration`. Either way
/// the process exits successfully with every snapshot it took on disk.
fn collect_and_stop(interrupt: bool) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let cfg = ExchangeConfig {
        sim: SimConfig { symbol: SYMBOL.into(), seed: 9, ..SimConfig::default() },
        tick_interval: Duration::from_millis(10),
        ..ExchangeConfig::default()
    };
    let ex = rt.block_on(LoopbackExchange::start("127.0.0.1:0".parse().unwrap(), cfg)).unwrap();
    let ep = ex.endpoint();
    let out = std::env::temp_dir().join(format!("quorum_collect_{interrupt}_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let mut child = Command::new(env!("CARGO_BIN_EXE_quorum"))
        .args(["collect", "--symbol", SYMBOL, "--out"])
        .arg(&out)
        .args(["--ws-url", &ep.ws_url, "--rest-url", &ep.rest_url])
        .args(["--interval-ms", "10", "--save-interval", "30", "--status-ms", "50"])
        .args(["--duration", if interrupt { "60s" } else { "2s" }])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn quorum collect");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    if interrupt {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut saved = 0;
        while saved < 60 {
            assert!(Instant::now() < deadline, "no saves within 60 s");
            if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
                saved = saved_of(&line).unwrap_or(saved);
            } else if let Some(status) = child.try_wait().unwrap() {
                panic!("quorum collect exited early ({status})");
            }
        }
        let ok = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
        assert!(ok.success());
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "quorum collect did not stop by itself");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut stdout).unwrap();
    // "collect: N snapshots saved in ..."
    let saved: u64 = stdout
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no summary line in {stdout:?}"));
    let last_status = rx
        .try_iter()
        .filter_map(|l| {
            l.split_whitespace().find_map(|w| w.strip_prefix("snapshots=")).and_then(|v| v.parse::<u64>().ok())
        })
        .last();
    let rows: usize =
        list_files(&out, SYMBOL, SNAPSHOT_PREFIX).unwrap().iter().map(|f| read_snapshot_file(f).unwrap().1.len()).sum();
    assert!(saved > 0);
    assert_eq!(rows as u64, saved, "every snapshot taken is on disk");
    if let Some(taken) = last_status {
        assert_eq!(taken, saved, "the final status line counts what was taken");
    }
    rt.block_on(ex.shutdown());
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn collect_stops_by_itself_after_duration_and_flushes() {
    collect_and_stop(false);
}

#[test]
fn collect_flushes_on_ctrl_c() {
    collect_and_stop(true);
}
