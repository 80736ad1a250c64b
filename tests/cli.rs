//! The `quorum` binary itself: info, infer against a golden case, and errors
//! that name the problem with a non-zero exit.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::process::Command;

use common::{assert_close, fixture, golden, read_tensors};

fn quorum(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_quorum")).args(args).output().expect("the quorum binary runs")
}

fn tempdir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("quorum-cli-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A `quorum serve` a test started, killed when dropped.
struct ServerProcess {
    child: std::process::Child,
    /// Where it listens, as it said on stdout; None if it ended first.
    addr: Option<String>,
    // Held open: a server printing into a closed pipe would end on SIGPIPE.
    _stdout: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
}

impl ServerProcess {
    /// Runs `quorum ARGS` in `dir` and reads its stdout until it says where it listens.
    fn start<S: AsRef<std::ffi::OsStr>>(args: &[S], dir: &std::path::Path) -> ServerProcess {
        use std::io::BufRead;
        let mut child = Command::new(env!("CARGO_BIN_EXE_quorum"))
            .args(args)
            .current_dir(dir)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let addr = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|l| l.split("listening on http://").nth(1).map(|r| r.split(';').next().unwrap().to_owned()));
        ServerProcess { child, addr, _stdout: lines }
    }

    /// The port it listens on.
    fn port(&self) -> Option<&str> {
        self.addr.as_deref().and_then(|a| a.rsplit(':').next())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn info_prints_kind_config_and_parameter_count() {
    let w = fixture("tlob_small_aux_norm.weights.safetensors");
    let out = quorum(&["info", w.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("model:        tlob"), "{text}");
    assert!(text.contains("parameters:   52103"), "{text}");
    assert!(text.contains("normalizer:   aux_norm"), "{text}");
    assert!(text.contains("\"horizons\": ["), "{text}");
}

#[test]
fn infer_writes_the_outputs_pytorch_computed() {
    for backend in ["cpu", "emu"] {
        infer_matches_golden(backend);
    }
}

fn infer_matches_golden(backend: &str) {
    let g = golden("tlob_small_aux_norm");
    let dir = tempdir(&format!("infer-{backend}"));
    let input = dir.join("in.safetensors");
    let output = dir.join("out.safetensors");
    let inputs: BTreeMap<String, quorum::Tensor> = g.inputs.clone();
    std::fs::write(&input, quorum::weights::to_bytes(&inputs, HashMap::new()).unwrap()).unwrap();
    let w = fixture("tlob_small_aux_norm.weights.safetensors");
    let out = quorum(&[
        "infer",
        "--weights",
        w.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
        "--backend",
        backend,
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("tlob on {backend}")));
    let (md, got) = read_tensors(&output);
    assert_eq!(md["model"], "tlob");
    assert_eq!(got.keys().collect::<Vec<_>>(), g.outputs.keys().collect::<Vec<_>>());
    for (k, want) in &g.outputs {
        assert_close(&format!("cli infer --backend {backend}"), k, &got[k], want, false);
    }
}

#[test]
fn infer_errors_name_the_problem_and_write_nothing() {
    let dir = tempdir("errors");
    let output = dir.join("out.safetensors");
    let w = fixture("mpd_small_cls.weights.safetensors");
    // features of the wrong shape for this model (it wants (B, 20, 24)).
    let bad = dir.join("bad.safetensors");
    let t = quorum::Tensor::zeros(vec![2, 60, 112]);
    let inputs: BTreeMap<String, quorum::Tensor> = [("features".to_string(), t)].into();
    std::fs::write(&bad, quorum::weights::to_bytes(&inputs, HashMap::new()).unwrap()).unwrap();
    let args = |input: &std::path::Path, backend: &str| {
        vec![
            "infer".to_string(),
            "--weights".into(),
            w.to_str().unwrap().into(),
            "--input".into(),
            input.to_str().unwrap().into(),
            "--output".into(),
            output.to_str().unwrap().into(),
            "--backend".into(),
            backend.into(),
        ]
    };
    let run = |a: Vec<String>| {
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        quorum(&a)
    };
    let out = run(args(&bad, "cpu"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("features") && err.contains("[2, 60, 112]"), "{err}");
    let out = run(args(&dir.join("missing.safetensors"), "cpu"));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.safetensors"));
    if !quorum::backend::gpu::cuda::driver_present() {
        let out = run(args(&bad, "cuda"));
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("no CUDA driver"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(!output.exists(), "no output file after a failed run");
}

/// `--precision` is one value enum on every command that takes it: a typo is
/// refused before anything runs, with the values it could have been.
#[test]
fn precision_is_a_value_enum_everywhere() {
    for cmd in [
        &["infer", "--weights", "w", "--input", "i", "--output", "o"][..],
        &["bench"],
        &["serve"],
        &["evaluate", "--data", "d", "--demo-weights", "--out", "o"],
    ] {
        let mut args = cmd.to_vec();
        args.extend(["--precision", "fp8"]);
        let out = quorum(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{cmd:?} accepted fp8");
        assert!(err.contains("invalid value 'fp8'") && err.contains("f32, bf16, f16, int8"), "{cmd:?}: {err}");
    }
}

/// `--precision int8` runs on the emulated GPU (gemm_tile_int8.cuh) and on
/// the CPU where it has AVX512_VNNI (refused by name where it has not).
#[test]
fn int8_benches_on_the_emulated_gpu_and_on_the_cpu() {
    let out = quorum(&[
        "bench",
        "--backend",
        "emu",
        "--precision",
        "int8",
        "--model",
        "cnn_lstm",
        "--batch",
        "1",
        "--iters",
        "1",
    ]);
    let (stdout, err) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && stdout.contains("cnn_lstm"), "{err}");
    let out = quorum(&["bench", "--backend", "cpu", "--precision", "int8", "--batch", "1", "--iters", "2"]);
    let (stdout, err) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if quorum::Cpu::with_precision(quorum::backend::Precision::Int8).is_err() {
        assert!(!out.status.success() && err.contains("AVX512_VNNI"), "{err}");
        return;
    }
    assert!(out.status.success(), "{err}");
    for model in ["mpd_transformer", "tlob", "cnn_lstm"] {
        assert!(stdout.contains(model), "{model} missing from:\n{stdout}");
    }
}

/// `quorum demo --quick`: history, training of the three models, then live
/// decisions on the simulated exchange with the server up; it stops by itself
/// after `--decisions` and reports each stage. Its temporary data is removed.
#[test]
fn the_quick_demo_trains_decides_live_and_cleans_up() {
    let report = std::env::temp_dir().join(format!("quorum-demo-report-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&report);
    let out = quorum(&[
        "demo",
        "--quick",
        "--bind",
        "127.0.0.1:0",
        "--decisions",
        "60",
        "--report",
        report.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    for stage in [
        "[1/5] simulated",
        "[3/5] training",
        "[4/5] live",
        "the server is up until 60 decisions are made",
        "curl http://127.0.0.1:",
        "summary:",
        "[5/5] evaluate",
        "the same for every candidate",
        "small demo configs",
        "open ",
    ] {
        assert!(text.contains(stage), "missing {stage:?} in:\n{text}");
    }
    for model in ["mpd_transformer", "tlob", "cnn_lstm"] {
        assert!(text.contains(&format!("  {model:16} held-out accuracy")), "{model} trained:\n{text}");
    }
    let summary = text.lines().find(|l| l.starts_with("summary:")).unwrap();
    assert!(summary.contains(" 60 decisions made"), "{summary}");
    let data = text.lines().find_map(|l| l.strip_prefix("data folder: ")).unwrap();
    let data = data.split(" (").next().unwrap();
    assert!(!std::path::Path::new(data).exists(), "the temporary data folder {data} is removed");
    // The evaluation's report stays, outside the temporary data.
    for file in ["report.html", "report.json", "decisions.parquet"] {
        assert!(report.join(file).is_file(), "{file} written");
    }
    let _ = std::fs::remove_dir_all(&report);
}

/// Issue 15.8: `simulate --out` killed mid-write leaves a hidden temporary
/// file; the next run removes it (as the collector does), and keeps what is
/// not a dead writer's.
#[test]
fn simulate_removes_the_temporary_files_a_killed_run_left() {
    let out = tempdir("sim-stale");
    let _ = std::fs::remove_dir_all(&out);
    let day = out.join("SIMUSDT").join("2025-01-01");
    std::fs::create_dir_all(&day).unwrap();
    // Above Linux's largest pid (2^22), so surely not running.
    let dead = day.join(".snapshots_1735689600000.parquet.tmp-4294967295");
    std::fs::write(&dead, vec![0u8; 1 << 20]).unwrap();
    let other = day.join(".notes.tmp-4294967295");
    std::fs::write(&other, b"not a writer's").unwrap();
    let run = quorum(&["simulate", "--out", out.to_str().unwrap(), "--duration", "10s"]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(!dead.exists(), "the dead writer's temporary file is still there");
    assert!(other.exists(), "a file that is not a writer's temporary was removed");
    let text = String::from_utf8_lossy(&run.stdout);
    assert!(text.contains("removed 1 temporary file"), "{text}");
    // Not a terminal (a pipe): progress is plain log lines, no bar redrawn in place.
    let log = String::from_utf8_lossy(&run.stderr);
    assert!(log.contains("simulate: 100%") && !log.contains('\r'), "{log:?}");
    // A second market into the same folder would interleave with the first: refused, nothing written.
    let files = |d: &std::path::Path| std::fs::read_dir(d).unwrap().count();
    let before = files(&day);
    let again = quorum(&["simulate", "--out", out.to_str().unwrap(), "--duration", "10s", "--seed", "3"]);
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(!again.status.success() && err.contains("already holds") && err.contains("SIMUSDT"), "{err}");
    assert_eq!(files(&day), before);
    let _ = std::fs::remove_dir_all(&out);
}

/// The planted effects' flags (docs/data.md, "Synthetic market"): out of
/// [0, 2] is refused naming the field; in range they run.
#[test]
fn simulate_takes_the_planted_effects_and_refuses_bad_strengths() {
    let out = tempdir("sim-effects");
    let dir = out.to_str().unwrap();
    for (flag, field) in
        [("--depth-effect", "depth_effect"), ("--slow-effect", "slow_effect"), ("--feature-effect", "feature_effect")]
    {
        let run = quorum(&["simulate", "--out", dir, "--duration", "5s", flag, "2.5"]);
        assert!(!run.status.success(), "{flag} 2.5 was accepted");
        let err = String::from_utf8_lossy(&run.stderr);
        assert!(err.contains(field), "{flag}: {err}");
    }
    let run = quorum(&[
        "simulate",
        "--out",
        dir,
        "--duration",
        "5s",
        "--depth-effect",
        "1",
        "--slow-effect",
        "0.5",
        "--feature-effect",
        "2",
        "--regime-switching",
    ]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(String::from_utf8_lossy(&run.stdout).contains("50 ticks"), "{}", String::from_utf8_lossy(&run.stdout));
    let _ = std::fs::remove_dir_all(&out);
}

/// `quorum info W | head`: a reader that goes away ends quorum quietly (as
/// SIGPIPE ends any Unix filter), never with a panic in `println!`.
#[cfg(unix)]
#[test]
fn a_closed_stdout_ends_quietly_without_a_panic() {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let weights = fixture("mpd_small_cls.weights.safetensors");
    let out = Command::new(env!("CARGO_BIN_EXE_quorum"))
        .args(["info", weights.to_str().unwrap()])
        .stdout(writer)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_ne!(out.status.code(), Some(101), "no panic exit: {:?} {stderr}", out.status);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "ended by the closed pipe: {:?}", out.status);
}

#[test]
fn features_train_and_evaluate_name_the_symbols_a_store_holds_or_read_its_only_one() {
    let dir = std::env::temp_dir().join(format!("quorum-cli-symbols-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let o = quorum(&["simulate", "--out", dir.to_str().unwrap(), "--duration", "30s"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = quorum(&[
        "features",
        "--raw",
        dir.to_str().unwrap(),
        "--out",
        dir.join("f").to_str().unwrap(),
        "--symbol",
        "BTCUSDT",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("holds SIMUSDT (pass --symbol SIMUSDT)"), "{err}");
    let d = dir.to_str().unwrap();
    let o = quorum(&["train", "--architecture", "cnn_lstm", "--data", d, "--symbol", "BTCUSDT", "--epochs", "1"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("holds SIMUSDT (pass --symbol SIMUSDT)"), "{err}");
    // Without --symbol, train (and evaluate) read the one symbol the store holds.
    let o = quorum(&["train", "--architecture", "cnn_lstm", "--data", d, "--epochs", "1"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("== cnn_lstm: SIMUSDT on"), "{out}{}", String::from_utf8_lossy(&o.stderr));
    // With two symbols it names both and asks for one.
    let o = quorum(&["simulate", "--out", d, "--duration", "30s", "--symbol", "ETHUSDT"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for cmd in [
        vec!["train", "--architecture", "cnn_lstm", "--data", d, "--epochs", "1"],
        vec!["evaluate", "--data", d, "--demo-weights", "--out", dir.join("r").to_str().unwrap()],
    ] {
        let o = quorum(&cmd);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{cmd:?}");
        assert!(err.contains("holds ETHUSDT, SIMUSDT: pass --symbol with one of them"), "{cmd:?}: {err}");
    }
    assert!(!dir.join("r").exists(), "a refused evaluate writes nothing");
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let o = quorum(&["features", "--raw", empty.to_str().unwrap(), "--out", dir.join("f").to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("quorum simulate --out DIR"), "says how to make data");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Logs go to stderr through `tracing`: levels, timestamps and fields, as
/// text or one JSON object a line (`--log-format json`), filtered by
/// `--log-level`. A collector with nothing to connect to logs its reconnects.
#[test]
fn logs_are_levelled_timestamped_and_json_on_request() {
    let out = tempdir("logs");
    let collect = |extra: &[&str]| {
        let dir = out.join(extra.join("-"));
        let mut args = vec!["collect", "--symbol", "BTCUSDT", "--out", dir.to_str().unwrap()];
        // Port 9 (discard) refuses on loopback: every connect fails at once.
        args.extend(["--ws-url", "ws://127.0.0.1:9", "--rest-url", "http://127.0.0.1:9", "--duration", "2s"]);
        args.extend(extra);
        let o = quorum(&args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let json = collect(&["--log-format", "json"]);
    let lines: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not one JSON object a line ({e}): {l}")))
        .collect();
    let reconnect = lines
        .iter()
        .find(|l| l["fields"]["message"] == "reconnecting")
        .unwrap_or_else(|| panic!("no reconnect logged: {json}"));
    assert_eq!(reconnect["level"], "WARN");
    assert_eq!(reconnect["fields"]["symbol"], "BTCUSDT");
    assert!(reconnect["fields"]["error"].as_str().unwrap().contains("Connection refused"), "{reconnect}");
    let ts = reconnect["timestamp"].as_str().unwrap();
    assert!(ts.len() >= 20 && &ts[4..5] == "-" && &ts[10..11] == "T" && ts.ends_with('Z'), "RFC 3339: {ts}");

    let text = collect(&[]);
    assert!(
        text.lines().any(|l| l.contains("WARN") && l.contains("reconnecting") && l.contains("symbol=BTCUSDT")),
        "{text}"
    );
    let quiet = collect(&["--log-level", "error"]);
    assert!(!quiet.contains("reconnecting"), "{quiet}");
    let _ = std::fs::remove_dir_all(&out);
}

/// `serve --cpus`: every thread of the server runs only on the CPUs given
/// (Linux: read back from /proc); CPUs the process may not use are refused.
#[cfg(target_os = "linux")]
#[test]
fn serve_confines_its_threads_to_the_cpus_given() {
    use std::process::{Command, Stdio};
    let bin = env!("CARGO_BIN_EXE_quorum");
    let mut child = Command::new(bin)
        .args([
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--backend",
            "cpu",
            "--demo-weights",
            "--cpus",
            "0",
            "--duration",
            "20s",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let task_dir = format!("/proc/{}/task", child.id());
    let allowed = |tid: &std::path::Path| {
        let status = std::fs::read_to_string(tid.join("status")).unwrap_or_default();
        status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).map(|v| v.trim().to_string())
    };
    // Wait until the runtime's workers exist, then read every thread's mask.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let mut threads = Vec::new();
    while std::time::Instant::now() < deadline {
        threads = std::fs::read_dir(&task_dir).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
        if threads.len() >= 3 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let masks: Vec<Option<String>> = threads.iter().map(|t| allowed(t)).collect();
    let _ = child.kill();
    let _ = child.wait();
    assert!(threads.len() >= 3, "the server's threads did not start: {masks:?}");
    assert!(masks.iter().flatten().all(|m| m == "0"), "{masks:?}");

    let o = quorum(&["serve", "--bind", "127.0.0.1:0", "--cpus", "1023", "--duration", "1s"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("not CPUs this process may run on"), "{err}");
    let o = quorum(&["serve", "--cpus", "3-1"]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("comma-separated"));
}

/// `serve --token-file`: the token from a file's first line (no token in
/// `ps`), guarding every POST as `--token` does; a missing, empty or
/// oversized file, or both flags at once, is refused before the server starts.
#[test]
fn serve_reads_its_token_from_a_file() {
    use std::io::{Read, Write};
    let dir = tempdir("token-file");
    let token = "a-token-of-twenty-four-c";
    let file = dir.join("token");
    std::fs::write(&file, format!("{token}\n")).unwrap();
    let file = file.to_str().unwrap();
    let server = ServerProcess::start(
        &[
            "serve",
            "--bind",
            "0.0.0.0:0",
            "--allow-remote",
            "--token-file",
            file,
            "--backend",
            "cpu",
            "--duration",
            "30s",
        ],
        &dir,
    );
    let port = server.port().expect("the server says where it listens").to_owned();
    let post = |authorization: &str| -> u16 {
        let addr = format!("127.0.0.1:{port}");
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        let body = "{}";
        let head = format!(
            "POST /api/ensemble/predict HTTP/1.1\r\nHost: {addr}\r\n{authorization}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(head.as_bytes()).unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        answer[9..12].parse().unwrap()
    };
    let without = post("");
    let wrong = post("Authorization: Bearer a-token-of-twenty-four-X\r\n");
    let right = post(&format!("Authorization: Bearer {token}\r\n"));
    drop(server);
    assert_eq!((without, wrong), (401, 401));
    // Past the token, the empty body is refused for what it lacks.
    assert_eq!(right, 400);

    let refused = |args: &[&str], says: &str| {
        let o = quorum(&[&["serve", "--bind", "127.0.0.1:0", "--duration", "1s"][..], args].concat());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(says), "{args:?}: {err}");
    };
    let empty = dir.join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let big = dir.join("big");
    std::fs::write(&big, vec![b'x'; 5000]).unwrap();
    let missing = dir.join("missing");
    refused(&["--token-file", empty.to_str().unwrap()], "first line is empty");
    refused(&["--token-file", big.to_str().unwrap()], "5000 bytes");
    refused(&["--token-file", missing.to_str().unwrap()], missing.to_str().unwrap());
    refused(&["--token-file", file, "--token", token], "cannot be used with");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The container file (Dockerfile): no container engine runs where the suite
/// does, so this checks what can be checked without one. Its builder is a
/// toolchain the crate accepts, on the runtime image's Debian release (the
/// binary needs the builder's glibc and libstdc++); `.dockerignore` keeps
/// nothing the build reads out of the context; and the image's command runs:
/// the ENTRYPOINT and CMD as written, with only the port, the secret and the
/// volume moved into a scratch folder, start a server that answers health.
#[test]
fn the_container_file_builds_from_the_context_and_its_command_serves() {
    use std::io::{Read, Write};
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).expect("a Dockerfile at the root");
    let instruction = |name: &str| -> Vec<String> {
        // Continued lines joined, comments dropped.
        let joined = dockerfile
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n")
            .replace("\\\n", " ");
        joined.lines().filter_map(|l| l.strip_prefix(&format!("{name} "))).map(|r| r.trim().to_owned()).collect()
    };
    let from = instruction("FROM");
    assert_eq!(from.len(), 2, "a builder and a runtime: {from:?}");
    let builder = from[0].split_whitespace().next().unwrap();
    let runtime = from[1].split_whitespace().next().unwrap();
    let release = |image: &str| image.rsplit('-').next().unwrap().to_owned();
    assert_eq!(release(builder), "bookworm", "{builder}");
    assert!(runtime.starts_with(&format!("debian:{}", release(builder))), "{runtime} is not {builder}'s Debian");
    let version = |v: &str| -> Vec<u32> { v.split('.').map(|p| p.parse().unwrap()).collect() };
    let rust = builder.strip_prefix("rust:").and_then(|r| r.split('-').next()).unwrap();
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let wanted = manifest.lines().find_map(|l| l.strip_prefix("rust-version = ")).unwrap().trim_matches('"').to_owned();
    assert!(version(rust) >= version(&wanted), "rust:{rust} is older than the crate's rust-version {wanted}");
    for run in instruction("RUN").iter().filter(|r| r.starts_with("cargo")) {
        assert!(run.contains("--locked"), "{run}: the image must build what Cargo.lock pins");
    }

    // What the build reads: the manifest, the lock, build.rs and every folder
    // of targets. A .dockerignore line must not cover any of them.
    let ignored: Vec<String> = std::fs::read_to_string(root.join(".dockerignore"))
        .unwrap()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.trim_start_matches('/').to_owned())
        .collect();
    for needed in ["Cargo.toml", "Cargo.lock", "build.rs", "src", "kernels", "benches", "examples", "tests"] {
        assert!(root.join(needed).exists(), "{needed}");
        for pattern in &ignored {
            let covers = needed == pattern || needed.starts_with(&format!("{pattern}/")) || pattern == "*";
            assert!(!covers, ".dockerignore's {pattern:?} leaves {needed} out of the build");
        }
    }
    assert!(ignored.iter().any(|p| p == "target"), "the context would carry target/: {ignored:?}");

    // The image's command, as written.
    let json_array = |name: &str| -> Vec<String> {
        let all = instruction(name);
        assert_eq!(all.len(), 1, "one {name}: {all:?}");
        serde_json::from_str(&all[0]).unwrap_or_else(|e| panic!("{name} in exec form (a JSON array): {e}"))
    };
    let entrypoint = json_array("ENTRYPOINT");
    let cmd = json_array("CMD");
    assert_eq!(entrypoint[0], "quorum");
    let dir = tempdir("container");
    let secret = dir.join("token");
    std::fs::write(&secret, "a-container-secret-token\n").unwrap();
    let volume = dir.join("data");
    std::fs::create_dir_all(&volume).unwrap();
    let moved = |a: &String| match a.as_str() {
        "0.0.0.0:8000" => "0.0.0.0:0".to_owned(),
        "/run/secrets/quorum_token" => secret.to_str().unwrap().to_owned(),
        "/var/lib/quorum" => volume.to_str().unwrap().to_owned(),
        other => other.to_owned(),
    };
    let args: Vec<String> = entrypoint[1..].iter().chain(&cmd).map(moved).collect();
    assert_ne!(args, entrypoint[1..].iter().chain(&cmd).cloned().collect::<Vec<_>>(), "nothing moved: {args:?}");
    let server = ServerProcess::start(&[&args[..], &["--backend".into(), "cpu".into()]].concat(), &dir);
    assert!(server.addr.as_deref().is_none_or(|a| a.starts_with("0.0.0.0:")), "{:?}", server.addr);
    let health = server.port().map(|port| {
        let mut s = std::net::TcpStream::connect(format!("127.0.0.1:{port}")).unwrap();
        s.write_all(
            format!("GET /health/live HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        answer
    });
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    let health = health.unwrap_or_else(|| panic!("quorum {args:?} did not start listening"));
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
}

/// The README's command list and `--help` agree: every subcommand is listed,
/// every flag the README shows exists, and every flag `--help` lists is shown.
#[test]
fn the_readme_command_list_and_help_agree() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme.find("## Commands").expect("a Commands section");
    // The command list: the section's sh block that lists `quorum info`.
    let block = readme[start..]
        .split("```sh\n")
        .skip(1)
        .map(|b| &b[..b.find("```").unwrap()])
        .find(|b| b.contains("quorum info "))
        .expect("the command list's sh block");
    let flags_in = |text: &str| -> std::collections::BTreeSet<String> {
        let mut out = std::collections::BTreeSet::new();
        for (i, _) in text.match_indices("--") {
            let name: String = text[i + 2..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')
                .collect();
            if name.chars().next().is_some_and(|c| c.is_ascii_lowercase()) {
                out.insert(format!("--{name}"));
            }
        }
        out
    };
    // The README's flags per subcommand (a line starting `quorum X`, and its continuation lines).
    let mut readme_flags: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> = Default::default();
    let mut current = None;
    for line in block.lines() {
        if let Some(rest) = line.strip_prefix("quorum ") {
            current = rest.split_whitespace().next().map(str::to_owned);
        }
        let code = line.split('#').next().unwrap_or("");
        if let Some(c) = &current {
            readme_flags.entry(c.clone()).or_default().extend(flags_in(code));
        }
    }
    let help = |args: &[&str]| String::from_utf8_lossy(&quorum(args).stdout).into_owned();
    let top = help(&["--help"]);
    let global = ["--log-format", "--log-level", "--helper-cpu", "--help", "--version"];
    for global_flag in &global[..3] {
        assert!(block.contains(global_flag), "the README's command list does not mention {global_flag}");
    }
    let commands: Vec<String> = top
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .filter(|c| c != "help")
        .collect();
    assert!(commands.len() >= 10, "{top}");
    let mut problems = Vec::new();
    for c in &commands {
        let Some(shown) = readme_flags.get(c) else {
            problems.push(format!("`quorum {c}` is not in the README's command list"));
            continue;
        };
        // Option lines of --help: `  -x, --name <V>` or `      --name`.
        let listed: std::collections::BTreeSet<String> = help(&[c, "--help"])
            .lines()
            .filter_map(|l| {
                let t = l.trim_start();
                let t = t.strip_prefix("-").filter(|r| r.len() > 3 && &r[1..3] == ", ").map_or(t, |r| &r[3..]);
                t.starts_with("--").then(|| flags_in(t.split_whitespace().next().unwrap()).into_iter().next()).flatten()
            })
            .filter(|f| !global.contains(&f.as_str()))
            .collect();
        for f in shown.difference(&listed) {
            problems.push(format!("README shows `quorum {c} {f}`, which --help does not list"));
        }
        for f in listed.difference(shown) {
            problems.push(format!("`quorum {c} --help` lists {f}, which the README's command list does not show"));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

/// The README's quick path with defaults only, at small sizes: `simulate`
/// into `data/raw_lob`, `features` (its defaults read and write there),
/// `train` twice (defaults: the store's one symbol; each run published into
/// the data folder's model repository, `data/weights`, as the next version),
/// `serve --data data` (loads each model's latest version from there),
/// predict, and load the first version back by its number. No file is
/// renamed or moved between the steps.
#[test]
fn simulate_features_train_serve_predict_chain_with_defaults() {
    use std::io::{Read, Write};
    let dir = tempdir("quick-path");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let run = |args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_quorum")).args(args).current_dir(&dir).output().unwrap();
        assert!(
            o.status.success(),
            "quorum {args:?}:\n{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    run(&["simulate", "--out", "data/raw_lob", "--duration", "12m", "--signal-strength", "2"]);
    run(&["features"]);
    assert!(dir.join("data/features/SIMUSDT.parquet").is_file());
    // Small sizes: a small CNN-LSTM, one epoch, one split.
    let small = r#"{"sequence_length": 10, "conv_channels": [8], "lstm_hidden": 8, "lstm_layers": 1}"#;
    std::fs::write(dir.join("small.json"), small).unwrap();
    let train = ["train", "--architecture", "cnn_lstm", "--data", "data", "--model-config", "small.json"]
        .into_iter()
        .chain(["--epochs", "1", "--walk-forward-splits", "1", "--backend", "cpu"])
        .collect::<Vec<_>>();
    let printed = run(&train);
    // For people: α rounded, and the loss named for what it is (not plain cross-entropy).
    let fold = printed.lines().find(|l| l.contains("fold 1/1: ")).unwrap_or_else(|| panic!("{printed}"));
    let alpha = fold.split("α [").nth(1).and_then(|r| r.split(']').next()).unwrap_or_else(|| panic!("{fold}"));
    assert!(alpha.contains('e') && alpha.len() <= 9, "α {alpha:?} in {fold}");
    assert!(fold.contains("loss = 1 × CE(direction) + 0.5 × BCE(confidence) + 0.3 × Huber(return)"), "{fold}");
    run(&[&train[..], &["--seed", "7"]].concat());
    for version in ["1", "2"] {
        let published = dir.join("data/weights/cnn_lstm").join(version);
        assert!(published.join("model.safetensors").is_file(), "{}", published.display());
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(published.join("manifest.json")).unwrap()).unwrap();
        assert_eq!(manifest["trained_on"]["symbol"], "SIMUSDT", "{manifest}");
        assert!(manifest["results"]["mean"]["accuracy"].is_f64(), "held-out metrics: {manifest}");
    }

    let server = ServerProcess::start(
        &["serve", "--bind", "127.0.0.1:0", "--data", "data", "--backend", "cpu", "--duration", "60s"],
        &dir,
    );
    let addr = server.addr.clone().expect("the server says where it listens");
    let http = |method: &str, path: &str, body: &str| -> (u16, serde_json::Value) {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(body.as_bytes()).unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        let status = answer[9..12].parse().unwrap();
        let json = answer.split("\r\n\r\n").nth(1).and_then(|b| serde_json::from_str(b).ok()).unwrap_or_default();
        (status, json)
    };
    let (status, ready) = http("GET", "/health/ready", "");
    let (_, layout) = http("GET", "/api/ensemble/predict/layout", "");
    let shape: Vec<usize> = serde_json::from_value(layout["features"].clone()).expect("a features shape");
    let features = vec![vec![0.1f32; shape[1]]; shape[0]];
    let (predict_status, decision) =
        http("POST", "/api/ensemble/predict", &serde_json::json!({ "features": features }).to_string());
    let (_, models) = http("GET", "/api/ensemble/models", "");
    let (first_status, first) =
        http("POST", "/api/ensemble/models/load", r#"{"model_type": "cnn_lstm", "version": 1}"#);
    let (absent_status, absent) =
        http("POST", "/api/ensemble/models/load", r#"{"model_type": "cnn_lstm", "version": 9}"#);
    drop(server);
    let loaded = models["models"].as_array().unwrap().iter().find(|m| m["model_type"] == "cnn_lstm").unwrap();
    assert_eq!(loaded["version"], 2, "the latest version is served: {models}");
    let listed: Vec<u64> =
        models["versions"]["cnn_lstm"].as_array().unwrap().iter().map(|v| v["version"].as_u64().unwrap()).collect();
    assert_eq!(listed, [1, 2], "{models}");
    assert_eq!((first_status, &first["version"]), (200, &serde_json::json!(1)), "{first}");
    assert_eq!(absent_status, 400, "{absent}");
    assert_eq!(absent["error"]["field"], "version", "{absent}");
    assert!(absent["error"]["message"].as_str().unwrap().contains("(complete versions: 1, 2)"), "{absent}");
    assert_eq!(status, 200, "ready: {ready}");
    assert_eq!(predict_status, 200, "{decision}");
    assert_eq!(decision["predictions"][0]["model_type"], "cnn_lstm", "{decision}");
    assert!(["down", "neutral", "up"].contains(&decision["direction"].as_str().unwrap()), "{decision}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn helper_cpu_is_checked_against_the_cpus_and_a_run_with_it_works() {
    // A CPU the process may not use: refused, naming the option and the CPUs it may use.
    let out = quorum(&["--helper-cpu", "1023", "bench", "--backend", "cpu", "--iters", "1", "--model", "cnn_lstm"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("helper-cpu") && err.contains("may use"), "{err}");
    let Ok(cpus) = quorum::backend::cpu::affinity::allowed() else {
        eprintln!("skipped the run: no CPU affinity here");
        return;
    };
    if cpus.len() < 2 {
        eprintln!("skipped the run: one CPU");
        return;
    }
    let cpu = cpus[cpus.len() - 1].to_string();
    let args =
        ["--helper-cpu", &cpu, "bench", "--backend", "cpu", "--iters", "3", "--model", "cnn_lstm", "--batch", "1"];
    let out = quorum(&args);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("the batch-1 helper has its CPU to itself") && stdout.contains("cnn_lstm"),
        "{stderr}\n{stdout}"
    );
}

/// Many symbols: `bench --symbols` times the live tick for each count and
/// says which fit a 100 ms tick; bad counts and symbol lists are refused by
/// name before anything starts.
#[test]
fn bench_times_the_tick_for_several_symbols_and_serve_refuses_bad_symbol_lists() {
    let out = quorum(&["bench", "--backend", "cpu", "--symbols", "1,2", "--iters", "2"]);
    let (stdout, err) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{err}");
    let rows: Vec<&str> = stdout.lines().filter(|l| l.starts_with("|       ")).collect();
    assert_eq!(rows.len(), 2, "one row per symbol count:\n{stdout}");
    assert!(stdout.contains("tick p99"), "{stdout}");
    assert!(stdout.contains("100 ms"), "{stdout}");
    for (args, needle) in [
        (&["bench", "--backend", "cpu", "--symbols", "0", "--iters", "1"][..], "--symbols: 0"),
        (&["bench", "--backend", "cpu", "--symbols", "129", "--iters", "1"][..], "--symbols: 129"),
        (&["serve", "--bind", "127.0.0.1:0", "--live", "BTCUSDT,btcusdt", "--duration", "1s"][..], "named twice"),
        (&["serve", "--bind", "127.0.0.1:0", "--live", "BTC/USDT", "--duration", "1s"][..], "letters and digits"),
        (
            &["serve", "--bind", "127.0.0.1:0", "--simulate", "--sim-symbols", "0", "--duration", "1s"][..],
            "--sim-symbols",
        ),
    ] {
        let out = quorum(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(needle), "{args:?}: {err}");
    }
}
