//! The `info`, `infer` and `bench` subcommands (one model file, one input file, the latency table).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{bail, Context, Result};

use quorum::backend::gpu::Precision;
use quorum::backend::select::Device;
use quorum::model::{ModelConfig, ModelKind, ModelMeta};
use quorum::weights::{self, generated};
use quorum::{Backend, Inputs, Model, Tensor};

pub fn info(path: &Path) -> Result<()> {
    let file = weights::load(path)?;
    let specs = quorum::model::param_specs(&file.config);
    let mut norms: Vec<&str> = ["input_norm.mean", "aux_norm.mean"]
        .into_iter()
        .filter(|n| file.tensors.contains_key(*n))
        .map(|n| n.trim_end_matches(".mean"))
        .collect();
    if norms.is_empty() {
        norms.push("none");
    }
    println!("model:        {}", file.kind());
    println!("parameters:   {}", specs.count());
    println!("return_scale: {}", file.meta.return_scale);
    println!("horizon:      {}", file.meta.horizon.map_or("not recorded".into(), |h| h.to_string()));
    println!("normalizer:   {}", norms.join(", "));
    println!("outputs:      {}", quorum::model::output_names(&file.config).join(", "));
    println!("config:");
    let pretty: serde_json::Value = serde_json::from_str(&file.config.to_json())?;
    println!("{}", serde_json::to_string_pretty(&pretty)?);
    Ok(())
}

pub fn infer(weights_path: &Path, input: &Path, output: &Path, backend: Device, precision: Precision) -> Result<()> {
    quorum::on_device!(backend.open()?, precision, be => infer_on(&be, weights_path, input, output))
}

fn infer_on<B: Backend>(be: &B, weights_path: &Path, input: &Path, output: &Path) -> Result<()> {
    let mut model = Model::load(be, weights_path)?;
    let bytes = std::fs::read(input).with_context(|| format!("reading {}", input.display()))?;
    let file = weights::read_tensor_file(&bytes, &input.display().to_string())?;
    let known = ["features", "lob", "aux"];
    if let Some(other) = file.tensors.keys().find(|k| !known.contains(&k.as_str())) {
        bail!("input {}: unexpected tensor {other:?} (expected features, lob, aux)", input.display());
    }
    let inputs =
        Inputs { features: file.tensors.get("features"), lob: file.tensors.get("lob"), aux: file.tensors.get("aux") };
    let start = std::time::Instant::now();
    let out = model.forward(be, &inputs)?;
    let elapsed = start.elapsed();
    let mut md = HashMap::new();
    md.insert("model".to_string(), model.kind().to_string());
    quorum::fsutil::write_atomic(output, &weights::to_bytes(&out, md)?)?;
    let batch = out.get("confidence").map_or(0, |t| t.shape[0]);
    println!(
        "{} on {}: batch {batch}, {} outputs written to {} in {:.3} ms",
        model.kind(),
        be.name(),
        out.len(),
        output.display(),
        elapsed.as_secs_f64() * 1e3
    );
    Ok(())
}

/// Deterministic synthetic inputs for `kind` at `batch`, varying with `seed`.
fn synthetic_inputs(kind: ModelKind, batch: usize, seed: u64) -> BTreeMap<&'static str, Tensor> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = move || {
        // xorshift64*: cheap, deterministic, good enough for benchmark inputs.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        ((state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    };
    let mut make = |shape: Vec<usize>| {
        let n = shape.iter().product();
        Tensor { shape, data: (0..n).map(|_| next()).collect() }
    };
    let mut m = BTreeMap::new();
    match kind {
        ModelKind::Tlob => {
            m.insert("lob", make(vec![batch, 100, 20, 4]));
            m.insert("aux", make(vec![batch, 112]));
        }
        _ => {
            m.insert("features", make(vec![batch, 60, 112]));
        }
    }
    m
}

fn default_model<B: Backend>(be: &B, kind: ModelKind) -> Result<Model<B>> {
    let config = ModelConfig::default_for(kind);
    Ok(Model::from_tensors(be, config.clone(), &generated::params(&config), ModelMeta::default())?)
}

fn as_inputs<'a>(m: &'a BTreeMap<&'static str, Tensor>) -> Inputs<'a> {
    Inputs { features: m.get("features"), lob: m.get("lob"), aux: m.get("aux") }
}

/// The value at fraction `p` of sorted samples (nearest rank).
pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

pub fn bench(
    batches: &[usize],
    iters: usize,
    backend: Device,
    models: &[String],
    graphs: bool,
    precision: Precision,
) -> Result<()> {
    if iters == 0 || batches.contains(&0) {
        bail!("--iters and every --batch must be at least 1");
    }
    let kinds: Vec<ModelKind> = if models.is_empty() {
        ModelKind::ALL.to_vec()
    } else {
        models.iter().map(|m| ModelKind::parse(m)).collect::<Result<_, _>>()?
    };
    quorum::on_device!(backend.open()?, precision, be => bench_on(&be, batches, iters, &kinds, graphs))
}

fn bench_on<B: Backend>(be: &B, batches: &[usize], iters: usize, kinds: &[ModelKind], graphs: bool) -> Result<()> {
    println!(
        "quorum {} bench, backend {}, {} threads",
        env!("CARGO_PKG_VERSION"),
        be.name(),
        rayon::current_num_threads()
    );
    println!("| model           | batch | median µs | p90 µs | p99 µs | samples/s |");
    println!("|-----------------|------:|----------:|-------:|-------:|----------:|");
    for &kind in kinds {
        let mut model = default_model(be, kind)?;
        model.set_graphs(graphs);
        for &batch in batches {
            let data = synthetic_inputs(kind, batch, 1);
            let inputs = as_inputs(&data);
            let mut out = quorum::Outputs::new();
            for _ in 0..(iters / 10).max(1) {
                model.forward_into(be, &inputs, &mut out)?;
            }
            let mut times: Vec<f64> = (0..iters)
                .map(|_| {
                    let t = std::time::Instant::now();
                    model.forward_into(be, &inputs, &mut out).map(|_| t.elapsed().as_secs_f64() * 1e6)
                })
                .collect::<Result<_, _>>()?;
            times.sort_by(f64::total_cmp);
            let med = percentile(&times, 0.5);
            println!(
                "| {:15} | {batch:5} | {med:9.1} | {:6.1} | {:6.1} | {:9.0} |",
                kind.as_str(),
                percentile(&times, 0.9),
                percentile(&times, 0.99),
                batch as f64 / med * 1e6
            );
        }
    }
    Ok(())
}

/// `quorum bench --ensemble`: the engine's whole decision at batch 1.
pub fn bench_ensemble(iters: usize, backend: Device, precision: Precision) -> Result<()> {
    use quorum::server::engine::Engine;
    let engine = Engine::on(backend.open()?, precision, Default::default())?;
    for kind in ModelKind::ALL {
        let config = ModelConfig::default_for(kind);
        let file = weights::WeightsFile {
            config: config.clone(),
            meta: ModelMeta::default(),
            tensors: generated::params(&config),
        };
        engine.load_weights(quorum::server::engine::model_type(kind), file)?;
    }
    // One tick's inputs, made once; each tick gets its own copy (outside the timing).
    let mut tlob = synthetic_inputs(ModelKind::Tlob, 1, 1);
    let inputs = quorum::server::engine::EngineInputs {
        features: synthetic_inputs(ModelKind::MpdTransformer, 1, 1).remove("features").map(|t| t.data),
        lob: tlob.remove("lob").map(|t| t.data),
        aux: tlob.remove("aux").map(|t| t.data),
    };
    let tick = || {
        let inputs = inputs.clone();
        let t = std::time::Instant::now();
        engine.predict(inputs).map(|d| (t.elapsed().as_secs_f64() * 1e6, d))
    };
    for _ in 0..(iters / 10).max(2) {
        tick()?;
    }
    let mut times = Vec::with_capacity(iters);
    let mut stages: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for _ in 0..iters {
        let (us, d) = tick()?;
        if d.predictions.len() != ModelKind::ALL.len() {
            bail!("ensemble tick: {} of 3 models answered ({:?})", d.predictions.len(), d.skipped);
        }
        times.push(us);
        for (m, t) in &d.timings.models_us {
            stages.entry(m.to_string()).or_default().push(*t);
        }
        stages.entry("consensus".into()).or_default().push(d.timings.consensus_us);
    }
    times.sort_by(f64::total_cmp);
    println!();
    println!(
        "ensemble tick ({} models at batch 1 + consensus, engine.predict, input copy included), {iters} ticks:",
        3
    );
    println!("| stage           | median µs | p90 µs | p99 µs |");
    println!("|-----------------|----------:|-------:|-------:|");
    for (name, mut t) in stages {
        t.sort_by(f64::total_cmp);
        println!(
            "| {name:15} | {:9.1} | {:6.1} | {:6.1} |",
            percentile(&t, 0.5),
            percentile(&t, 0.9),
            percentile(&t, 0.99)
        );
    }
    println!(
        "| {:15} | {:9.1} | {:6.1} | {:6.1} |",
        "whole tick",
        percentile(&times, 0.5),
        percentile(&times, 0.9),
        percentile(&times, 0.99)
    );
    Ok(())
}
