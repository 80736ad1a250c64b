//! `quorum import` on real Binance recordings (tests/fixtures/binance/, and
//! the whole BTCUSDT files from ../shared/data/binance/ when present).
//!
//! Every stored row is checked against a replay of the same frames done here,
//! independently of the importer: its own book (a `BTreeMap` of `f64`
//! prices), its own JSON reading (`serde_json::Value`), docs/data.md's rules
//! written out again. The importer's own bookTicker check must find the
//! rebuilt top equal to Binance's at every comparable update id.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use quorum::market::store::{read_snapshots, read_trades};
use quorum::market::{import_files, ImportOptions, ImportReport, RecordFormat, Snapshot, Trade, NUM_LEVELS};
use serde_json::Value;

fn fixtures() -> PathBuf {
    common::fixtures::fixtures_dir().join("binance")
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("quorum-import-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn import(format: RecordFormat, symbol: &str, out: &Path, files: &[PathBuf]) -> ImportReport {
    let report = import_files(&ImportOptions::new(format, symbol, out), files, &mut |_| {}).expect("import runs");
    println!("{report}");
    report
}

fn stored_snapshots(out: &Path, symbol: &str) -> Vec<Snapshot> {
    read_snapshots(out, symbol).unwrap().map(|r| r.unwrap()).collect()
}

fn stored_trades(out: &Path, symbol: &str) -> Vec<Trade> {
    read_trades(out, symbol).unwrap().map(|r| r.unwrap()).collect()
}

// ---- the independent replay ----------------------------------------------------

/// One recorded line: receive time (ns) and the JSON, a REST snapshot or a stream frame.
struct Line {
    recv_ns: i64,
    snapshot: bool,
    json: Value,
}

fn read_text(path: &Path) -> String {
    let mut bytes = Vec::new();
    std::fs::File::open(path).unwrap().read_to_end(&mut bytes).unwrap();
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut text = String::new();
        flate2::read::MultiGzDecoder::new(&bytes[..]).read_to_string(&mut text).unwrap();
        text
    } else {
        String::from_utf8(bytes).unwrap()
    }
}

fn hftbacktest_lines(files: &[PathBuf]) -> Vec<Line> {
    let mut out = Vec::new();
    for f in files {
        for l in read_text(f).lines() {
            let (t, j) = l.split_once(' ').unwrap();
            let json: Value = serde_json::from_str(j).unwrap();
            out.push(Line { recv_ns: t.parse().unwrap(), snapshot: json.get("lastUpdateId").is_some(), json });
        }
    }
    out
}

/// cryptofeed: the stream file's frames with the symbol's REST snapshots
/// merged in at their receive time (before a frame received at the same time).
fn cryptofeed_lines(ws: &Path, http: &Path, symbol: &str) -> Vec<Line> {
    let secs = |t: &str| -> i64 {
        let (s, f) = t.split_once('.').unwrap_or((t, ""));
        let frac: String = f.chars().chain(std::iter::repeat('0')).take(9).collect();
        s.parse::<i64>().unwrap() * 1_000_000_000 + frac.parse::<i64>().unwrap()
    };
    let mut snaps: Vec<Line> = read_text(http)
        .lines()
        .filter(|l| l.contains(&format!("symbol={symbol}&")))
        .map(|l| {
            let (_, rest) = l.split_once(" -> ").unwrap();
            let (t, j) = rest.split_once(": ").unwrap();
            Line { recv_ns: secs(t), snapshot: true, json: serde_json::from_str(j).unwrap() }
        })
        .collect();
    snaps.sort_by_key(|s| s.recv_ns);
    let mut out = Vec::new();
    let mut snaps = snaps.into_iter().peekable();
    for l in read_text(ws).lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let (t, j) = l.split_once(": ").unwrap();
        let recv_ns = secs(t);
        while snaps.peek().is_some_and(|s| s.recv_ns <= recv_ns) {
            out.push(snaps.next().unwrap());
        }
        out.push(Line { recv_ns, snapshot: false, json: serde_json::from_str(j).unwrap() });
    }
    out.extend(snaps);
    out
}

/// A price or quantity string as the store holds it (`f64`, nearest).
fn num(v: &Value) -> f64 {
    v.as_str().unwrap().parse().unwrap()
}

#[derive(Default)]
struct Replay {
    rows: Vec<Snapshot>,
    trades: Vec<Trade>,
    dropped_older_than_snapshot: u64,
    largest_diff_levels: usize,
    offsets_ms: Vec<i64>,
}

/// docs/data.md's rules, written out again: diffs wait for the snapshot;
/// those with `u <= lastUpdateId` are dropped; each applied diff must
/// continue the book (`U <= id + 1`, asserted: these recordings have no
/// gap); the row for grid time `t` (every 100 ms of exchange time) is the
/// book after every diff with `E <= t`, stamped with the last diff's `E` and
/// receive time (before the first diff after the snapshot: the last one received).
fn replay(lines: &[Line], symbol: &str) -> Replay {
    let lower = symbol.to_ascii_lowercase();
    let mut r = Replay::default();
    let mut bids: BTreeMap<u64, f64> = BTreeMap::new(); // key: price bits (positive f64 order)
    let mut asks: BTreeMap<u64, f64> = BTreeMap::new();
    let mut id: Option<u64> = None;
    let mut waiting: Vec<Value> = Vec::new();
    let (mut last_e, mut last_recv) = (0i64, 0i64);
    let mut next_t: Option<i64> = None;
    let apply = |bids: &mut BTreeMap<u64, f64>, asks: &mut BTreeMap<u64, f64>, d: &Value| {
        for (side, key) in [(&mut *bids, "b"), (&mut *asks, "a")] {
            for l in d[key].as_array().unwrap() {
                let (p, q) = (num(&l[0]), num(&l[1]));
                if q == 0.0 {
                    side.remove(&p.to_bits());
                } else {
                    side.insert(p.to_bits(), q);
                }
            }
        }
    };
    let row = |bids: &BTreeMap<u64, f64>, asks: &BTreeMap<u64, f64>, id: u64, e: i64, recv: i64| {
        let mut s = Snapshot::empty(e, recv, id);
        for (i, (p, q)) in bids.iter().rev().take(NUM_LEVELS).enumerate() {
            s.bids[i] = quorum::market::Level::new(f64::from_bits(*p), *q);
        }
        for (i, (p, q)) in asks.iter().take(NUM_LEVELS).enumerate() {
            s.asks[i] = quorum::market::Level::new(f64::from_bits(*p), *q);
        }
        s
    };
    for line in lines {
        if line.snapshot {
            if id.is_some() {
                continue;
            }
            bids.clear();
            asks.clear();
            for (side, key) in [(&mut bids, "bids"), (&mut asks, "asks")] {
                for l in line.json[key].as_array().unwrap() {
                    side.insert(num(&l[0]).to_bits(), num(&l[1]));
                }
            }
            let mut book_id = line.json["lastUpdateId"].as_u64().unwrap();
            for d in waiting.drain(..) {
                let (first, last) = (d["U"].as_u64().unwrap(), d["u"].as_u64().unwrap());
                if last <= book_id {
                    r.dropped_older_than_snapshot += 1;
                    continue;
                }
                assert!(first <= book_id + 1, "no gap in these recordings");
                apply(&mut bids, &mut asks, &d);
                book_id = last;
            }
            id = Some(book_id);
            if last_e > 0 {
                next_t = Some(last_e.div_euclid(100) * 100 + if last_e % 100 == 0 { 0 } else { 100 });
            }
            continue;
        }
        let stream = line.json["stream"].as_str().unwrap();
        let d = &line.json["data"];
        if stream == format!("{lower}@trade") || stream == format!("{lower}@aggTrade") {
            let trade_id = if stream.ends_with("@trade") { &d["t"] } else { &d["a"] };
            r.trades.push(Trade {
                ts_exchange_ms: d["T"].as_i64().unwrap(),
                trade_id: trade_id.as_u64().unwrap(),
                price: num(&d["p"]),
                quantity: num(&d["q"]),
                is_buyer_maker: d["m"].as_bool().unwrap(),
            });
            continue;
        }
        if stream != format!("{lower}@depth@100ms") {
            continue;
        }
        let e = d["E"].as_i64().unwrap();
        let levels = d["b"].as_array().unwrap().len() + d["a"].as_array().unwrap().len();
        r.largest_diff_levels = r.largest_diff_levels.max(levels);
        r.offsets_ms.push(line.recv_ns / 1_000_000 - e);
        let Some(book_id) = id else {
            waiting.push(d.clone());
            (last_e, last_recv) = (e, line.recv_ns);
            continue;
        };
        if let Some(t) = next_t.as_mut() {
            while *t < e {
                r.rows.push(row(&bids, &asks, book_id, last_e, last_recv));
                *t += 100;
            }
        }
        let (first, last) = (d["U"].as_u64().unwrap(), d["u"].as_u64().unwrap());
        if last <= book_id {
            continue;
        }
        assert!(first <= book_id + 1, "no gap in these recordings");
        apply(&mut bids, &mut asks, d);
        id = Some(last);
        (last_e, last_recv) = (e, line.recv_ns);
        if next_t.is_none() {
            next_t = Some(e.div_euclid(100) * 100 + if e % 100 == 0 { 0 } else { 100 });
        }
    }
    if let (Some(_), Some(book_id)) = (next_t, id) {
        r.rows.push(row(&bids, &asks, book_id, last_e, last_recv));
    }
    r
}

fn median(values: &mut [i64]) -> i64 {
    values.sort_unstable();
    // The lower median, as the importer's histogram gives it.
    values[(values.len() - 1) / 2]
}

/// The stored rows and trades equal the independent replay's, one by one.
fn assert_same_as_replay(out: &Path, symbol: &str, report: &ImportReport, mut want: Replay) {
    let rows = stored_snapshots(out, symbol);
    assert!(!rows.is_empty(), "{symbol}: rows were stored");
    assert_eq!(rows.len(), want.rows.len(), "{symbol}: row count");
    for (i, (got, want)) in rows.iter().zip(&want.rows).enumerate() {
        assert_eq!(got, want, "{symbol}: row {i} (update id {})", want.last_update_id);
    }
    let trades = stored_trades(out, symbol);
    assert_eq!(trades, want.trades, "{symbol}: trades");
    assert_eq!(report.diffs_older_than_snapshot, want.dropped_older_than_snapshot, "{symbol}: dropped diffs");
    assert_eq!(report.largest_diff_levels, want.largest_diff_levels, "{symbol}: largest diff");
    assert_eq!(report.clock_offset.median_ms, median(&mut want.offsets_ms), "{symbol}: clock offset");
}

fn assert_book_ticker_agrees(report: &ImportReport) {
    let t = &report.book_ticker;
    assert_eq!(t.equal, t.compared, "{}: the rebuilt top differs from bookTicker: {:?}", report.symbol, t.mismatches);
    assert!(t.mismatches.is_empty());
}

// ---- the real recordings ---------------------------------------------------------

#[test]
fn btcusdt_continued_across_two_files_has_no_gap_agrees_with_book_ticker_and_with_a_replay() {
    let out = temp_dir("btc-excerpt");
    let files = [fixtures().join("btcusdt_excerpt_a.gz"), fixtures().join("btcusdt_excerpt_b.gz")];
    let report = import(RecordFormat::Hftbacktest, "BTCUSDT", &out, &files);
    assert_eq!(report.gaps, 0);
    assert_eq!(report.segments.len(), 1, "one segment: the second file continues the first");
    assert_eq!(report.segments[0].ended_by, "end of input");
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert!(report.book_ticker.compared >= 100, "bookTicker compared at {} update ids", report.book_ticker.compared);
    assert_book_ticker_agrees(&report);
    assert!(report.diffs_older_than_snapshot >= 1, "the first diffs predate the snapshot");
    assert!(report.clock_offset.median_ms < -1000, "the recorder's clock runs behind the exchange's");
    assert_same_as_replay(&out, "BTCUSDT", &report, replay(&hftbacktest_lines(&files), "BTCUSDT"));
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn the_whole_btcusdt_recording_from_shared_data() {
    let Some(dir) = common::fixtures::shared_binance_data() else {
        println!("skipped: ../shared/data/binance (or $QUORUM_BINANCE_DATA) is absent");
        return;
    };
    let out = temp_dir("btc-full");
    let files = [dir.join("spot_btcusdt_20240808.gz"), dir.join("spot_btcusdt_20240809.gz")];
    let report = import(RecordFormat::Hftbacktest, "BTCUSDT", &out, &files);
    assert_eq!(report.gaps, 0, "the two files replay with zero gaps");
    assert_eq!(report.segments.len(), 1);
    assert_eq!(report.crossed_books, 0);
    assert!(report.largest_diff_levels > 1000, "one diff touches over 1,000 levels");
    assert_book_ticker_agrees(&report);
    assert!(report.book_ticker.compared >= 1000);
    // The recording crosses midnight: one file per UTC day.
    let days: Vec<_> = std::fs::read_dir(out.join("BTCUSDT")).unwrap().collect();
    assert_eq!(days.len(), 2);
    assert_same_as_replay(&out, "BTCUSDT", &report, replay(&hftbacktest_lines(&files), "BTCUSDT"));
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn each_cryptofeed_symbol_of_one_interleaved_connection_imports_alone() {
    let (ws, http) = (fixtures().join("cryptofeed_BINANCE.ws.1.0"), fixtures().join("cryptofeed_BINANCE.http.0.0"));
    let mut compared_somewhere = 0;
    let mut lopsided = 0;
    for symbol in ["NKNUSDT", "BLZETH", "LRCBTC", "RUNEEUR"] {
        let out = temp_dir(&format!("cf-{symbol}"));
        // The REST file may come before or after the stream file.
        let report = import(RecordFormat::Cryptofeed, symbol, &out, &[http.clone(), ws.clone()]);
        assert_eq!(report.gaps, 0, "{symbol}");
        assert_eq!(report.snapshots_loaded, 1, "{symbol}");
        assert!(report.diffs_older_than_snapshot >= 1, "{symbol}: its first diffs are older than its snapshot");
        assert!(!report.other_symbols.is_empty(), "{symbol}: the other symbols' frames were skipped");
        assert_book_ticker_agrees(&report);
        compared_somewhere += report.book_ticker.compared;
        let lines = cryptofeed_lines(&ws, &http, symbol);
        let snap = &lines.iter().find(|l| l.snapshot).unwrap().json;
        lopsided += usize::from(snap["bids"].as_array().unwrap().len() != snap["asks"].as_array().unwrap().len());
        assert_same_as_replay(&out, symbol, &report, replay(&lines, symbol));
        let _ = std::fs::remove_dir_all(&out);
    }
    assert!(compared_somewhere > 0, "some bookTicker frames were comparable");
    assert!(lopsided > 0, "a lopsided snapshot was among them");
}

#[test]
fn prices_keep_each_symbols_own_precision() {
    let out = temp_dir("cf-precision");
    let files = [fixtures().join("cryptofeed_BINANCE.ws.1.0"), fixtures().join("cryptofeed_BINANCE.http.0.0")];
    import(RecordFormat::Cryptofeed, "BLZETH", &out, &files);
    let rows = stored_snapshots(&out, "BLZETH");
    // BLZETH trades at 1e-8 ETH steps: every stored price is a whole number of them.
    for s in &rows {
        for l in s.bids.iter().chain(&s.asks).filter(|l| !l.is_missing()) {
            let steps = l.price * 1e8;
            assert!((steps - steps.round()).abs() < 1e-6, "price {} off the 1e-8 grid", l.price);
            assert!(l.price < 0.001, "BLZETH prices are ~6.5e-5 ETH, got {}", l.price);
        }
    }
    let _ = std::fs::remove_dir_all(&out);
}

// ---- bad input -----------------------------------------------------------------------

fn gz_lines(lines: &[String]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    for l in lines {
        writeln!(enc, "{l}").unwrap();
    }
    enc.finish().unwrap()
}

fn excerpt_lines() -> Vec<String> {
    read_text(&fixtures().join("btcusdt_excerpt_a.gz")).lines().map(str::to_owned).collect()
}

#[test]
fn a_truncated_gzip_keeps_what_came_before_and_names_the_file() {
    let dir = temp_dir("truncated");
    let whole = gz_lines(&excerpt_lines());
    let cut = dir.join("cut.gz");
    std::fs::write(&cut, &whole[..whole.len() * 6 / 10]).unwrap();
    let report = import(RecordFormat::Hftbacktest, "BTCUSDT", &dir.join("out"), &[cut]);
    assert!(report.files[0].truncated);
    assert!(
        report.problems.iter().any(|p| p.contains("cut.gz:") && p.contains("the rest of this file is lost")),
        "{:?}",
        report.problems
    );
    assert!(report.snapshots_written > 100, "the part before the cut is stored");
    assert!(report.files[0].lines < excerpt_lines().len() as u64);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn garbage_and_unknown_streams_are_named_by_line_and_the_rest_is_imported() {
    let dir = temp_dir("garbage");
    let mut lines = excerpt_lines();
    let clean = dir.join("clean.gz");
    std::fs::write(&clean, gz_lines(&lines)).unwrap();
    lines.insert(19, "this is not a frame".to_owned());
    lines.insert(29, r#"1723161254300000000 {"stream":"btcusdt@kline_1m","data":{"e":"kline"}}"#.to_owned());
    lines.insert(39, r#"1723161254300000001 {"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate""#.to_owned());
    let dirty = dir.join("dirty.gz");
    std::fs::write(&dirty, gz_lines(&lines)).unwrap();
    let clean_report = import(RecordFormat::Hftbacktest, "BTCUSDT", &dir.join("a"), &[clean]);
    let report = import(RecordFormat::Hftbacktest, "BTCUSDT", &dir.join("b"), &[dirty]);
    let has = |needle: &str| report.problems.iter().any(|p| p.contains(needle));
    assert!(has("dirty.gz:20:"), "{:?}", report.problems);
    assert!(has("dirty.gz:30:") && has("kline_1m"), "{:?}", report.problems);
    assert!(has("dirty.gz:40:"), "{:?}", report.problems);
    assert_eq!(report.files[0].bad_lines, 2, "the garbage line and the cut-off frame");
    // None of the three was a diff of the book: everything else is as without them.
    assert_eq!(stored_snapshots(&dir.join("a"), "BTCUSDT"), stored_snapshots(&dir.join("b"), "BTCUSDT"));
    assert_eq!(report.gaps, clean_report.gaps);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_lost_diff_ends_the_segment_and_is_never_papered_over() {
    let dir = temp_dir("gap");
    let mut lines = excerpt_lines();
    let depth_lines: Vec<usize> =
        lines.iter().enumerate().filter(|(_, l)| l.contains("@depth@100ms")).map(|(i, _)| i).collect();
    let lost = depth_lines[depth_lines.len() / 2];
    lines.remove(lost);
    let file = dir.join("lost.gz");
    std::fs::write(&file, gz_lines(&lines)).unwrap();
    let report = import(RecordFormat::Hftbacktest, "BTCUSDT", &dir.join("out"), &[file]);
    assert_eq!(report.gaps, 1);
    assert_eq!(report.segments.len(), 1, "no later snapshot: nothing after the gap");
    assert!(report.segments[0].ended_by.contains("sequence gap"), "{}", report.segments[0].ended_by);
    let rows = stored_snapshots(&dir.join("out"), "BTCUSDT");
    assert_eq!(rows.len() as u64, report.segments[0].rows);
    let gap_id = report.segments[0].last_update_id;
    assert!(rows.iter().all(|r| r.last_update_id <= gap_id), "no row after the gap");
    assert!(report.problems.iter().any(|p| p.contains("never came")), "{:?}", report.problems);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_diff_touching_1500_levels_is_applied_whole() {
    let dir = temp_dir("wide");
    let mut lines = excerpt_lines();
    // Rewrite the first diff after the snapshot to touch 1,500 far levels besides its own.
    let at = lines.iter().position(|l| l.contains("lastUpdateId")).unwrap();
    let first_after = (at + 1..lines.len()).find(|&i| lines[i].contains("@depth@100ms")).unwrap();
    let (t, j) = lines[first_after].split_once(' ').unwrap();
    let mut v: Value = serde_json::from_str(j).unwrap();
    let bids = v["data"]["b"].as_array_mut().unwrap();
    for k in 0..1500 {
        bids.push(Value::from(vec![format!("{}.00000000", 1000 + k), "0.50000000".to_owned()]));
    }
    lines[first_after] = format!("{t} {v}");
    let file = dir.join("wide.gz");
    std::fs::write(&file, gz_lines(&lines)).unwrap();
    let out = dir.join("out");
    let report = import(RecordFormat::Hftbacktest, "BTCUSDT", &out, std::slice::from_ref(&file));
    assert!(report.largest_diff_levels >= 1500);
    assert_eq!(report.gaps, 0);
    assert_same_as_replay(&out, "BTCUSDT", &report, replay(&hftbacktest_lines(&[file]), "BTCUSDT"));
    let _ = std::fs::remove_dir_all(&dir);
}

fn quorum(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_quorum")).args(args).output().expect("the quorum binary runs")
}

#[test]
fn a_stream_that_starts_before_any_snapshot_writes_nothing_and_says_why() {
    let dir = temp_dir("no-snapshot");
    let out = dir.join("out");
    let b = fixtures().join("btcusdt_excerpt_b.gz");
    let o = quorum(&[
        "import",
        "--format",
        "hftbacktest",
        "--symbol",
        "BTCUSDT",
        "--out",
        out.to_str().unwrap(),
        b.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("btcusdt_excerpt_b.gz:") && stdout.contains("from here on"), "{stdout}");
    assert!(stdout.contains("never came"), "{stdout}");
    assert!(stderr.contains("no snapshot of BTCUSDT could be stored"), "{stderr}");
    let written: Vec<_> = walk(&out);
    assert!(written.is_empty(), "nothing written: {written:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_cli_imports_and_writes_its_report_as_json() {
    let dir = temp_dir("cli");
    let out = dir.join("out");
    let json = dir.join("report.json");
    let (ws, http) = (fixtures().join("cryptofeed_BINANCE.ws.1.0"), fixtures().join("cryptofeed_BINANCE.http.0.0"));
    let o = quorum(&[
        "import",
        "--format",
        "cryptofeed",
        "--symbol",
        "nknusdt",
        "--out",
        out.to_str().unwrap(),
        "--report-json",
        json.to_str().unwrap(),
        ws.to_str().unwrap(),
        http.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(report["symbol"], "NKNUSDT");
    assert_eq!(report["gaps"], 0);
    let written = report["snapshots_written"].as_u64().unwrap();
    assert_eq!(written as usize, stored_snapshots(&out, "NKNUSDT").len());
    let o = quorum(&["import", "--format", "bitmex", "--symbol", "X", "f"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("hftbacktest"), "lists the formats");
    let _ = std::fs::remove_dir_all(&dir);
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
