//! The `quorum` command line.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};

mod cli;

use cli::{bench_symbols, demo, evaluate, features, market, models, serve, train};

use quorum::backend::gpu::Precision;
use quorum::backend::select::Device;
use quorum::model::LobNormalization;

#[derive(Parser)]
#[command(name = "quorum", version, about = "An engine for an ensemble of order-book models")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Logs (warnings, reconnects, training jobs, requests at debug) go to
    /// stderr as text lines or as one JSON object a line, each with its
    /// timestamp, level and span fields.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    /// The least severe level logged.
    #[arg(long, value_enum, default_value_t = LogLevel::Info, global = true)]
    log_level: LogLevel,
    /// Give the CPU backend's batch-1 helper (the second core of every op
    /// it splits in two) this CPU alone, and every other thread of quorum
    /// the remaining ones (Linux): a neighbour on the helper's core delays
    /// every op of a batch-1 forward. rayon's workers keep every CPU.
    #[arg(long, global = true)]
    helper_cpu: Option<usize>,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum LogFormat {
    Text,
    Json,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

/// Logs to stderr (stdout stays the commands' own output, e.g. a table to pipe).
fn init_logging(format: LogFormat, level: LogLevel) {
    use tracing_subscriber::filter::LevelFilter;
    let level = match level {
        LogLevel::Error => LevelFilter::ERROR,
        LogLevel::Warn => LevelFilter::WARN,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Debug => LevelFilter::DEBUG,
        LogLevel::Trace => LevelFilter::TRACE,
    };
    let builder = tracing_subscriber::fmt().with_writer(std::io::stderr).with_max_level(level);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init(),
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(true).init(),
    }
}

#[derive(Subcommand)]
enum Command {
    /// The whole system on a built-in default, no setup, no network: a simulated
    /// market's history, a short training of the three models, then the ensemble
    /// live on a simulated exchange with the server up.
    Demo(demo::DemoArgs),
    /// Print a weights file's model kind, config and parameter count.
    Info { weights: PathBuf },
    /// Run one model on the tensors of an input file and write its outputs.
    Infer {
        #[arg(long)]
        weights: PathBuf,
        /// safetensors with `features (B,60,112)`, `lob (B,100,20,4)` and/or `aux (B,112)`.
        #[arg(long)]
        input: PathBuf,
        /// safetensors to write, one tensor per output name.
        #[arg(long)]
        output: PathBuf,
        #[arg(long, value_enum, default_value_t = Device::Auto)]
        backend: Device,
        /// Weights and products: f32, bf16 (GPU tensor cores, or a CPU with
        /// AVX512_BF16), f16 (GPU backends only) or int8 (GPU tensor cores,
        /// or a CPU with AVX512_VNNI; docs/models.md's int8 bounds).
        #[arg(long, value_enum, default_value_t = Precision::F32)]
        precision: Precision,
    },
    /// Time each model's forward pass and print a table to paste into an issue.
    Bench {
        /// Batch sizes to time.
        #[arg(long, value_delimiter = ',', default_values_t = vec![1usize, 32])]
        batch: Vec<usize>,
        /// Timed runs per model and batch size (after 10% warm-up).
        #[arg(long, default_value_t = 200)]
        iters: usize,
        #[arg(long, value_enum, default_value_t = Device::Auto)]
        backend: Device,
        /// Only these models (mpd_transformer, tlob, cnn_lstm); all by default.
        #[arg(long, value_delimiter = ',')]
        model: Vec<String>,
        /// Launch every kernel one by one instead of replaying the recorded
        /// forward (CUDA graph); no effect on the CPU.
        #[arg(long)]
        no_graphs: bool,
        /// Weights and products: f32, bf16 (GPU tensor cores, or a CPU with
        /// AVX512_BF16), f16 (GPU backends only) or int8 (GPU tensor cores,
        /// or a CPU with AVX512_VNNI; docs/models.md's int8 bounds).
        #[arg(long, value_enum, default_value_t = Precision::F32)]
        precision: Precision,
        /// Also time the ensemble tick: the engine's decision (the three
        /// models at batch 1, one after the other on the backend's stream,
        /// then the consensus), as `serve` makes it per request (recorded
        /// forwards always: the engine replays them).
        #[arg(long)]
        ensemble: bool,
        /// Instead of the per-model table, time live mode's tick for these
        /// symbol counts (`1,8,32,64`): that many simulated markets, each
        /// tick's decisions made together (one forward per model, batch =
        /// symbols); --iters is the ticks timed per count. Prints the tick's
        /// p50 and p99 and the largest count under a 100 ms tick.
        #[arg(long, value_delimiter = ',')]
        symbols: Vec<usize>,
        /// With --symbols: the built-in TLOB's input contract. `snapshot`
        /// normalizes each snapshot on its own, so a tick encodes only the
        /// new snapshots (docs/models.md, "The TLOB tick").
        #[arg(long, value_parser = ["window", "snapshot"], default_value = "window")]
        lob_normalization: String,
    },
    /// Build the 112-feature table (docs/features.md) of each symbol's stored
    /// snapshots and trades: `<out>/<SYMBOL>.parquet`.
    Features {
        /// The collector's store: `<raw>/<SYMBOL>/<YYYY-MM-DD>/*.parquet`.
        #[arg(long, default_value = "data/raw_lob")]
        raw: PathBuf,
        #[arg(long, default_value = "data/features")]
        out: PathBuf,
        /// One symbol; default: every symbol folder under --raw.
        #[arg(long)]
        symbol: Option<String>,
    },
    /// Run the synthetic market: write Parquet (`--out DIR --duration 2h`) or
    /// serve it as a loopback exchange speaking Binance's protocol (`--serve 127.0.0.1:PORT`).
    Simulate(market::SimulateArgs),
    /// Collect an order book from Binance (or any server speaking its protocol) into Parquet.
    Collect(market::CollectArgs),
    /// Import recorded Binance frames (hftbacktest, cryptofeed) into the store `collect` writes.
    Import(market::ImportArgs),
    /// Replay a stored period through the live path and score every model, every consensus
    /// strategy and simple baselines on the same decisions, net of costs, with intervals.
    Evaluate(Box<evaluate::EvaluateArgs>),
    /// Train one architecture (or all three) with walk-forward validation on a data folder.
    Train(train::TrainArgs),
    /// Serve the ensemble over HTTP (docs/api.md), optionally live from the simulator or Binance.
    Serve(Box<serve::ServeArgs>),
}

/// For commands that print and end: a closed stdout (`quorum info W | head`)
/// ends the process quietly, as it does any Unix filter, instead of a panic
/// in `println!`. Long-running commands (serve, collect, demo, simulate
/// --serve) keep Rust's default: the write fails and they go on.
fn end_quietly_on_closed_stdout() {
    #[cfg(unix)]
    // SAFETY: restoring a signal's default action, before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format, cli.log_level);
    if let Some(cpu) = cli.helper_cpu {
        let rest = quorum::backend::cpu::pin_helper(cpu)?;
        tracing::info!(helper = cpu, others = ?rest, "the batch-1 helper has its CPU to itself");
    }
    let long_running = match &cli.command {
        Command::Demo(_) | Command::Collect(_) | Command::Serve(_) => true,
        Command::Simulate(args) => args.serve.is_some(),
        _ => false,
    };
    if !long_running {
        end_quietly_on_closed_stdout();
    }
    match cli.command {
        Command::Demo(args) => demo::demo(args),
        Command::Info { weights } => models::info(&weights),
        Command::Infer { weights, input, output, backend, precision } => {
            models::infer(&weights, &input, &output, backend, precision)
        }
        Command::Bench { symbols, iters, backend, precision, lob_normalization, .. } if !symbols.is_empty() => {
            let snapshot = lob_normalization == "snapshot";
            let norm = if snapshot { LobNormalization::Snapshot } else { LobNormalization::Window };
            bench_symbols::bench_symbols(&symbols, iters, backend, precision, norm)
        }
        Command::Bench { lob_normalization, .. } if lob_normalization != "window" => {
            anyhow::bail!("--lob-normalization applies to live ticks: give it with --symbols")
        }
        Command::Bench { batch, iters, backend, model, no_graphs, precision, ensemble, .. } => {
            models::bench(&batch, iters, backend, &model, !no_graphs, precision)?;
            if ensemble {
                models::bench_ensemble(iters, backend, precision)?;
            }
            Ok(())
        }
        Command::Features { raw, out, symbol } => features::features(&raw, &out, symbol.as_deref()),
        Command::Simulate(args) => market::simulate(args),
        Command::Collect(args) => market::collect(args),
        Command::Import(args) => market::import(args),
        Command::Evaluate(args) => evaluate::run(*args),
        Command::Train(args) => train::train(args),
        Command::Serve(args) => serve::serve(*args),
    }
}
