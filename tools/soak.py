#!/usr/bin/env python3
"""Drives a running `quorum serve --simulate --data D --weights W` with
everything at once for a bounded time, and reports what it saw.

Started by tools/soak.sh, which builds the binary, prepares the data and the
weights and starts the server; this file is only the load and the report.
Loopback only: it refuses any address that is not 127.0.0.1 / ::1.

Load, all at the same time:
  * predict: `--predict-workers` threads, each posting the binary body over
    its own keep-alive connection at `--predict-rate` requests per second;
  * live: one client reading the server-sent event stream;
  * training: one small training job after another (1 epoch, the weights'
    own configs), each waited for, then a pause;
  * hot reloads: every `--reload-every` seconds one model is reloaded from
    the weights folder or, once a training job has written it, from the
    job's output;
  * probes: `/health/live` once a second, timed.
Every `--sample-every` seconds the server's RSS (from /proc) and the counts
so far are written as one line of `samples.csv` and printed.

The report (`report.json`, `report.md`): requests by outcome, throughput and
latency percentiles per kind, errors that are not documented 503s, RSS over
time and the RSS range over the last `--plateau-minutes` minutes.

Python's standard library only: the soak must run where quorum builds.
"""

import argparse
import csv
import http.client
import json
import os
import random
import socket
import struct
import sys
import threading
import time

LOOPBACK = {"127.0.0.1", "::1", "localhost"}


class Counters:
    """Thread-safe tallies: outcomes and latencies per kind of request."""

    def __init__(self):
        self.lock = threading.Lock()
        self.outcomes = {}  # kind -> {status or error name -> count}
        self.latencies = {}  # kind -> [seconds]
        self.errors = []  # the first few unexpected answers, for the report

    def record(self, kind, outcome, seconds=None, detail=None):
        with self.lock:
            by = self.outcomes.setdefault(kind, {})
            by[str(outcome)] = by.get(str(outcome), 0) + 1
            if seconds is not None:
                self.latencies.setdefault(kind, []).append(seconds)
            if detail is not None and len(self.errors) < 50:
                self.errors.append({"t": time.time(), "kind": kind, "outcome": str(outcome), "detail": detail[:300]})

    def snapshot(self):
        with self.lock:
            return {k: dict(v) for k, v in self.outcomes.items()}, {k: list(v) for k, v in self.latencies.items()}


def percentile(values, q):
    if not values:
        return None
    s = sorted(values)
    i = min(len(s) - 1, max(0, int(round(q * (len(s) - 1)))))
    return s[i]


def rss_mib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


class Client:
    """One keep-alive HTTP/1.1 connection; reconnects after any failure."""

    def __init__(self, host, port, timeout=30.0):
        self.host, self.port, self.timeout = host, port, timeout
        self.conn = None

    def request(self, method, path, body=None, content_type=None):
        headers = {}
        if content_type:
            headers["Content-Type"] = content_type
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self.conn.request(method, path, body=body, headers=headers)
                r = self.conn.getresponse()
                data = r.read()
                if r.getheader("connection", "").lower() == "close":
                    self.close()
                return r.status, data
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as e:
                # The server may close an idle keep-alive connection (documented
                # under pressure): one retry on a fresh connection, then it counts.
                self.close()
                if attempt == 1:
                    raise e
        raise RuntimeError("unreachable")

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def predict_body(layout, seed):
    rng = random.Random(seed)
    n = sum(layout["binary_f32_counts"])
    return struct.pack(f"<{n}f", *(rng.gauss(0.0, 1.0) for _ in range(n)))


def predict_worker(args, stop, counters, layout, index):
    client = Client(args.host, args.port)
    body = predict_body(layout, index)
    period = 1.0 / args.predict_rate
    next_at = time.monotonic()
    while not stop.is_set():
        t0 = time.monotonic()
        try:
            status, data = client.request("POST", "/api/ensemble/predict", body, "application/octet-stream")
            dt = time.monotonic() - t0
            if status == 200:
                counters.record("predict", 200, dt)
            else:
                counters.record("predict", status, dt, None if status == 503 else data.decode(errors="replace"))
        except Exception as e:  # noqa: BLE001 - any failure is a counted error
            counters.record("predict", type(e).__name__, None, str(e))
        next_at += period
        pause = next_at - time.monotonic()
        if pause > 0:
            stop.wait(pause)
        else:
            next_at = time.monotonic()
    client.close()


def live_reader(args, stop, counters):
    """Reads the event stream; reconnects when it ends (counted)."""
    while not stop.is_set():
        try:
            s = socket.create_connection((args.host, args.port), timeout=5)
            s.sendall(b"GET /api/ensemble/live/stream HTTP/1.1\r\nHost: %s:%d\r\n\r\n" % (args.host.encode(), args.port))
            s.settimeout(1.0)
            buf = b""
            while not stop.is_set():
                try:
                    chunk = s.recv(65536)
                except socket.timeout:
                    continue
                if not chunk:
                    counters.record("live_stream", "closed", None, "stream ended")
                    break
                buf += chunk
                while b"\n\n" in buf:
                    event, buf = buf.split(b"\n\n", 1)
                    if b"data:" in event:
                        counters.record("live_event", "event")
                if len(buf) > 1 << 20:
                    buf = b""
            s.close()
        except OSError as e:
            counters.record("live_stream", type(e).__name__, None, str(e))
            stop.wait(1.0)


def training_loop(args, stop, counters, trained):
    """One small job after another; records each job's outcome."""
    client = Client(args.host, args.port)
    kinds = ["cnn_lstm", "mpd_transformer", "tlob"]
    i = 0
    while not stop.is_set():
        kind = kinds[i % len(kinds)]
        i += 1
        body = {
            "architecture": kind,
            "symbol": args.symbol,
            "epochs": 1,
            "batch_size": 32,
            "walk_forward_splits": 1,
            "checkpoint_dir": "soak_checkpoints",
            "model_config": args.model_configs[kind],
        }
        if "sequence_length" in args.model_configs[kind]:
            # The job's window must be the model's (a mismatch is refused, by design).
            body["sequence_length"] = args.model_configs[kind]["sequence_length"]
        t0 = time.monotonic()
        try:
            status, data = client.request("POST", "/api/ensemble/training/start", json.dumps(body), "application/json")
        except Exception as e:  # noqa: BLE001
            counters.record("train_start", type(e).__name__, None, str(e))
            stop.wait(5)
            continue
        if status != 202:
            counters.record("train_start", status, None, data.decode(errors="replace"))
            stop.wait(5)
            continue
        counters.record("train_start", 202)
        while not stop.is_set():
            stop.wait(1.0)
            try:
                status, data = client.request("GET", "/api/ensemble/training/status")
            except Exception as e:  # noqa: BLE001
                counters.record("train_status", type(e).__name__, None, str(e))
                continue
            s = json.loads(data)
            if not s.get("is_training"):
                outcome = "failed" if s.get("error") else "finished"
                counters.record("train_job", outcome, time.monotonic() - t0, json.dumps(s) if s.get("error") else None)
                if outcome == "finished":
                    trained.add(kind)
                break
        stop.wait(args.train_pause)
    client.close()


def reload_loop(args, stop, counters, trained):
    client = Client(args.host, args.port)
    kinds = ["cnn_lstm", "mpd_transformer", "tlob"]
    i = 0
    while not stop.wait(args.reload_every):
        kind = kinds[i % len(kinds)]
        i += 1
        # Alternate between the weights folder and a job's fresh output.
        if kind in trained and i % 2 == 0:
            path = os.path.join(args.data, "soak_checkpoints", f"{kind}_best.safetensors")
        else:
            path = os.path.join(args.weights, f"{kind}.safetensors")
        t0 = time.monotonic()
        try:
            status, data = client.request(
                "POST", "/api/ensemble/models/load", json.dumps({"model_type": kind, "path": path}), "application/json"
            )
            counters.record("reload", status, time.monotonic() - t0, None if status in (200, 503) else data.decode(errors="replace"))
        except Exception as e:  # noqa: BLE001
            counters.record("reload", type(e).__name__, None, str(e))
    client.close()


def health_probe(args, stop, counters):
    while not stop.wait(1.0):
        t0 = time.monotonic()
        try:
            c = http.client.HTTPConnection(args.host, args.port, timeout=5)
            c.request("GET", "/health/live")
            r = c.getresponse()
            r.read()
            c.close()
            counters.record("health", r.status, time.monotonic() - t0)
        except Exception as e:  # noqa: BLE001
            counters.record("health", type(e).__name__, None, str(e))


def peaks_per_span(samples, span, minutes):
    """The highest RSS in each `span`-minute stretch (the last sample, taken
    at the very end, belongs to the last stretch)."""
    spans = max(1, int(-(-minutes // span)))
    peaks = [None] * spans
    for s in samples:
        k = min(int(s["minute"] // span), spans - 1)
        peaks[k] = s["rss_mib"] if peaks[k] is None else max(peaks[k], s["rss_mib"])
    return peaks


def summarize(outcomes, latencies, seconds):
    table = {}
    for kind, by in sorted(outcomes.items()):
        lat = latencies.get(kind, [])
        total = sum(by.values())
        table[kind] = {
            "count": total,
            "per_second": total / seconds if seconds > 0 else None,
            "outcomes": by,
            "p50_ms": None if not lat else 1000 * percentile(lat, 0.5),
            "p99_ms": None if not lat else 1000 * percentile(lat, 0.99),
            "max_ms": None if not lat else 1000 * max(lat),
        }
    return table


# Outcomes that are not errors: success codes, documented overload (503),
# stream events, and a training job that ran to its end.
FINE = {"200", "202", "503", "event", "finished"}


def unexpected(outcomes):
    bad = {}
    for kind, by in outcomes.items():
        for outcome, n in by.items():
            if outcome not in FINE:
                bad[f"{kind}:{outcome}"] = n
    return bad


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--pid", type=int, required=True, help="the server's process id (RSS is read from /proc)")
    p.add_argument("--data", required=True, help="the server's --data folder")
    p.add_argument("--weights", required=True, help="the server's --weights folder")
    p.add_argument("--symbol", default="SIMUSDT")
    p.add_argument("--model-configs", required=True, help="JSON file: model kind -> model_config")
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--predict-workers", type=int, default=2)
    p.add_argument("--predict-rate", type=float, default=20.0, help="requests per second per worker")
    p.add_argument("--reload-every", type=float, default=15.0)
    p.add_argument("--train-pause", type=float, default=20.0)
    p.add_argument("--sample-every", type=float, default=30.0)
    p.add_argument("--plateau-minutes", type=float, default=20.0)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    if args.host not in LOOPBACK:
        sys.exit(f"soak: --host {args.host} is not loopback; the soak only runs against a local server")
    with open(args.model_configs) as f:
        args.model_configs = json.load(f)
    os.makedirs(args.out, exist_ok=True)

    layout = json.loads(Client(args.host, args.port).request("GET", "/api/ensemble/predict/layout")[1])
    counters = Counters()
    stop = threading.Event()
    trained = set()
    threads = [threading.Thread(target=predict_worker, args=(args, stop, counters, layout, i)) for i in range(args.predict_workers)]
    threads += [
        threading.Thread(target=live_reader, args=(args, stop, counters)),
        threading.Thread(target=training_loop, args=(args, stop, counters, trained)),
        threading.Thread(target=reload_loop, args=(args, stop, counters, trained)),
        threading.Thread(target=health_probe, args=(args, stop, counters)),
    ]
    start = time.monotonic()
    for t in threads:
        t.daemon = True
        t.start()

    samples = []
    fields = ["minute", "rss_mib", "predict_ok", "predict_503", "live_events", "train_jobs", "reloads_ok", "unexpected"]
    with open(os.path.join(args.out, "samples.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(fields)
        end = start + 60 * args.minutes
        while time.monotonic() < end:
            time.sleep(min(args.sample_every, max(0.0, end - time.monotonic())))
            rss = rss_mib(args.pid)
            if rss is None:
                print("soak: the server is gone", flush=True)
                break
            outcomes, _ = counters.snapshot()
            row = [
                round((time.monotonic() - start) / 60, 2),
                round(rss, 1),
                outcomes.get("predict", {}).get("200", 0),
                outcomes.get("predict", {}).get("503", 0),
                outcomes.get("live_event", {}).get("event", 0),
                sum(outcomes.get("train_job", {}).values()),
                outcomes.get("reload", {}).get("200", 0),
                sum(unexpected(outcomes).values()),
            ]
            samples.append(dict(zip(fields, row)))
            w.writerow(row)
            f.flush()
            print("soak: " + "  ".join(f"{k} {v}" for k, v in zip(fields, row)), flush=True)
    stop.set()
    for t in threads:
        t.join(timeout=40)
    seconds = time.monotonic() - start
    outcomes, latencies = counters.snapshot()

    tail = [s for s in samples if s["minute"] >= args.minutes - args.plateau_minutes]
    rss_tail = [s["rss_mib"] for s in tail]
    report = {
        "minutes": seconds / 60,
        "load": {k: getattr(args, k) for k in ("predict_workers", "predict_rate", "reload_every", "train_pause")},
        "requests": summarize(outcomes, latencies, seconds),
        "unexpected": unexpected(outcomes),
        "first_errors": counters.errors,
        "rss_mib": {
            "first": samples[0]["rss_mib"] if samples else None,
            "peak": max((s["rss_mib"] for s in samples), default=None),
            "last": samples[-1]["rss_mib"] if samples else None,
            "plateau_window_minutes": args.plateau_minutes,
            "plateau_min": min(rss_tail, default=None),
            "plateau_max": max(rss_tail, default=None),
            # The highest RSS in each 5-minute span: memory that leaks climbs
            # here even while training jobs make the samples saw up and down.
            "peak_per_5_minutes": peaks_per_span(samples, 5.0, args.minutes),
        },
        "server_alive": rss_mib(args.pid) is not None,
    }
    with open(os.path.join(args.out, "report.json"), "w") as f:
        json.dump(report, f, indent=2)
    with open(os.path.join(args.out, "report.md"), "w") as f:
        f.write(markdown(report))
    print(markdown(report))
    return 0 if not report["unexpected"] and report["server_alive"] else 1


def fmt(x, digits=1):
    return "–" if x is None else f"{x:.{digits}f}"


def markdown(r):
    lines = [
        f"Soak of {r['minutes']:.1f} min; load {json.dumps(r['load'])}.",
        "",
        "| requests | count | per s | outcomes | p50 ms | p99 ms | max ms |",
        "|---|---:|---:|---|---:|---:|---:|",
    ]
    for kind, t in r["requests"].items():
        outs = ", ".join(f"{k}: {v}" for k, v in sorted(t["outcomes"].items()))
        lines.append(
            f"| {kind} | {t['count']} | {fmt(t['per_second'], 2)} | {outs} | {fmt(t['p50_ms'])} | {fmt(t['p99_ms'])} | {fmt(t['max_ms'])} |"
        )
    m = r["rss_mib"]
    lines += [
        "",
        f"RSS (MiB): first sample {fmt(m['first'])}, peak {fmt(m['peak'])}, last {fmt(m['last'])}; "
        f"over the last {m['plateau_window_minutes']:g} min between {fmt(m['plateau_min'])} and {fmt(m['plateau_max'])}; "
        f"peak per 5 min: {', '.join(fmt(x) for x in m['peak_per_5_minutes'])}.",
        f"Unexpected outcomes (not 2xx, not a documented 503): {json.dumps(r['unexpected']) if r['unexpected'] else 'none'}.",
        f"Server alive at the end: {r['server_alive']}.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
