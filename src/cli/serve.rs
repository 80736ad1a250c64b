//! The `serve` subcommand: the engine behind the HTTP API, optionally fed live
//! from the built-in simulator (`--simulate`) or Binance (`--live SYMBOL`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;

use quorum::backend::select::Device;
use quorum::backend::Precision;
use quorum::ensemble::EnsembleConfig;
use quorum::market::{Endpoint, ExchangeConfig, LoopbackExchange, SimConfig, BINANCE_REST_URL, BINANCE_WS_URL};
use quorum::server::engine::Engine;
use quorum::server::live::{LiveConfig, LiveMarket, LiveObserver, LiveRunner, MAX_LIVE_SYMBOLS};
use quorum::server::{DataFolderLauncher, Extras, Metrics, Server, ServerConfig, TrainingLauncher};
use quorum::weights::Repository;

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on. Anything but loopback needs --allow-remote and --token.
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub bind: SocketAddr,
    /// Allow a non-loopback --bind (every POST then needs the token).
    #[arg(long)]
    pub allow_remote: bool,
    /// Bearer token required on every POST (at least 16 characters).
    #[arg(long)]
    pub token: Option<String>,
    /// Read the bearer token from this file instead (its first line): a token
    /// on the command line is visible to every user of the machine in `ps`.
    /// E.g. a container secret, /run/secrets/quorum_token.
    #[arg(long, value_name = "PATH", conflicts_with = "token")]
    pub token_file: Option<PathBuf>,
    /// An origin (scheme://host[:port]) whose web pages may call the API
    /// (repeatable). Requests carrying any other Origin header are refused.
    #[arg(long = "allow-origin", value_name = "ORIGIN")]
    pub allow_origins: Vec<String>,
    /// A Host name accepted besides the address bound (and loopback names when
    /// bound to loopback): NAME (any port) or NAME:PORT, e.g. a proxy's or a
    /// DNS name in front of the server (repeatable). Other Hosts are refused
    /// (no DNS rebinding).
    #[arg(long = "allow-host", value_name = "HOST")]
    pub allow_hosts: Vec<String>,
    /// Open connections at most; over it the longest-idle one is closed to make
    /// room (health stays reachable through a small reserve).
    #[arg(long, default_value_t = 1024)]
    pub max_connections: usize,
    /// Open connections of one client address (IPv6: one /64) at most; over it
    /// that client's longest-idle connection is closed to make room.
    #[arg(long, default_value_t = 128)]
    pub max_connections_per_ip: usize,
    /// The model repository (what `quorum train` publishes: <model>/<version>/model.safetensors;
    /// each model's latest version is loaded, or the one --pin names), or a folder of
    /// mpd_transformer.safetensors, tlob.safetensors, cnn_lstm.safetensors. Default with --data:
    /// DATA/weights. Any missing model is not loaded (predict then runs the others, or the
    /// consensus only). `POST /api/ensemble/models/load` reads only files inside it (and the
    /// training output under --data); the training endpoints publish into it.
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Load this version of a model instead of its latest, e.g. `--pin tlob=3` (repeatable).
    #[arg(
        long = "pin",
        value_name = "MODEL=VERSION",
        value_parser = quorum::weights::repository::parse_pin,
        conflicts_with = "demo_weights"
    )]
    pub pins: Vec<(quorum::model::ModelKind, u64)>,
    /// Load the three models at their default configs with the built-in deterministic,
    /// untrained weights (as `quorum demo`): for trying the server without trained weights.
    #[arg(long, conflicts_with = "weights")]
    pub demo_weights: bool,
    /// The ensemble's JSON config (docs/consensus.md); default: docs/consensus.md's default config.
    #[arg(long)]
    pub ensemble_config: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Device::Auto)]
    pub backend: Device,
    /// Confine every thread of the server (tokio workers, the CPU backend's
    /// helper, training jobs) to these CPUs: `2,3`, `2-5` or `2-3,6`. For a
    /// colocated box, give it CPUs isolated from the kernel's scheduler
    /// (docs/deployment.md). Default: whatever the process was started with.
    #[arg(long, value_parser = parse_cpu_list)]
    pub cpus: Option<CpuList>,
    /// Live mode on the built-in simulator, served as a loopback exchange.
    #[arg(long, conflicts_with = "live")]
    pub simulate: bool,
    /// With --simulate: how many simulated markets (SIM1USDT, SIM2USDT, …, each
    /// its own seed), decided together every tick as --live does with several symbols.
    #[arg(long, default_value_t = 1, requires = "simulate")]
    pub sim_symbols: usize,
    /// Live mode on Binance spot for these symbols, comma-separated (e.g.
    /// BTCUSDT or BTCUSDT,ETHUSDT,SOLUSDT; at most 128). Every tick decides all
    /// of them together: one forward per model, batch = symbols.
    #[arg(long, value_delimiter = ',')]
    pub live: Vec<String>,
    /// With --live: the WebSocket base URL (`wss://host:port` or `ws://host:port`),
    /// e.g. a `quorum simulate --serve ADDR --replay FILE...` of a recording.
    #[arg(long, requires = "live", default_value = BINANCE_WS_URL)]
    pub ws_url: String,
    /// With --live: the REST base URL (`https://host` or `http://host:port`).
    #[arg(long, requires = "live", default_value = BINANCE_REST_URL)]
    pub rest_url: String,
    /// With --simulate: wall-clock milliseconds per simulated 100 ms tick (lower runs the market faster).
    #[arg(long, default_value_t = 100)]
    pub sim_tick_ms: u64,
    /// With --simulate: the simulator's seed.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Live mode: milliseconds between samples of the book (one decision per sample once warm).
    #[arg(long, default_value_t = 100)]
    pub sample_ms: u64,
    /// Stop by itself after this long (`90s`, `15m`, `1h 30m`; a bare number is
    /// seconds). Default: until Ctrl-C.
    #[arg(long, value_parser = quorum::market::parse_duration)]
    pub duration: Option<Duration>,
    /// A data folder as `quorum train --data` reads it: enables the training
    /// endpoints, which train from it on the serving backend (without it they answer 501).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// The served models' weights and products: f32, bf16 (GPU tensor cores,
    /// or a CPU with AVX512_BF16; within docs/models.md's 16-bit
    /// tolerances), f16 (GPU backends only) or int8 (GPU tensor cores, or a
    /// CPU with AVX512_VNNI; docs/models.md's int8 bounds). Training jobs
    /// follow `use_amp` instead.
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    pub precision: Precision,
    /// The memory a training job (--data) may be estimated to need, in MiB;
    /// a larger job is refused before it starts (docs/security.md, "Limits").
    #[arg(long, default_value_t = 4096)]
    pub training_memory_mb: u64,
    /// The largest weights file `POST /api/ensemble/models/load` reads, in MiB.
    #[arg(long, default_value_t = 1024)]
    pub max_weights_mb: u64,
}

pub fn serve(mut args: ServeArgs) -> Result<()> {
    // First, before any thread starts: every thread made later inherits the mask.
    if let Some(CpuList(cpus)) = &args.cpus {
        pin_to(cpus)?;
        tracing::info!(?cpus, "serve: threads confined to these CPUs");
    }
    // Before the models load: a bad token file fails at once.
    args.token = token_of(&args)?;
    let config = match &args.ensemble_config {
        Some(p) => EnsembleConfig::from_file(p)?,
        None => EnsembleConfig::default(),
    };
    // Training jobs (--data) run on the serving backend.
    let precision = args.precision;
    let device = args.backend.open()?;
    let train_on = device.device();
    let engine = Engine::on(device, precision, config)?;
    if let Some(dir) = weights_dir(&args).filter(|_| !args.demo_weights) {
        if args.weights.is_none() && !dir.exists() && args.pins.is_empty() {
            println!("no models yet in {} (`quorum train --data` publishes there)", dir.display());
        } else {
            let report =
                engine.load_dir_pinned(&dir, &args.pins).with_context(|| format!("weights {}", dir.display()))?;
            for (m, p) in &report.loaded {
                println!("loaded {m} from {}", p.display());
            }
            for (m, p) in &report.missing {
                println!("not loaded: {m} (no {} there)", p.display());
            }
        }
    } else if !args.pins.is_empty() {
        bail!("--pin names a version in a model repository: give --weights DIR (or --data DIR, whose repository is DIR/weights)");
    }
    if args.demo_weights {
        engine.load_builtin_weights()?;
        println!("loaded the three models with built-in untrained weights (--demo-weights)");
    }
    if engine.loaded_models().is_empty() {
        println!(
            "no model loaded: predict serves the consensus of given predictions only; every management endpoint works"
        );
    }
    if args.sample_ms == 0 || args.sim_tick_ms == 0 {
        bail!("--sample-ms and --sim-tick-ms must be at least 1");
    }
    if args.duration.is_some_and(|d| d.is_zero()) {
        bail!("--duration must be longer than zero");
    }
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().context("starting tokio")?;
    rt.block_on(run(args, Arc::new(engine), train_on))
}

/// The most a token file may hold: a token is a line, not a document.
const MAX_TOKEN_FILE_BYTES: u64 = 4096;

/// The bearer token, from `--token` or the first line of `--token-file`
/// (the server checks its length and characters, as for `--token`).
fn token_of(args: &ServeArgs) -> Result<Option<String>> {
    let Some(path) = &args.token_file else { return Ok(args.token.clone()) };
    let named = || format!("--token-file {}", path.display());
    let len = std::fs::metadata(path).with_context(named)?.len();
    if len > MAX_TOKEN_FILE_BYTES {
        bail!("{}: {len} bytes; a token file holds one line (at most {MAX_TOKEN_FILE_BYTES} bytes)", named());
    }
    let text = std::fs::read_to_string(path).with_context(named)?;
    let token = text.lines().next().unwrap_or("").trim_end();
    if token.is_empty() {
        bail!("{}: the file's first line is empty; write the token there", named());
    }
    Ok(Some(token.to_owned()))
}

async fn run(args: ServeArgs, engine: Arc<Engine>, train_on: Device) -> Result<()> {
    let metrics = Arc::new(Metrics::default());
    let mut exchanges = Vec::new();
    let live_cfg = if args.simulate {
        if !(1..=MAX_LIVE_SYMBOLS).contains(&args.sim_symbols) {
            bail!("--sim-symbols must be 1 to {MAX_LIVE_SYMBOLS}");
        }
        let mut markets = Vec::with_capacity(args.sim_symbols);
        for k in 0..args.sim_symbols as u64 {
            // One symbol keeps the simulator's own name; several are numbered, each its own market.
            let base = SimConfig::default();
            let symbol = if args.sim_symbols == 1 { base.symbol.clone() } else { format!("SIM{}USDT", k + 1) };
            let sim = SimConfig { seed: args.seed.wrapping_add(k), symbol: symbol.clone(), ..base };
            let cfg = ExchangeConfig {
                sim,
                tick_interval: Duration::from_millis(args.sim_tick_ms),
                truth_capacity: 1_000,
                ..Default::default()
            };
            let ex = LoopbackExchange::start(SocketAddr::from(([127, 0, 0, 1], 0)), cfg).await?;
            println!("simulator exchange on {} ({symbol})", ex.local_addr());
            markets.push(LiveMarket { symbol, endpoint: ex.endpoint() });
            exchanges.push(ex);
        }
        Some(LiveConfig { markets, ..LiveConfig::default() })
    } else if args.live.is_empty() {
        None
    } else {
        let symbols: Vec<String> = args.live.iter().map(|s| s.trim().to_ascii_uppercase()).collect();
        Some(LiveConfig::on(&symbols, &Endpoint::new(args.ws_url.clone(), args.rest_url.clone())))
    };
    let live = match live_cfg {
        Some(cfg) => {
            let cfg = LiveConfig { sample_interval: Duration::from_millis(args.sample_ms), ..cfg };
            let observer: Arc<dyn LiveObserver> = metrics.clone();
            let runner = LiveRunner::start(cfg.clone(), engine.clone(), Some(observer)).context("--live")?;
            let symbols: Vec<&str> = cfg.markets.iter().map(|m| m.symbol.as_str()).collect();
            println!(
                "live mode: {} every {} ms; decisions once warm (200 one-second candles, then 60 feature vectors)",
                symbols.join(","),
                args.sample_ms
            );
            Some(runner)
        }
        None => None,
    };
    let weights_dir = weights_dir(&args);
    let config = ServerConfig {
        bind: args.bind,
        allow_remote: args.allow_remote,
        token: args.token,
        allow_origins: args.allow_origins,
        allow_hosts: args.allow_hosts,
        max_connections: args.max_connections,
        max_connections_per_ip: args.max_connections_per_ip,
        weights_dir,
        max_weights_bytes: args.max_weights_mb.saturating_mul(1 << 20),
        training_memory_budget: args.training_memory_mb.saturating_mul(1 << 20),
        ..Default::default()
    };
    let launcher = args.data.as_ref().map(|d| {
        let launcher = DataFolderLauncher::new(d).on(train_on);
        let launcher = match &args.weights {
            Some(w) => launcher.publishing_to(w),
            None => launcher,
        };
        Arc::new(launcher) as Arc<dyn TrainingLauncher>
    });
    let extras = Extras { live: live.as_ref().map(|l| l.hubs()).unwrap_or_default(), launcher, metrics: Some(metrics) };
    let server = Server::start(config, engine, extras).await?;
    println!("quorum serve: listening on http://{}; Ctrl-C to stop", server.local_addr());
    let wait = async {
        match args.duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => println!("quorum serve: Ctrl-C, stopping"),
        _ = wait => println!("quorum serve: --duration reached, stopping"),
    }
    server.shutdown().await;
    if let Some(l) = live {
        let c = l.counters();
        l.stop().await;
        println!("live: {} ticks, {} decisions, {} resyncs", c.ticks, c.decisions, c.resyncs);
    }
    for ex in exchanges {
        ex.shutdown().await;
    }
    Ok(())
}

/// The CPUs of `--cpus`, sorted, each once (one value to clap, not a list of them).
#[derive(Debug, Clone)]
pub struct CpuList(pub Vec<usize>);

/// `2,3`, `2-5`, `2-3,6` → the CPU numbers, sorted, each once.
fn parse_cpu_list(text: &str) -> Result<CpuList, String> {
    let bad = || format!("{text:?}: CPU numbers and ranges, comma-separated (2,3 or 2-5 or 2-3,6)");
    let mut cpus = Vec::new();
    for part in text.split(',') {
        let (first, last) = match part.trim().split_once('-') {
            Some((a, b)) => {
                (a.trim().parse::<usize>().map_err(|_| bad())?, b.trim().parse::<usize>().map_err(|_| bad())?)
            }
            None => {
                let n = part.trim().parse::<usize>().map_err(|_| bad())?;
                (n, n)
            }
        };
        if first > last || last >= 1024 {
            return Err(bad());
        }
        cpus.extend(first..=last);
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(CpuList(cpus))
}

/// The model repository (or weights folder) the server loads from and its
/// training jobs publish into: --weights, else the data folder's.
fn weights_dir(args: &ServeArgs) -> Option<PathBuf> {
    args.weights.clone().or_else(|| args.data.as_deref().map(|d| Repository::of_data_folder(d).root().to_path_buf()))
}

/// Confines the calling thread (and every thread it starts from now on) to
/// `cpus`, which must not include `--helper-cpu`'s (the helper's alone).
fn pin_to(cpus: &[usize]) -> Result<()> {
    use quorum::backend::cpu::affinity;
    let available = affinity::allowed().map_err(|e| anyhow::anyhow!("--cpus: reading this process's CPUs: {e}"))?;
    let missing: Vec<usize> = cpus.iter().copied().filter(|c| !available.contains(c)).collect();
    if !missing.is_empty() {
        bail!("--cpus: {missing:?} are not CPUs this process may run on; it may use {available:?}");
    }
    affinity::confine(cpus).map_err(|e| anyhow::anyhow!("--cpus {cpus:?}: {e}"))
}
