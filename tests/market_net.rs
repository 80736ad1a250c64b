//! End to end over real loopback sockets: the simulator's exchange →
//! the collector (Binance client) → Parquet, with one injected fault per case.
//!
//! "The stored book equals the true book at every sampled tick" means: for
//! every row the collector wrote, the exchange's truth log has a book at the
//! row's `last_update_id`, and the row's 20 bid and 20 ask levels (price and
//! quantity, bit for bit, NaN where missing) equal it. Every sampled row is
//! checked, before and after the fault, and every sample taken is on disk.
//!
//! Each case is bounded: the exchange ticks every 10 ms, the wait for enough
//! data after the fault has a 40 s deadline, and the collector stops itself.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use quorum::market::client::{handle_text, ClientShared, Endpoint, MessageAction};
use quorum::market::store::read_trades;
use quorum::market::{
    import_files, read_snapshots, ClientTuning, CollectorStats, ExchangeConfig, Fault, ImportOptions, LoopbackExchange,
    RawLOBCollector, RawLOBConfig, RecordFormat, ReplayFeed, ScheduledFault, SimConfig, Snapshot, TruthLog, NUM_LEVELS,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

const SYMBOL: &str = "SIMUSDT";
const FAULT_AT: u64 = 40;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("quorum_net_{name}_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn exchange_config(faults: Vec<ScheduledFault>) -> ExchangeConfig {
    ExchangeConfig {
        sim: SimConfig { symbol: SYMBOL.into(), seed: 11, ..SimConfig::default() },
        tick_interval: Duration::from_millis(10),
        wait_for_client: true,
        faults,
        // Exercise ping/pong: a client that does not answer is dropped
        // (and a clean run then shows reconnects).
        ping_interval: Duration::from_millis(100),
        pong_timeout: Duration::from_millis(1500),
        ..ExchangeConfig::default()
    }
}

fn collector_config(ex: &LoopbackExchange, out: PathBuf, tuning: ClientTuning) -> RawLOBConfig {
    RawLOBConfig {
        symbol: SYMBOL.into(),
        collection_interval: 0.015,
        sequence_length: 20,
        buffer_size: 10_000,
        save_interval: 40,
        endpoint: ex.endpoint(),
        out_dir: out,
        tuning,
        ..RawLOBConfig::default()
    }
}

fn same_levels(a: &Snapshot, b: &Snapshot) -> bool {
    let eq = |x: f64, y: f64| x.to_bits() == y.to_bits();
    (0..NUM_LEVELS).all(|i| {
        eq(a.bids[i].price, b.bids[i].price)
            && eq(a.bids[i].quantity, b.bids[i].quantity)
            && eq(a.asks[i].price, b.asks[i].price)
            && eq(a.asks[i].quantity, b.asks[i].quantity)
    })
}

/// Checks every stored row against the truth; returns the rows.
fn check_against_truth(out: &std::path::Path, truth: &TruthLog, stats: &CollectorStats) -> Vec<Snapshot> {
    let rows: Vec<Snapshot> = read_snapshots(out, SYMBOL).unwrap().collect::<Result<_, _>>().unwrap();
    assert_eq!(rows.len() as u64, stats.saved_snapshots, "rows on disk vs saved counter");
    assert_eq!(rows.len() as u64, stats.samples, "every sample taken is on disk after stop()");
    assert!(!rows.is_empty());
    let mut prev_id = 0;
    for (i, r) in rows.iter().enumerate() {
        let t =
            truth.get(r.last_update_id).unwrap_or_else(|| panic!("row {i}: no true book at id {}", r.last_update_id));
        assert!(same_levels(r, &t), "row {i} (update id {}): stored book differs from the true book", r.last_update_id);
        assert!(r.last_update_id >= prev_id, "row {i}: update ids go back");
        assert!(r.ts_exchange_ms > 0 && r.ts_local_ns > 0, "row {i}: both times are kept");
        prev_id = r.last_update_id;
    }
    let trades: Vec<_> = read_trades(out, SYMBOL).unwrap().collect::<Result<_, _>>().unwrap();
    assert_eq!(trades.len() as u64, stats.saved_trades);
    assert!(trades.windows(2).all(|w| w[0].trade_id < w[1].trade_id), "trades are stored once, in order");
    rows
}

struct Outcome {
    stats: CollectorStats,
    rows: Vec<Snapshot>,
    fault_id: u64,
}

fn tuning(stale_after: Duration) -> ClientTuning {
    ClientTuning {
        connect_timeout: Duration::from_secs(3),
        request_timeout: Duration::from_secs(3),
        stale_after,
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        ..ClientTuning::default()
    }
}

/// Runs the exchange with `fault` at diff event [`FAULT_AT`], collects until
/// `min_after` samples past the fault, stops and checks the stored books.
async fn run_case(name: &str, fault: Option<Fault>, stale_after: Duration) -> Outcome {
    run_case_with(name, fault, tuning(stale_after), 60).await
}

async fn run_case_with(name: &str, fault: Option<Fault>, tuning: ClientTuning, min_after: usize) -> Outcome {
    run_case_on(name, fault, tuning, min_after, false).await
}

/// `run_case_with`, optionally through a TLS front (`wss://` and `https://`).
async fn run_case_on(
    name: &str,
    fault: Option<Fault>,
    mut tuning: ClientTuning,
    min_after: usize,
    tls: bool,
) -> Outcome {
    let out = scratch(name);
    let faults = fault.map(|f| vec![ScheduledFault { at_event: FAULT_AT, fault: f }]).unwrap_or_default();
    let want_fault = !faults.is_empty();
    let ex = LoopbackExchange::start(loopback(), exchange_config(faults)).await.unwrap();
    let counters = ex.counters();
    let truth = ex.truth();
    let mut config = collector_config(&ex, out.clone(), tuning.clone());
    if tls {
        let (front, cert) = tls_front(exchange_addr(&ex)).await;
        config.endpoint =
            Endpoint::new(format!("wss://localhost:{}", front.port()), format!("https://localhost:{}", front.port()));
        tuning.extra_roots.push(cert);
        config.tuning = tuning;
    }
    let mut c = RawLOBCollector::new(config).unwrap();
    c.start().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    loop {
        let fired = counters.faults_fired.load(Ordering::Relaxed) > 0;
        let fault_id = counters.last_fault_update_id.load(Ordering::Relaxed);
        let after = c.buffer().iter().filter(|s| !want_fault || (fired && s.last_update_id > fault_id)).count();
        if (!want_fault || fired) && after >= min_after {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name}: not enough data after the fault within 40 s: {:?}",
            c.stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(c.get_buffer_size() >= 20);
    let seq = c.get_latest_sequence().expect("a full sequence");
    assert_eq!(seq.tensor_shape(), [20, NUM_LEVELS, 4]);
    let stats = tokio::time::timeout(Duration::from_secs(20), c.stop()).await.expect("stop() in time").unwrap();
    let fault_id = counters.last_fault_update_id.load(Ordering::Relaxed);
    let rows = check_against_truth(&out, &truth, &stats);
    // export_to_parquet writes the ring buffer.
    let export = out.join("export");
    let files = c.export_to_parquet(&export).unwrap();
    assert!(!files.is_empty());
    let exported: Vec<Snapshot> = read_snapshots(&export, SYMBOL).unwrap().collect::<Result<_, _>>().unwrap();
    assert_eq!(exported.len(), c.get_buffer_size());
    ex.shutdown().await;
    let _ = std::fs::remove_dir_all(&out);
    eprintln!("{name}: {stats:?}");
    Outcome { stats, rows, fault_id }
}

fn assert_rows_after_fault(o: &Outcome) {
    assert!(o.fault_id > 0);
    assert!(o.rows.iter().filter(|r| r.last_update_id > o.fault_id).count() >= 40, "rows after the fault");
}

const STALE: Duration = Duration::from_secs(3);

fn exchange_addr(ex: &LoopbackExchange) -> SocketAddr {
    ex.endpoint().ws_url.trim_start_matches("ws://").parse().unwrap()
}

/// A TLS front for the exchange, as a real exchange's edge would be: it
/// terminates TLS with a fresh self-signed certificate for `localhost` and
/// relays the plain bytes to `backend`. Returns its address and certificate.
async fn tls_front(backend: SocketAddr) -> (SocketAddr, CertificateDer<'static>) {
    quorum::market::client::install_crypto_provider();
    let issued = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = issued.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(issued.signing_key.serialize_der()));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind(loopback()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                let Ok(mut plain) = tokio::net::TcpStream::connect(backend).await else { return };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    (addr, cert)
}

/// The real wss:// and https:// path: WebSocket over TLS, the REST snapshot
/// over TLS, the certificate checked against a trusted root.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_stream_and_snapshot_match_truth() {
    let o = run_case_on("tls", Some(Fault::CloseSocket), tuning(STALE), 60, true).await;
    assert_rows_after_fault(&o);
    assert!(o.stats.client.snapshots_fetched >= 2, "a snapshot before and after the fault: {:?}", o.stats);
    assert_eq!(o.stats.client.connect_failures, 0, "{:?}", o.stats);
}

/// Without the test root, the certificate is refused: no connection, no data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_an_untrusted_certificate_is_refused() {
    let ex = LoopbackExchange::start(loopback(), exchange_config(Vec::new())).await.unwrap();
    let (front, _cert) = tls_front(exchange_addr(&ex)).await;
    let out = scratch("tls_untrusted");
    let mut config = collector_config(&ex, out.clone(), tuning(STALE));
    config.endpoint =
        Endpoint::new(format!("wss://localhost:{}", front.port()), format!("https://localhost:{}", front.port()));
    let mut c = RawLOBCollector::new(config).unwrap();
    c.start().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while c.stats().client.connect_failures < 2 {
        assert!(tokio::time::Instant::now() < deadline, "no refused connection within 20 s: {:?}", c.stats());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats = c.stop().await.unwrap();
    assert_eq!((stats.client.messages, stats.samples), (0, 0), "{stats:?}");
    ex.shutdown().await;
    let _ = std::fs::remove_dir_all(&out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_run_matches_truth() {
    // ~3 s: long enough for the exchange's pong timeout (1.5 s) to bite if pings went unanswered.
    let o = run_case_with("clean", None, tuning(STALE), 200).await;
    assert_eq!(o.stats.client.resyncs, 0);
    assert_eq!(o.stats.client.gaps, 0);
    assert_eq!(o.stats.client.reconnects, 0);
    assert_eq!(o.stats.rejected_books, 0);
    assert!(o.stats.client.trades > 0);
    assert!(o.stats.files_written >= 2, "several saves: {:?}", o.stats);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_age_limit_reconnects() {
    // Binance cuts a connection at 24 h; the client reconnects before its
    // `max_connection_age` (here 400 ms) and resyncs, losing nothing stored.
    let t = ClientTuning { max_connection_age: Duration::from_millis(400), ..tuning(STALE) };
    let o = run_case_with("age", None, t, 120).await;
    assert!(o.stats.client.reconnects >= 1, "{:?}", o.stats);
    assert!(o.stats.client.resyncs >= 1, "{:?}", o.stats);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_exchange_backs_off_and_stops_cleanly() {
    // Nothing listens on the port: connects fail, the client backs off, and
    // stop() still returns promptly with nothing written.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let out = scratch("unreachable");
    let cfg = RawLOBConfig {
        symbol: SYMBOL.into(),
        endpoint: quorum::market::Endpoint::new(format!("ws://127.0.0.1:{port}"), format!("http://127.0.0.1:{port}")),
        out_dir: out.clone(),
        tuning: tuning(STALE),
        ..RawLOBConfig::default()
    };
    let mut c = RawLOBCollector::new(cfg).unwrap();
    c.start().await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let stats = tokio::time::timeout(Duration::from_secs(10), c.stop()).await.expect("stop() in time").unwrap();
    assert!(stats.client.connect_failures >= 2, "{stats:?}");
    assert_eq!(stats.samples, 0);
    assert!(c.get_latest_sequence().is_none());
    let _ = std::fs::remove_dir_all(&out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_diff_is_a_gap_and_resyncs() {
    let o = run_case("drop", Some(Fault::DropDiff), STALE).await;
    assert_rows_after_fault(&o);
    assert!(o.stats.client.gaps >= 1, "{:?}", o.stats);
    assert!(o.stats.client.resyncs >= 1, "{:?}", o.stats);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicated_diff_is_ignored() {
    let o = run_case("duplicate", Some(Fault::DuplicateDiff), STALE).await;
    assert_rows_after_fault(&o);
    // A duplicate is stale (u <= the book's id): no gap, no resync needed.
    assert_eq!(o.stats.client.gaps, 0, "{:?}", o.stats);
    assert_eq!(o.stats.client.resyncs, 0, "{:?}", o.stats);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reordered_diffs_resync() {
    let o = run_case("reorder", Some(Fault::ReorderDiffs), STALE).await;
    assert_rows_after_fault(&o);
    assert!(o.stats.client.gaps >= 1, "{:?}", o.stats);
    assert!(o.stats.client.resyncs >= 1, "{:?}", o.stats);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_socket_reconnects_and_resyncs() {
    let o = run_case("close", Some(Fault::CloseSocket), STALE).await;
    assert_rows_after_fault(&o);
    assert!(o.stats.client.reconnects >= 1, "{:?}", o.stats);
    assert!(o.stats.client.resyncs >= 1, "{:?}", o.stats);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_resyncs() {
    let o = run_case("malformed", Some(Fault::MalformedJson), STALE).await;
    assert_rows_after_fault(&o);
    assert!(o.stats.client.parse_errors >= 1, "{:?}", o.stats);
    assert!(o.stats.client.resyncs >= 1, "{:?}", o.stats);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stall_trips_the_staleness_watchdog() {
    // The stream goes silent for 4 s; the watchdog (0.5 s) reconnects.
    let o = run_case("stall", Some(Fault::Stall(Duration::from_secs(4))), Duration::from_millis(500)).await;
    assert_rows_after_fault(&o);
    assert!(o.stats.client.stale_timeouts >= 1, "{:?}", o.stats);
    assert!(o.stats.client.reconnects >= 1, "{:?}", o.stats);
    assert!(o.stats.client.resyncs >= 1, "{:?}", o.stats);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_shutdown_reconnects_at_once() {
    let o = run_case("shutdown", Some(Fault::ServerShutdown), STALE).await;
    assert_rows_after_fault(&o);
    assert_eq!(o.stats.client.server_shutdowns, 1, "{:?}", o.stats);
    assert!(o.stats.client.reconnects >= 1, "{:?}", o.stats);
    assert!(o.stats.client.resyncs >= 1, "{:?}", o.stats);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_older_than_the_stream_is_refetched() {
    let o = run_case("stale_snapshot", Some(Fault::StaleSnapshot { ticks_old: 30 }), STALE).await;
    assert_rows_after_fault(&o);
    assert!(o.stats.client.snapshots_too_old >= 1, "{:?}", o.stats);
    assert!(o.stats.client.resyncs >= 1, "{:?}", o.stats);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_honours_retry_after() {
    let t0 = std::time::Instant::now();
    let o = run_case("rate_limit", Some(Fault::RateLimit { retry_after_secs: 1 }), STALE).await;
    assert_rows_after_fault(&o);
    assert_eq!(o.stats.client.rate_limited, 1, "{:?}", o.stats);
    assert!(o.stats.client.resyncs >= 1, "{:?}", o.stats);
    // The 1 s wait happened (a lower bound only).
    assert!(t0.elapsed() >= Duration::from_secs(1));
}

/// HTTP 418 (an IP ban after ignored 429s) is waited out like a 429.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_ban_honours_retry_after() {
    let t0 = std::time::Instant::now();
    let o = run_case("ip_ban", Some(Fault::IpBan { retry_after_secs: 1 }), STALE).await;
    assert_rows_after_fault(&o);
    assert_eq!(o.stats.client.rate_limited, 1, "{:?}", o.stats);
    assert!(o.stats.client.resyncs >= 1, "{:?}", o.stats);
    assert!(t0.elapsed() >= Duration::from_secs(1));
}

/// Random, truncated and mutated messages through the client's message path:
/// never a panic, and the book stays consistent.
#[test]
fn client_message_path_survives_garbage() {
    let mut sim =
        quorum::market::MarketSimulator::new(SimConfig { symbol: SYMBOL.into(), ..SimConfig::default() }).unwrap();
    let shared = Arc::new(ClientShared::new(SYMBOL));
    let snap = sim.rest_snapshot(1000);
    shared.live.lock().book.apply_snapshot(&snap).unwrap();
    let mut state = 0x1234_5678_9abc_def0u64;
    let mut rnd = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let sym = SYMBOL.to_ascii_lowercase();
    let mut resyncs = 0;
    for _ in 0..3000 {
        let tick = sim.step().unwrap();
        let mut msgs = Vec::new();
        if let Some(d) = tick.depth_update {
            msgs.push(quorum::market::binance::combined_json(&format!("{sym}@depth@100ms"), &d.to_json()));
        }
        for t in tick.trades {
            msgs.push(quorum::market::binance::combined_json(&format!("{sym}@aggTrade"), &t.to_json()));
        }
        for m in msgs {
            let r = rnd();
            let text: String = match r % 8 {
                0 => m.chars().take((rnd() as usize) % (m.len() + 1)).collect(),
                1 => {
                    let mut b = m.clone().into_bytes();
                    let i = (rnd() as usize) % b.len();
                    b[i] = (rnd() % 128) as u8;
                    String::from_utf8_lossy(&b).into_owned()
                }
                2 => (0..(rnd() % 64)).map(|_| char::from((rnd() % 95 + 32) as u8)).collect(),
                3 => m.replace("\"u\":", "\"u\":-").replace("\"p\":\"", "\"p\":\"-"),
                _ => m,
            };
            match handle_text(&shared, &text, 1) {
                MessageAction::Resync(_) => {
                    resyncs += 1;
                    shared.live.lock().book.clear();
                    let s = sim.rest_snapshot(1000);
                    let _ = shared.live.lock().book.apply_snapshot(&s);
                }
                MessageAction::Gap(_) | MessageAction::NeedSnapshot => {
                    let s = sim.rest_snapshot(1000);
                    let _ = shared.live.lock().book.apply_snapshot(&s);
                }
                _ => {}
            }
            shared.live.lock().book.check_invariants().unwrap();
        }
    }
    assert!(resyncs > 0);
    // A clean resync at the end gives the simulator's book exactly.
    shared.live.lock().book.clear();
    let s = sim.rest_snapshot(1000);
    shared.live.lock().book.apply_snapshot(&s).unwrap();
    let got = shared.live.lock().book.snapshot(0, 0).unwrap();
    assert!(same_levels(&got, sim.snapshot()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_drops_a_client_that_never_answers_pings() {
    use futures_util::StreamExt;
    let cfg = ExchangeConfig {
        ping_interval: Duration::from_millis(50),
        pong_timeout: Duration::from_millis(300),
        ..exchange_config(Vec::new())
    };
    let ex = LoopbackExchange::start(loopback(), cfg).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::connect_async(ex.endpoint().stream_url(SYMBOL)).await.unwrap();
    // Not reading means not answering the pings.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // The server gave up on us: after what it had sent, the stream ends.
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(m)) = ws.next().await {
            if m.is_close() {
                break;
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the exchange kept a client that never answered a ping");
    ex.shutdown().await;
}

/// `collect --record-frames`, then `import` of what it recorded, gives back
/// every snapshot the collector stored, bit for bit with both times, and the
/// same trades, through a dropped diff (a gap both must see and both must
/// resync from the same recorded snapshot). The import samples every 1 ms of
/// exchange time, so each state the collector could have sampled is a row.
async fn record_then_import(name: &str, ex: LoopbackExchange, symbol: &str, min_samples: u64) {
    let out = scratch(name);
    let mut config = collector_config(&ex, out.join("raw"), tuning(STALE));
    config.symbol = symbol.into();
    config.record_frames = Some(out.join("frames"));
    let mut c = RawLOBCollector::new(config).unwrap();
    c.start().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    while c.stats().client.resyncs == 0 || c.stats().samples < min_samples {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name}: no resync and {min_samples} samples within 40 s: {:?}",
            c.stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats = c.stop().await.unwrap();
    ex.shutdown().await;
    let recorded = c.recorded_frames().expect("the recorder ran");
    assert_eq!(recorded.dropped, 0);
    assert!(recorded.frames >= stats.client.messages, "every frame is recorded: {recorded:?} {stats:?}");

    let mut opts = ImportOptions::new(RecordFormat::Hftbacktest, symbol, out.join("imported"));
    opts.interval_ms = 1;
    let report = import_files(&opts, &recorded.files, &mut |_| {}).unwrap();
    assert_eq!(report.gaps, stats.client.gaps, "{name}: the dropped diff is a gap in the recording too: {report}");
    assert!(report.gaps >= 1);
    assert_eq!(report.snapshots_loaded, stats.client.snapshots_fetched, "{report}");

    let imported: std::collections::HashMap<u64, Snapshot> = read_snapshots(&out.join("imported"), symbol)
        .unwrap()
        .map(|r| r.map(|s| (s.last_update_id, s)))
        .collect::<Result<_, _>>()
        .unwrap();
    let collected: Vec<Snapshot> = read_snapshots(&out.join("raw"), symbol).unwrap().collect::<Result<_, _>>().unwrap();
    assert_eq!(collected.len() as u64, stats.samples);
    for (i, row) in collected.iter().enumerate() {
        let again = imported
            .get(&row.last_update_id)
            .unwrap_or_else(|| panic!("{name}: row {i}: the import has no book at update id {}", row.last_update_id));
        assert_eq!(again, row, "{name}: row {i} (update id {})", row.last_update_id);
    }
    let trades = |dir: &str| -> Vec<_> { read_trades(&out.join(dir), symbol).unwrap().map(|t| t.unwrap()).collect() };
    assert_eq!(trades("imported"), trades("raw"));
    let _ = std::fs::remove_dir_all(&out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_frames_of_the_simulator_import_back_to_every_stored_snapshot() {
    let faults = vec![ScheduledFault { at_event: FAULT_AT, fault: Fault::DropDiff }];
    let ex = LoopbackExchange::start(loopback(), exchange_config(faults)).await.unwrap();
    record_then_import("record_sim", ex, SYMBOL, 150).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_frames_of_a_replay_import_back_to_every_stored_snapshot() {
    let dir = common::fixtures::fixtures_dir().join("binance");
    let files = [dir.join("btcusdt_excerpt_a.gz"), dir.join("btcusdt_excerpt_b.gz")];
    let feed = ReplayFeed::open(RecordFormat::Hftbacktest, "BTCUSDT", &files, 8.0).unwrap();
    let faults = vec![ScheduledFault { at_event: FAULT_AT, fault: Fault::DropDiff }];
    let ex = LoopbackExchange::start_replay(loopback(), exchange_config(faults), feed).await.unwrap();
    record_then_import("record_replay", ex, "BTCUSDT", 150).await;
}

/// `simulate --serve --replay`: the real BTCUSDT recording served over the
/// protocol at 8× its pace, with one fault of every kind injected in turn.
/// Every row the collector stores equals the replayed book (the replay's
/// own truth log) at its update id, before, between and after the faults.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_recording_is_collected_exactly_through_every_fault() {
    let dir = common::fixtures::fixtures_dir().join("binance");
    let files = [dir.join("btcusdt_excerpt_a.gz"), dir.join("btcusdt_excerpt_b.gz")];
    let feed = ReplayFeed::open(RecordFormat::Hftbacktest, "btcusdt", &files, 8.0).unwrap();
    let kinds = [
        Fault::DropDiff,
        Fault::DuplicateDiff,
        Fault::ReorderDiffs,
        Fault::MalformedJson,
        Fault::CloseSocket,
        Fault::StaleSnapshot { ticks_old: 3 },
        Fault::ServerShutdown,
        Fault::Stall(Duration::from_millis(300)),
        Fault::RateLimit { retry_after_secs: 1 },
    ];
    let faults: Vec<ScheduledFault> = kinds
        .iter()
        .enumerate()
        .map(|(i, f)| ScheduledFault { at_event: 30 * (i as u64 + 1), fault: f.clone() })
        .collect();
    let n_faults = faults.len() as u64;
    let ex = LoopbackExchange::start_replay(loopback(), exchange_config(faults), feed).await.unwrap();
    let (counters, truth) = (ex.counters(), ex.truth());
    let out = scratch("replay");
    let config = RawLOBConfig {
        symbol: "BTCUSDT".into(),
        collection_interval: 0.015,
        save_interval: 40,
        endpoint: ex.endpoint(),
        out_dir: out.clone(),
        tuning: tuning(STALE),
        ..RawLOBConfig::default()
    };
    let mut c = RawLOBCollector::new(config).unwrap();
    c.start().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let fired = counters.faults_fired.load(Ordering::Relaxed);
        let last_id = counters.last_fault_update_id.load(Ordering::Relaxed);
        let after = c.buffer().iter().filter(|s| s.last_update_id > last_id).count();
        if fired == n_faults && after >= 40 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{fired} faults and {after} rows after the last in 60 s: {:?}",
            c.stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats = c.stop().await.unwrap();
    ex.shutdown().await;
    let rows: Vec<Snapshot> = read_snapshots(&out, "BTCUSDT").unwrap().collect::<Result<_, _>>().unwrap();
    assert_eq!(rows.len() as u64, stats.samples);
    assert!(rows.len() >= 150, "{} rows", rows.len());
    for (i, r) in rows.iter().enumerate() {
        let t = truth
            .get(r.last_update_id)
            .unwrap_or_else(|| panic!("row {i}: no replayed book at id {}", r.last_update_id));
        assert!(
            same_levels(r, &t),
            "row {i} (update id {}): stored book differs from the replayed one",
            r.last_update_id
        );
    }
    assert!(stats.client.resyncs >= 5, "the faults made the client resync: {stats:?}");
    assert!(stats.client.rate_limited >= 1, "{stats:?}");
    assert!(stats.saved_trades > 0, "the recording's trades arrive as aggTrades: {stats:?}");
    let _ = std::fs::remove_dir_all(&out);
}

/// A symbol the exchange does not serve is refused (HTTP 400 at the
/// WebSocket handshake): the client stops at once with the server's words
/// instead of reconnecting forever, and `stop()` returns that error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_symbol_stops_the_collector_with_the_servers_reason() {
    let ex = LoopbackExchange::start(loopback(), exchange_config(Vec::new())).await.unwrap();
    let out = scratch("refused");
    let mut config = collector_config(&ex, out.clone(), tuning(STALE));
    config.symbol = "WRONGUSDT".into();
    let mut c = RawLOBCollector::new(config).unwrap();
    c.start().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !c.client_failed() {
        assert!(tokio::time::Instant::now() < deadline, "still retrying after 10 s: {:?}", c.stats());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let err = c.stop().await.unwrap_err().to_string();
    assert!(err.contains("HTTP 400"), "{err}");
    assert!(err.contains("this exchange serves simusdt@depth@100ms"), "names what it serves: {err}");
    assert!(err.contains("retrying will not change that"), "{err}");
    assert_eq!(c.stats().client.reconnects, 0, "no reconnect after a refusal");
    ex.shutdown().await;
    let _ = std::fs::remove_dir_all(&out);
}
