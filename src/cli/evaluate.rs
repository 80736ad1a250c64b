//! The `evaluate` subcommand: a stored period through the live path, every
//! candidate scored on the same decisions (src/evaluate/, docs/evaluate.md).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};

use super::progress::Progress;
use quorum::backend::gpu::Precision;
use quorum::backend::select::Device;
use quorum::ensemble::EnsembleConfig;
use quorum::evaluate::{evaluate, Bound, EvaluateOptions, Report};
use quorum::server::engine::Engine;
use quorum::weights::Repository;

#[derive(clap::Args, Debug)]
pub struct EvaluateArgs {
    /// The store: `<data>/<SYMBOL>/<day>/…` or `<data>/raw_lob/<SYMBOL>/…`
    /// (what `simulate --out`, `collect` or `import` wrote).
    #[arg(long)]
    pub data: PathBuf,
    /// The symbol; default: the one symbol the store holds (several: name one).
    #[arg(long)]
    pub symbol: Option<String>,
    /// The models evaluated: a model repository (what `train` publishes;
    /// each model's latest version, or --pin's) or a folder of
    /// `mpd_transformer.safetensors`, `tlob.safetensors`, `cnn_lstm.safetensors`.
    /// Default: DATA/weights.
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Evaluate this version of a model instead of its latest, e.g. `--pin tlob=3` (repeatable).
    #[arg(
        long = "pin",
        value_name = "MODEL=VERSION",
        value_parser = quorum::weights::repository::parse_pin,
        conflicts_with = "demo_weights"
    )]
    pub pins: Vec<(quorum::model::ModelKind, u64)>,
    /// The three models at their default configs with the built-in untrained
    /// weights instead of --weights (for timing: the figures mean nothing).
    #[arg(long, conflicts_with = "weights")]
    pub demo_weights: bool,
    /// Start of the evaluated period: Unix ms, or +DURATION after the data's
    /// start (+30m). Before it is the fit period (α, the baselines, warm-up).
    /// Default: the middle of the data.
    #[arg(long, value_parser = Bound::parse)]
    pub from: Option<Bound>,
    /// End of the evaluated period (exclusive), as --from. Default: the end of the data.
    #[arg(long, value_parser = Bound::parse)]
    pub to: Option<Bound>,
    /// Label horizons in ticks, comma-separated; the consensus strategies learn from the first.
    #[arg(long, value_delimiter = ',', default_value = "30")]
    pub horizons: Vec<usize>,
    /// The label threshold α (a return ratio); default: fit on the fit period as training does.
    #[arg(long)]
    pub alpha: Option<f64>,
    /// Fixed cost per trade in basis points (fees, both sides).
    #[arg(long, default_value_t = 1.0)]
    pub cost_bps: f64,
    /// A fixed half-spread per side in bps instead of the stored book's own.
    #[arg(long)]
    pub half_spread_bps: Option<f64>,
    /// Bootstrap resamples per interval.
    #[arg(long, default_value_t = 1000)]
    pub resamples: usize,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// The ensemble's JSON config the consensus strategies start from (docs/consensus.md).
    #[arg(long)]
    pub ensemble_config: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Device::Cpu)]
    pub backend: Device,
    /// f32, bf16 (a CPU with AVX512_BF16, or a GPU), f16 (GPU backends only)
    /// or int8 (a CPU with AVX512_VNNI, or a GPU).
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    pub precision: Precision,
    /// The report folder: decisions.parquet, report.json and report.html.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: EvaluateArgs) -> Result<()> {
    let symbol = quorum::train::data::symbol_or_sole(&args.data, args.symbol.as_deref())?;
    let (raw, _) = quorum::train::data::data_folder(&args.data, &symbol)?;
    let Some(raw) = raw else {
        bail!(
            "--data {}: no stored snapshots; write a store with `quorum simulate --out DIR`, `quorum collect` or `quorum import`",
            args.data.display()
        );
    };
    let config = match &args.ensemble_config {
        Some(p) => EnsembleConfig::from_file(p)?,
        None => EnsembleConfig::default(),
    };
    let engine = Engine::on(args.backend.open()?, args.precision, config)?;
    if !args.demo_weights {
        let dir = match &args.weights {
            Some(dir) => dir.clone(),
            None => {
                let dir = Repository::of_data_folder(&args.data).root().to_path_buf();
                if !dir.is_dir() {
                    bail!(
                        "no models in {} (`quorum train --data {}` publishes there): train first, or give \
                         --weights DIR (or --demo-weights to time untrained models)",
                        dir.display(),
                        args.data.display()
                    );
                }
                dir
            }
        };
        let loaded = engine.load_dir_pinned(&dir, &args.pins).with_context(|| format!("weights {}", dir.display()))?;
        for (m, p) in &loaded.loaded {
            tracing::info!(model = %m, path = %p.display(), "loaded");
        }
        for (m, p) in &loaded.missing {
            tracing::warn!(model = %m, path = %p.display(), "not evaluated: no such weights file");
        }
    } else {
        engine.load_builtin_weights()?;
        tracing::info!("loaded the three default configs with built-in untrained weights (--demo-weights)");
    }
    let opts = EvaluateOptions {
        from: args.from,
        to: args.to,
        horizons: args.horizons.clone(),
        alpha: args.alpha,
        cost_bps: args.cost_bps,
        half_spread_bps: args.half_spread_bps,
        resamples: args.resamples,
        seed: args.seed,
        ..EvaluateOptions::new(&raw, &symbol)
    };
    let progress = Progress::spinner("evaluate");
    let report = evaluate(Arc::new(engine), &opts, &args.out, &mut |line| progress.message(line))?;
    progress.finish();
    print_summary(&report);
    println!(
        "wrote {}, {} and {} (open it in a browser)",
        args.out.join("decisions.parquet").display(),
        args.out.join("report.json").display(),
        args.out.join("report.html").display()
    );
    Ok(())
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "—".into(), |x| format!("{x:.digits$}"))
}

/// The metric table of every horizon, then one sentence per comparison.
pub fn print_summary(report: &Report) {
    let costs = match report.costs.half_spread.as_f64() {
        Some(h) => format!("{} bps a trade + {h} bps half-spread a side", report.costs.cost_per_trade_bps),
        None => format!("{} bps a trade + the book's half-spread at entry and exit", report.costs.cost_per_trade_bps),
    };
    for h in &report.horizons {
        println!(
            "\nhorizon {} ticks: {} decisions, the same for every candidate (α {:.2e}; realized DOWN/NEUTRAL/UP {:.1}/{:.1}/{:.1} %); costs: {costs}",
            h.horizon,
            h.decisions,
            h.alpha,
            100.0 * h.class_shares[0],
            100.0 * h.class_shares[1],
            100.0 * h.class_shares[2]
        );
        println!(
            "{:<20} {:>7} {:>7} {:>7} {:>7} {:>11} {:>6} {:>6} {:>7} {:>9}",
            "candidate", "acc %", "F1", "MCC", "trades", "net bps", "hit %", "PF", "Sharpe", "max DD"
        );
        for s in &h.scores {
            let t = &s.trading;
            println!(
                "{:<20} {:>7.2} {:>7.3} {:>7.3} {:>7} {:>11.1} {:>6} {:>6} {:>7} {:>9.1}",
                s.candidate.name(),
                100.0 * s.classification.accuracy,
                s.classification.f1_macro,
                s.classification.mcc,
                t.trades,
                t.net_pnl_bps,
                opt(t.hit_rate.map(|r| 100.0 * r), 1),
                opt(t.profit_factor, 2),
                opt(t.sharpe_per_trade, 3),
                t.max_drawdown_bps
            );
        }
    }
    println!();
    for v in &report.verdicts {
        println!("{v}");
    }
}
