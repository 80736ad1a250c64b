//! `quorum demo`: the whole system on the built-in default, with no setup and
//! no network (issue 8): a simulated market's history → the 112 features →
//! a short training of the three models (small configs, CPU) → the trained
//! ensemble live on a simulated exchange over loopback (the Binance client,
//! the order book, streaming features, one decision per tick), printing
//! decisions, accuracy so far and latency per stage, with the HTTP server up
//! for curl. It ends by itself after `--decisions`, or runs on with `--forever`.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use quorum::ensemble::{Direction, EnsembleConfig};
use quorum::evaluate::{evaluate, Bound, EvaluateOptions};
use quorum::market::{simulate_to_parquet, ExchangeConfig, LoopbackExchange, SimConfig};
use quorum::model::{ModelConfig, ModelKind};
use quorum::server::engine::{model_type, Engine};
use quorum::server::live::{LiveConfig, LiveRunner};
use quorum::server::{DataFolderLauncher, Extras, Server, ServerConfig, TrainingLauncher};
use quorum::train::{MultiModelTrainer, TrainingConfig};
use quorum::weights::Repository;
use quorum::Cpu;
use serde_json::Value;

const SYMBOL: &str = "SIMUSDT";
/// The label horizon of the primary outputs (ticks), and of the live scoring.
const HORIZON: usize = 30;

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// A short run for CI: 10 minutes of history, one epoch, fewer decisions.
    #[arg(long)]
    pub quick: bool,
    /// Keep serving live decisions until Ctrl-C instead of stopping after --decisions.
    #[arg(long)]
    pub forever: bool,
    /// Live decisions to make before stopping (default 1000; 200 with --quick).
    #[arg(long)]
    pub decisions: Option<u64>,
    /// Minutes of simulated history to train on (default 60; 10 with --quick).
    #[arg(long)]
    pub history_minutes: Option<u64>,
    /// Training epochs per model (default 3; 1 with --quick).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Where the server listens (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub bind: SocketAddr,
    /// Keep the data, checkpoints and models here (default: a temporary folder, removed at the end).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// The simulated markets' seed (history: this one; live: the next; the evaluated market: the one after).
    #[arg(long, default_value_t = 5)]
    pub seed: u64,
    /// Where the final evaluation writes report.html, report.json and decisions.parquet.
    #[arg(long, default_value = "quorum-demo-report")]
    pub report: PathBuf,
}

/// What the demo trained: each model's file and held-out figures, and the
/// label threshold α of the primary horizon (for scoring live decisions).
struct Trained {
    models: Vec<(ModelKind, PathBuf)>,
    alpha: f64,
}

pub fn demo(args: DemoArgs) -> Result<()> {
    let decisions = args.decisions.unwrap_or(if args.quick { 200 } else { 1000 });
    let minutes = args.history_minutes.unwrap_or(if args.quick { 10 } else { 60 });
    let epochs = args.epochs.unwrap_or(if args.quick { 1 } else { 3 });
    if decisions == 0 || minutes == 0 || epochs == 0 {
        bail!("--decisions, --history-minutes and --epochs must be at least 1");
    }
    let (data, temporary) = match &args.data {
        Some(d) => (d.clone(), false),
        None => (std::env::temp_dir().join(format!("quorum-demo-{}", std::process::id())), true),
    };
    println!("quorum demo: market history → features → training → live ensemble over loopback, all on this CPU.");
    println!("data folder: {}{}\n", data.display(), if temporary { " (removed at the end)" } else { "" });
    let t0 = Instant::now();
    let outcome = (|| {
        history(&data, minutes, args.seed)?;
        let trained = train_all(&data, epochs, args.seed)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("starting tokio")?;
        rt.block_on(live(&args, &data, &trained, decisions))?;
        evaluate_held_out(&args, &data)
    })();
    if temporary {
        let _ = std::fs::remove_dir_all(&data);
    }
    outcome?;
    println!("\nquorum demo: done in {:.0} s.", t0.elapsed().as_secs_f64());
    Ok(())
}

/// Step 1: a seeded market with a planted order-flow signal, 100 ms snapshots
/// and trades, written as the collector would (Parquet day files).
fn history(data: &Path, minutes: u64, seed: u64) -> Result<()> {
    let sim = SimConfig { symbol: SYMBOL.into(), seed, signal_strength: 2.0, ..SimConfig::default() };
    let t = Instant::now();
    let s = simulate_to_parquet(&sim, &data.join("raw_lob"), Duration::from_secs(minutes * 60), |_, _| {})?;
    println!(
        "[1/5] simulated {minutes} min of {SYMBOL} (signal strength 2.0): {} snapshots, {} trades in {:.1} s",
        s.ticks,
        s.trades,
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Steps 2 and 3: features from the stored book, then each model trained with
/// walk-forward validation (one purged split), its held-out figures beside the
/// majority-class rate and the logistic-regression baseline.
fn train_all(data: &Path, epochs: usize, seed: u64) -> Result<Trained> {
    println!(
        "[2/5] features and labels: computed by the trainer from the stored book (112 features, horizon {HORIZON})"
    );
    println!("[3/5] training the three models (small configs, {epochs} epoch(s) each, CPU):");
    let be = Cpu::new();
    let mut models = Vec::new();
    let mut alpha = None;
    let mut rows = Vec::new();
    for kind in ModelKind::ALL {
        let model = ModelConfig::small(kind);
        let cfg = TrainingConfig {
            architecture: kind,
            sequence_length: model.sequence_length(),
            batch_size: 64,
            learning_rate: 1e-3,
            epochs,
            early_stopping_patience: 2,
            walk_forward_splits: 1,
            validation_split: 0.2,
            gradient_accumulation_steps: 1,
            horizon: HORIZON,
            seed,
            checkpoint_dir: data.join("checkpoints").display().to_string(),
            model: Some(model),
            ..TrainingConfig::default()
        };
        let mut trainer = MultiModelTrainer::<Cpu>::new(&be, cfg)?;
        super::train::show_progress(&mut trainer);
        trainer.load_data(None, Some(&data.join("raw_lob")), SYMBOL)?;
        let r = trainer.train_walk_forward()?;
        let fold = r.folds.last().context("training produced no fold")?;
        let best = fold.best().context("training produced no validated epoch")?;
        if alpha.is_none() && kind != ModelKind::Tlob {
            alpha = fold.alpha.first().copied();
        }
        rows.push(format!(
            "  {:16} held-out accuracy {:5.1}%  (majority class {:5.1}%, baseline {:5.1}%)  {:4.0} s",
            kind.as_str(),
            100.0 * best.metrics.accuracy,
            100.0 * best.metrics.majority_class_rate,
            100.0 * fold.baseline.accuracy,
            r.training_time_seconds
        ));
        // Published as `quorum train` publishes: the repository the next steps load from.
        let (_, published) = trainer.publish(&Repository::of_data_folder(data), data, &r)?;
        models.push((kind, published));
    }
    println!();
    for row in rows {
        println!("{row}");
    }
    Ok(Trained { models, alpha: alpha.context("no label threshold in the results")? })
}

/// Step 5: `quorum evaluate` on a market none of the models has seen: every
/// model, consensus strategy and baseline on the same decisions, net of costs.
fn evaluate_held_out(args: &DemoArgs, data: &Path) -> Result<()> {
    let (minutes, fit_minutes) = if args.quick { (8, 5) } else { (30, 10) };
    let sim = SimConfig { symbol: SYMBOL.into(), seed: args.seed + 2, signal_strength: 2.0, ..SimConfig::default() };
    let store = data.join("held_out");
    simulate_to_parquet(&sim, &store, Duration::from_secs(minutes * 60), |_, _| {})?;
    println!(
        "\n[5/5] evaluate: {minutes} min of a market none of the models has seen (seed {}); the first {fit_minutes} \
         fit α, the baselines and warm the pipeline up; the rest is replayed through the live path",
        args.seed + 2
    );
    let engine = Arc::new(Engine::new(Cpu::new(), EnsembleConfig::default())?);
    engine.load_dir(Repository::of_data_folder(data).root())?;
    let opts = EvaluateOptions {
        from: Some(Bound::AfterStart(fit_minutes as i64 * 60_000)),
        horizons: vec![HORIZON],
        ..EvaluateOptions::new(&store, SYMBOL)
    };
    let report = evaluate(engine, &opts, &args.report, &mut |_| {})?;
    println!(
        "      the models are the small demo configs (ModelConfig::small), trained {} on {} min: not the defaults",
        if args.quick { "one epoch" } else { "briefly" },
        args.history_minutes.unwrap_or(if args.quick { 10 } else { 60 })
    );
    super::evaluate::print_summary(&report);
    println!("\nthe report: open {} in a browser", args.report.join("report.html").display());
    Ok(())
}

/// A live decision waiting for its horizon to pass.
struct Pending {
    seq: u64,
    id: u64,
    mid: f64,
    consensus: Option<Direction>,
    models: Vec<(String, Direction)>,
}

/// Accuracy so far: right calls over scored ones.
#[derive(Default)]
struct Score {
    right: u64,
    total: u64,
}

impl Score {
    fn add(&mut self, right: bool) {
        self.total += 1;
        self.right += u64::from(right);
    }

    fn show(&self) -> String {
        if self.total == 0 {
            "  -  ".into()
        } else {
            format!("{:4.1}%", 100.0 * self.right as f64 / self.total as f64)
        }
    }
}

fn direction(v: &Value) -> Option<Direction> {
    match v.as_str()? {
        "up" => Some(Direction::Up),
        "down" => Some(Direction::Down),
        "neutral" => Some(Direction::Neutral),
        _ => None,
    }
}

/// Step 4: the trained models in the engine, live on a fresh simulated
/// market, with the server up.
async fn live(args: &DemoArgs, data: &Path, trained: &Trained, target: u64) -> Result<()> {
    let engine = Arc::new(Engine::new(Cpu::new(), EnsembleConfig::default())?);
    for (kind, path) in &trained.models {
        engine.load_file(model_type(*kind), path).with_context(|| format!("loading {}", path.display()))?;
    }
    // A market the models have not seen (another seed), ticking 10× faster than real time.
    let sim = SimConfig { symbol: SYMBOL.into(), seed: args.seed + 1, signal_strength: 2.0, ..SimConfig::default() };
    let tick = Duration::from_millis(if args.quick { 5 } else { 10 });
    let ex_cfg = ExchangeConfig { sim, tick_interval: tick, truth_capacity: 1_000, ..Default::default() };
    let exchange = LoopbackExchange::start(SocketAddr::from(([127, 0, 0, 1], 0)), ex_cfg).await?;
    let live_cfg = LiveConfig { sample_interval: tick, ..LiveConfig::on(&[SYMBOL.into()], &exchange.endpoint()) };
    let runner = LiveRunner::start(live_cfg, engine.clone(), None)?;
    let hubs = runner.hubs();
    let hub = hubs[0].clone();
    let launcher: Arc<dyn TrainingLauncher> = Arc::new(DataFolderLauncher::new(data));
    let extras = Extras { live: hubs, launcher: Some(launcher), metrics: None };
    // The repository the models were published into: `POST /models/load` takes their versions.
    let weights_dir = Some(Repository::of_data_folder(data).root().to_path_buf());
    let server =
        Server::start(ServerConfig { bind: args.bind, weights_dir, ..Default::default() }, engine.clone(), extras)
            .await
            .with_context(|| format!("starting the server on {} (another port: --bind 127.0.0.1:0)", args.bind))?;
    let url = format!("http://{}", server.local_addr());
    println!(
        "\n[4/5] live: simulated exchange on {}, one decision per {} ms tick once warm",
        exchange.local_addr(),
        tick.as_millis()
    );
    if args.forever {
        println!("      the server is up until Ctrl-C; try:");
    } else {
        // Warm-up (200 one-second candles) comes first, then one decision per tick.
        println!(
            "      the server is up until {target} decisions are made (after the warm-up, about {:.0} s; --forever \
             keeps it up until Ctrl-C); try, while it runs:",
            target as f64 * tick.as_secs_f64()
        );
    }
    println!("        curl {url}/api/ensemble/status");
    println!("        curl {url}/api/ensemble/live/latest");
    println!("        curl -N {url}/api/ensemble/live/stream");
    println!("        curl -X POST {url}/api/ensemble/strategy -H 'Content-Type: application/json' -d '{{\"strategy\": \"adaptive\"}}'");
    println!("        curl {url}/metrics\n");

    let mut rx = hub.subscribe();
    let mut mids: BTreeMap<u64, f64> = BTreeMap::new();
    let mut pending: VecDeque<Pending> = VecDeque::new();
    let (mut ensemble, mut per_model) = (Score::default(), BTreeMap::<String, Score>::new());
    // How often each direction was realized: the majority-class rate is the bar to beat.
    let mut realized_counts = [0u64; 3];
    let mut stage_us: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut seen = 0u64;
    let mut last_warmup = Instant::now();
    let stop = tokio::signal::ctrl_c();
    tokio::pin!(stop);
    loop {
        let entry = tokio::select! {
            _ = &mut stop => { println!("Ctrl-C: stopping"); break; }
            _ = tokio::time::sleep(Duration::from_secs(1)), if seen == 0 => {
                if last_warmup.elapsed() >= Duration::from_secs(2) {
                    let s = hub.status();
                    println!("      warming up: {} one-second candles of 200, {} ticks", s.completed_candles, s.counters.ticks);
                    last_warmup = Instant::now();
                }
                continue;
            }
            e = rx.recv() => match e {
                Ok(e) => e,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            },
        };
        let v: Value = serde_json::from_str(&entry.json)?;
        let Some(mid) = v["tick"]["mid"].as_f64() else { continue };
        seen += 1;
        mids.insert(entry.seq, mid);
        let d = &v["decision"];
        let models: Vec<(String, Direction)> = d["predictions"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .filter_map(|p| Some((p["model_type"].as_str()?.to_string(), direction(&p["direction"])?)))
                    .collect()
            })
            .unwrap_or_default();
        let trades = d["should_trade"].as_bool() == Some(true);
        pending.push_back(Pending {
            seq: entry.seq,
            id: entry.id,
            mid,
            consensus: if trades { direction(&d["direction"]) } else { None },
            models,
        });
        if let Some(m) = d["timings"]["models_us"].as_object() {
            for (k, us) in m {
                stage_us.entry(k.clone()).or_default().push(us.as_f64().unwrap_or(0.0));
            }
        }
        stage_us.entry("consensus".into()).or_default().push(d["timings"]["consensus_us"].as_f64().unwrap_or(0.0));
        // Score every decision whose horizon has passed: the label of docs/training.md ("Labels") on the live mids.
        while let Some(p) = pending.front() {
            if p.seq + HORIZON as u64 > entry.seq {
                break;
            }
            let p = pending.pop_front().expect("front exists");
            let future: Vec<f64> = (p.seq + 1..=p.seq + HORIZON as u64).filter_map(|s| mids.get(&s).copied()).collect();
            if future.len() == HORIZON {
                let r = (future.iter().sum::<f64>() / HORIZON as f64 - p.mid) / p.mid;
                let realized = match quorum::train::Direction::classify(r, trained.alpha) {
                    quorum::train::Direction::Down => Direction::Down,
                    quorum::train::Direction::Neutral => Direction::Neutral,
                    quorum::train::Direction::Up => Direction::Up,
                };
                realized_counts[realized as usize] += 1;
                for (m, dir) in &p.models {
                    per_model.entry(m.clone()).or_default().add(*dir == realized);
                }
                if let Some(c) = p.consensus {
                    ensemble.add(c == realized);
                }
                let ret = (future[HORIZON - 1] / p.mid).ln();
                let _ = engine.consensus().record_outcome(p.id, realized, ret);
            }
        }
        // Mids older than any pending decision's horizon are no longer needed.
        mids.retain(|&s, _| s + 2 * HORIZON as u64 > entry.seq);
        if seen == 1 || seen.is_multiple_of(50) {
            let votes: Vec<String> = d["predictions"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .map(|p| {
                            format!(
                                "{} {} {:.2}",
                                short(p["model_type"].as_str().unwrap_or("?")),
                                p["direction"].as_str().unwrap_or("?"),
                                p["confidence"].as_f64().unwrap_or(0.0)
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            let call = if trades { format!("TRADE {}", d["direction"].as_str().unwrap_or("?")) } else { "hold".into() };
            let accuracy: Vec<String> = per_model.iter().map(|(m, s)| format!("{} {}", short(m), s.show())).collect();
            println!(
                "#{:<6} mid {:>10.2} | {:<10} | {} | {:>6.0} µs | accuracy so far: ensemble {} ({} trades), {} (majority {})",
                entry.seq,
                mid,
                call,
                votes.join(", "),
                d["timings"]["total_us"].as_f64().unwrap_or(0.0),
                ensemble.show(),
                ensemble.total,
                accuracy.join(", "),
                majority(&realized_counts)
            );
        }
        if !args.forever && seen >= target {
            break;
        }
    }
    runner.stop().await;
    server.shutdown().await;
    exchange.shutdown().await;
    let counters = hub.counters();

    println!(
        "\nsummary: {} ticks, {seen} decisions made (the first and every 50th printed above), {} resyncs",
        counters.ticks, counters.resyncs
    );
    println!(
        "  accuracy on the primary horizon ({HORIZON} ticks, α = {:.2e}); realized down/neutral/up {:?}, majority class {}:",
        trained.alpha,
        realized_counts,
        majority(&realized_counts)
    );
    println!("    {:16} {} over {} trades", "ensemble", ensemble.show(), ensemble.total);
    for (m, s) in &per_model {
        println!("    {:16} {} over {} decisions", m, s.show(), s.total);
    }
    println!(
        "  (the ensemble is scored on the decisions it traded, each model on all of its own: different populations;\n   \
         step 5 scores every candidate on the same decisions, net of costs)"
    );
    println!(
        "  latency per stage, median / p99 (µs), of the small demo configs (ModelConfig::small), not the defaults:"
    );
    for (stage, mut v) in stage_us {
        v.sort_by(f64::total_cmp);
        let at = |p: f64| v.get(((v.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(0.0);
        println!("    {stage:16} {:8.1} / {:8.1}", at(0.5), at(0.99));
    }
    let status = engine.consensus().get_status();
    println!("  ensemble status after scoring: {}", serde_json::to_string(&status)?);
    Ok(())
}

/// The share of the most frequent realized direction.
fn majority(counts: &[u64; 3]) -> String {
    let total: u64 = counts.iter().sum();
    let top = counts.iter().copied().max().unwrap_or(0);
    Score { right: top, total }.show()
}

fn short(model: &str) -> &str {
    match model {
        "mpd_transformer" => "mpd",
        "cnn_lstm" => "cnn",
        other => other,
    }
}
