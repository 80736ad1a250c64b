#!/usr/bin/env python3
"""Connection-flood probe of a running `quorum serve` (loopback only).

Re-runs the probes of issue #15 at full size: one client opens N connections
and holds them (keep-alive after one request each, or idle without ever
sending a byte), and while they are held new `/health/live` probes are timed.
The server should keep answering health within 100 ms: it caps connections
per client address, evicts idle ones under pressure and keeps a reserve for
health (docs/security.md).

Prints one JSON object per phase and exits 1 when a probe failed or took
longer than --limit-ms.
"""

import argparse
import json
import resource
import socket
import sys
import time

LOOPBACK = {"127.0.0.1", "::1", "localhost"}


def open_flood(host, port, n, keep_alive, sources):
    """Opens n connections, spread over `sources` loopback source addresses
    (127.0.0.1, 127.0.0.2, ...: distinct clients to the server); with
    keep_alive each sends one request and reads its answer first. Returns
    the sockets still open and the refusals seen."""
    socks, refused = [], 0
    request = b"GET /health/live HTTP/1.1\r\nHost: %s:%d\r\n\r\n" % (host.encode(), port)
    for i in range(n):
        source = (f"127.0.0.{1 + i % sources}", 0) if sources > 1 else None
        try:
            s = socket.create_connection((host, port), timeout=5, source_address=source)
            if keep_alive:
                s.sendall(request)
                s.recv(4096)
            socks.append(s)
        except OSError:
            refused += 1
    return socks, refused


def probe(host, port, timeout):
    t0 = time.monotonic()
    try:
        s = socket.create_connection((host, port), timeout=timeout)
        s.sendall(b"GET /health/live HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n\r\n" % (host.encode(), port))
        data = s.recv(4096)
        s.close()
        ok = data.startswith(b"HTTP/1.1 200")
    except OSError:
        ok = False
    return ok, (time.monotonic() - t0) * 1000


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--probes", type=int, default=20)
    p.add_argument("--limit-ms", type=float, default=100.0)
    p.add_argument(
        "--phases",
        default="keepalive:1100:1,idle:2000:1,keepalive:2000:20",
        help="KIND:CONNECTIONS:SOURCES,... (KIND keepalive or idle; SOURCES loopback client addresses)",
    )
    args = p.parse_args()
    if args.host not in LOOPBACK:
        sys.exit(f"flood_probe: --host {args.host} is not loopback")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))

    failed = False
    for phase in args.phases.split(","):
        kind, n, sources = phase.split(":")
        if sources != "1" and args.host != "127.0.0.1":
            sys.exit("flood_probe: several sources need --host 127.0.0.1")
        socks, refused = open_flood(args.host, args.port, int(n), kind == "keepalive", int(sources))
        times, fails = [], 0
        for _ in range(args.probes):
            ok, ms = probe(args.host, args.port, timeout=5)
            times.append(ms)
            fails += not ok
            time.sleep(0.05)
        # How many of the held connections the server has closed meanwhile.
        closed = 0
        for s in socks:
            s.setblocking(False)
            try:
                if s.recv(4096) == b"":
                    closed += 1
            except BlockingIOError:
                pass
            except OSError:
                closed += 1
            s.close()
        times.sort()
        result = {
            "phase": kind,
            "connections": int(n),
            "client_addresses": int(sources),
            "refused_at_connect": refused,
            "closed_by_server": closed,
            "probes": args.probes,
            "probe_failures": fails,
            "probe_p50_ms": round(times[len(times) // 2], 2),
            "probe_max_ms": round(times[-1], 2),
        }
        print(json.dumps(result), flush=True)
        failed |= fails > 0 or times[-1] > args.limit_ms
        time.sleep(1.0)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
