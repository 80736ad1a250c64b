//! The `simulate`, `collect` and `import` subcommands (market data).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::progress::Progress;
use clap::Args;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use quorum::market::{
    import_files, parse_duration, simulate_to_parquet, Endpoint, ExchangeConfig, Fault, ImportOptions,
    LoopbackExchange, RawLOBCollector, RawLOBConfig, RecordFormat, ReplayFeed, ScheduledFault, SimConfig,
    BINANCE_REST_URL, BINANCE_WS_URL,
};

#[derive(Args, Debug)]
pub struct SimulateArgs {
    /// Write `DURATION` of snapshots and trades as Parquet under this directory.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// How much market time to write (`90s`, `15m`, `2h`, `1h 30m`, `1d`; a bare
    /// number is seconds; default 2h); with `--serve`, how long to serve.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// 0 = a pure random walk; up to 2.
    #[arg(long, default_value_t = 1.0)]
    pub signal_strength: f64,
    /// Planted effect seen only in levels 11–20 (a wall whose place predicts the drift); 0 = off, up to 2.
    #[arg(long, default_value_t = 0.0)]
    pub depth_effect: f64,
    /// Planted effect over tens of seconds (drift from a slow latent's 30 s change); 0 = off, up to 2.
    #[arg(long, default_value_t = 0.0)]
    pub slow_effect: f64,
    /// Planted effect seen through the candle features (pull toward the 50 s SMA); 0 = off, up to 2.
    #[arg(long, default_value_t = 0.0)]
    pub feature_effect: f64,
    /// Only one enabled effect drives the drift at a time; the live one switches about every 3 minutes.
    #[arg(long)]
    pub regime_switching: bool,
    /// The simulator's symbol (default SIMUSDT); with `--replay`, the recording's symbol to serve (required).
    #[arg(long)]
    pub symbol: Option<String>,
    /// Serve the simulator as a loopback exchange (Binance protocol) on this address until Ctrl-C.
    #[arg(long)]
    pub serve: Option<SocketAddr>,
    /// With `--serve`: wall-clock milliseconds per tick.
    #[arg(long, default_value_t = 100)]
    pub tick_ms: u64,
    /// With `--serve`: inject a fault, `KIND@N` at the N-th diff event; KIND is drop, duplicate,
    /// reorder, close, malformed, shutdown, stall:SECS, stale:TICKS, ratelimit:SECS (HTTP 429) or
    /// ipban:SECS (HTTP 418). Repeatable.
    #[arg(long = "fault")]
    pub faults: Vec<String>,
    /// With `--serve`: serve these recorded files (in time order) instead of
    /// the simulator, at their recorded pace divided by `--speed`.
    #[arg(long, num_args = 1.., requires = "serve")]
    pub replay: Vec<PathBuf>,
    /// The tool that recorded the `--replay` files.
    #[arg(long, value_enum, default_value = "hftbacktest")]
    pub replay_format: RecordFormat,
    /// With `--replay`: how many times faster than recorded.
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
}

#[derive(Args, Debug)]
pub struct CollectArgs {
    #[arg(long, default_value = "BTCUSDT")]
    pub symbol: String,
    #[arg(long, default_value = "data/raw_lob")]
    pub out: PathBuf,
    /// WebSocket base URL (`wss://host:port` or `ws://host:port`).
    #[arg(long, default_value = BINANCE_WS_URL)]
    pub ws_url: String,
    /// REST base URL (`https://host` or `http://host:port`).
    #[arg(long, default_value = BINANCE_REST_URL)]
    pub rest_url: String,
    /// Stop by itself after this long (`30s`, `2h`; a bare number is seconds). Default: until Ctrl-C.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Milliseconds between snapshots.
    #[arg(long, default_value_t = 100)]
    pub interval_ms: u64,
    /// Snapshots between saves to Parquet.
    #[arg(long, default_value_t = 1000)]
    pub save_interval: usize,
    #[arg(long, default_value_t = 20)]
    pub levels: usize,
    /// Seconds of stream silence before the watchdog reconnects.
    #[arg(long, default_value_t = 15.0)]
    pub stale_after: f64,
    /// Milliseconds between status lines (on stderr).
    #[arg(long, default_value_t = 1000)]
    pub status_ms: u64,
    /// A PEM file of certificates to trust besides the public roots (a private CA
    /// in front of a colocated gateway). Repeatable.
    #[arg(long = "ca-cert")]
    pub ca_certs: Vec<PathBuf>,
    /// Also write every frame as received, with its receive time in ns, to this
    /// folder (hftbacktest's format, gzip, one file per UTC hour), for
    /// `quorum import` or `simulate --replay` later.
    #[arg(long)]
    pub record_frames: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// The tool that recorded the files.
    #[arg(long, value_enum)]
    pub format: RecordFormat,
    /// The symbol to import (a recording may hold several).
    #[arg(long)]
    pub symbol: String,
    /// The store's root, as `collect --out`.
    #[arg(long, default_value = "data/raw_lob")]
    pub out: PathBuf,
    /// Exchange-time milliseconds between stored snapshots.
    #[arg(long, default_value_t = 100)]
    pub interval_ms: i64,
    #[arg(long, default_value_t = 20)]
    pub levels: usize,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    pub report_json: Option<PathBuf>,
    /// The recorded files, in time order (a later file may continue an earlier
    /// one; cryptofeed's REST `.http` files may come anywhere).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

/// `quorum import`: fails (after writing) when the rebuilt book disagrees
/// with Binance's own bookTicker, or when nothing could be stored.
pub fn import(args: ImportArgs) -> Result<()> {
    let mut opts = ImportOptions::new(args.format, &args.symbol, &args.out);
    opts.interval_ms = args.interval_ms;
    opts.num_levels = args.levels;
    let started = Instant::now();
    let progress = Progress::spinner("import");
    let report = import_files(&opts, &args.files, &mut |line| progress.message(line))?;
    progress.finish();
    print!("{report}");
    println!("  took {:.2} s", started.elapsed().as_secs_f64());
    if let Some(path) = &args.report_json {
        let json = serde_json::to_vec_pretty(&report)?;
        quorum::fsutil::write_atomic(path, &json).with_context(|| format!("--report-json {}", path.display()))?;
    }
    let t = &report.book_ticker;
    if t.compared > t.equal {
        bail!(
            "the rebuilt book disagrees with Binance's bookTicker at {} of {} update ids: the files are written but do not trust them",
            t.compared - t.equal,
            t.compared
        );
    }
    if report.snapshots_written == 0 {
        bail!("no snapshot of {} could be stored (see the problems above)", opts.symbol);
    }
    Ok(())
}

/// `KIND@N` → a scheduled fault.
pub fn parse_fault(text: &str) -> Result<ScheduledFault> {
    let (kind, at) = text.split_once('@').with_context(|| format!("--fault {text:?}: expected KIND@N"))?;
    let at_event: u64 = at.parse().with_context(|| format!("--fault {text:?}: N must be a whole number"))?;
    let (name, arg) = match kind.split_once(':') {
        Some((n, a)) => (n, Some(a)),
        None => (kind, None),
    };
    let num = |what: &str| -> Result<u64> {
        arg.with_context(|| format!("--fault {text:?}: {name} needs :{what}"))?
            .parse()
            .with_context(|| format!("--fault {text:?}: {what} must be a whole number"))
    };
    let fault = match name {
        "drop" => Fault::DropDiff,
        "duplicate" => Fault::DuplicateDiff,
        "reorder" => Fault::ReorderDiffs,
        "close" => Fault::CloseSocket,
        "malformed" => Fault::MalformedJson,
        "shutdown" => Fault::ServerShutdown,
        "stall" => Fault::Stall(Duration::from_secs(num("SECS")?)),
        "stale" => Fault::StaleSnapshot { ticks_old: num("TICKS")? as usize },
        "ratelimit" => Fault::RateLimit { retry_after_secs: num("SECS")? },
        "ipban" => Fault::IpBan { retry_after_secs: num("SECS")? },
        other => bail!("--fault {text:?}: unknown kind {other:?}"),
    };
    Ok(ScheduledFault { at_event, fault })
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().context("starting tokio")
}

pub fn simulate(args: SimulateArgs) -> Result<()> {
    let replay = if args.replay.is_empty() {
        None
    } else {
        let Some(symbol) = args.symbol.as_deref() else {
            bail!("--replay needs --symbol: the recording's symbol to serve (e.g. BTCUSDT)");
        };
        Some(ReplayFeed::open(args.replay_format, symbol, &args.replay, args.speed)?)
    };
    let sim = SimConfig {
        symbol: args.symbol.clone().unwrap_or_else(|| "SIMUSDT".into()),
        seed: args.seed,
        signal_strength: args.signal_strength,
        depth_effect: args.depth_effect,
        slow_effect: args.slow_effect,
        feature_effect: args.feature_effect,
        regime_switching: args.regime_switching,
        ..SimConfig::default()
    };
    sim.validate()?;
    if let Some(addr) = args.serve {
        if args.out.is_some() {
            bail!("--serve and --out are separate modes: pick one");
        }
        let faults = args.faults.iter().map(|f| parse_fault(f)).collect::<Result<Vec<_>>>()?;
        let limit = args.duration;
        let cfg = ExchangeConfig {
            sim,
            tick_interval: Duration::from_millis(args.tick_ms.max(1)),
            faults,
            // Nobody reads the truth log of a served exchange: keep it small.
            truth_capacity: 1_000,
            ..Default::default()
        };
        return runtime()?.block_on(serve(addr, cfg, replay, limit));
    }
    let Some(out) = args.out else {
        bail!("simulate needs --out DIR (write Parquet) or --serve ADDR (loopback exchange)");
    };
    // A second market written over the first would interleave two price paths
    // at the same times: refuse, and say what to do instead.
    let existing = quorum::market::store::list_files(&out, &sim.symbol, quorum::market::store::SNAPSHOT_PREFIX)
        .map(|f| f.len())
        .unwrap_or(0);
    if existing > 0 {
        bail!(
            "--out {}: already holds {existing} snapshot file(s) of {}; a second simulated market would interleave \
             with it: write to an empty folder, pick another --symbol, or remove {}",
            out.display(),
            sim.symbol,
            out.join(&sim.symbol).display()
        );
    }
    let duration = args.duration.unwrap_or(Duration::from_secs(2 * 3600));
    let t0 = Instant::now();
    let mut progress: Option<Progress> = None;
    let summary = simulate_to_parquet(&sim, &out, duration, |done, total| {
        progress.get_or_insert_with(|| Progress::bar("simulate", total, "ticks")).set(done, total);
    })?;
    if let Some(p) = progress {
        p.finish();
    }
    if !summary.stale_removed.is_empty() {
        println!(
            "simulate: removed {} temporary file(s) of an earlier run that was killed mid-write",
            summary.stale_removed.len()
        );
    }
    println!(
        "simulate: {} ticks, {} trades, {} diff events in {:.1} s; {} snapshot and {} trade files under {}",
        summary.ticks,
        summary.trades,
        summary.depth_events,
        t0.elapsed().as_secs_f64(),
        summary.snapshot_files.len(),
        summary.trade_files.len(),
        out.display()
    );
    Ok(())
}

async fn serve(
    addr: SocketAddr,
    cfg: ExchangeConfig,
    replay: Option<ReplayFeed>,
    limit: Option<Duration>,
) -> Result<()> {
    let ex = match replay {
        Some(feed) => LoopbackExchange::start_replay(addr, cfg, feed).await?,
        None => LoopbackExchange::start(addr, cfg).await?,
    };
    let ep = ex.endpoint();
    println!("serving {} (ws {}, rest {}); Ctrl-C to stop", ex.local_addr(), ep.ws_url, ep.rest_url);
    let wait = async {
        match limit {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = wait => {}
    }
    let c = ex.counters();
    println!(
        "served {} ticks, {} diff events, {} WebSocket connections, {} REST requests",
        c.ticks.load(std::sync::atomic::Ordering::Relaxed),
        c.depth_events.load(std::sync::atomic::Ordering::Relaxed),
        c.ws_connections.load(std::sync::atomic::Ordering::Relaxed),
        c.rest_requests.load(std::sync::atomic::Ordering::Relaxed)
    );
    ex.shutdown().await;
    Ok(())
}

pub fn collect(args: CollectArgs) -> Result<()> {
    let mut cfg = RawLOBConfig {
        symbol: args.symbol.to_ascii_uppercase(),
        num_levels: args.levels,
        collection_interval: args.interval_ms as f64 / 1000.0,
        save_interval: args.save_interval,
        endpoint: Endpoint::new(args.ws_url, args.rest_url),
        out_dir: args.out.clone(),
        record_frames: args.record_frames.clone(),
        ..RawLOBConfig::default()
    };
    if !(args.stale_after.is_finite() && args.stale_after > 0.0) {
        bail!("--stale-after must be a positive number of seconds");
    }
    cfg.tuning.stale_after = Duration::from_secs_f64(args.stale_after);
    for path in &args.ca_certs {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| anyhow::anyhow!("--ca-cert {}: {e}", path.display()))?;
        if certs.is_empty() {
            bail!("--ca-cert {}: no certificate in the file", path.display());
        }
        cfg.tuning.extra_roots.extend(certs);
    }
    let limit = args.duration;
    let status_every = Duration::from_millis(args.status_ms.max(50));
    runtime()?.block_on(collect_async(cfg, limit, status_every, &args.out))
}

fn status_line(c: &RawLOBCollector) -> String {
    let s = c.stats();
    format!(
        "status: snapshots={} saved={} trades_saved={} resyncs={} gaps={} reconnects={} rejected={} parse_errors={} MB={:.2}",
        s.samples,
        s.saved_snapshots,
        s.saved_trades,
        s.client.resyncs,
        s.client.gaps,
        s.client.reconnects,
        s.rejected_books,
        s.client.parse_errors,
        s.bytes_written as f64 / 1e6
    )
}

async fn collect_async(cfg: RawLOBConfig, limit: Option<Duration>, status_every: Duration, out: &Path) -> Result<()> {
    let mut collector = RawLOBCollector::new(cfg)?;
    collector.start().await?;
    tracing::info!(out = %out.display(), "collect: writing");
    let deadline = limit.map(|d| tokio::time::Instant::now() + d);
    let mut status = tokio::time::interval(status_every);
    loop {
        let until = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = status.tick() => {
                if collector.client_failed() {
                    break;
                }
                tracing::info!("{}", status_line(&collector));
            }
            _ = tokio::signal::ctrl_c() => { tracing::info!("collect: Ctrl-C, flushing"); break; }
            _ = until => break,
        }
    }
    let stats = collector.stop().await?;
    tracing::info!("{}", status_line(&collector));
    println!(
        "collect: {} snapshots saved in {} files ({:.2} MB), {} resyncs, {} reconnects",
        stats.saved_snapshots,
        stats.files_written,
        stats.bytes_written as f64 / 1e6,
        stats.client.resyncs,
        stats.client.reconnects
    );
    if let Some(rec) = collector.recorded_frames() {
        println!(
            "collect: {} frames recorded in {} files ({} dropped: the writer fell behind){}",
            rec.frames,
            rec.files.len(),
            rec.dropped,
            rec.files.last().map(|f| format!(", last {}", f.display())).unwrap_or_default()
        );
    }
    Ok(())
}
