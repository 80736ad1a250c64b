#!/usr/bin/env python3
"""A plain-Python peer of `quorum import` for timing: reads hftbacktest
recordings (gzip lines `<ns> <JSON>`), rebuilds the book from the REST
snapshot and the depth diffs by the same rules, and takes the same rows
(every 100 ms of exchange time, the top 20 a side). It writes nothing (no
Parquet library here), so it does less than the importer: a floor for what a
straightforward script costs, not a like-for-like store writer.

    python3 tools/reference/import_peer.py [--rounds 5] FILE...
"""

import argparse
import gzip
import json
import statistics
import time


def top(side, reverse):
    return sorted(side.items(), reverse=reverse)[:20]


def replay(files):
    bids, asks = {}, {}
    book_id = None
    waiting = []
    last_e = 0
    next_t = None
    rows = trades = 0
    for path in files:
        with gzip.open(path, "rt") as f:
            for line in f:
                _, text = line.split(" ", 1)
                msg = json.loads(text)
                if "lastUpdateId" in msg:
                    if book_id is not None:
                        continue
                    bids = {float(p): float(q) for p, q in msg["bids"]}
                    asks = {float(p): float(q) for p, q in msg["asks"]}
                    book_id = msg["lastUpdateId"]
                    for d in waiting:
                        if d["u"] <= book_id:
                            continue
                        apply(bids, asks, d)
                        book_id = d["u"]
                    waiting = []
                    if last_e:
                        next_t = -(-last_e // 100) * 100
                    continue
                stream, d = msg["stream"], msg["data"]
                if stream.endswith("@trade") or stream.endswith("@aggTrade"):
                    trades += 1
                    continue
                if not stream.endswith("@depth@100ms"):
                    continue
                e = d["E"]
                if book_id is None:
                    waiting.append(d)
                    last_e = e
                    continue
                if next_t is not None:
                    while next_t < e:
                        top(bids, True)
                        top(asks, False)
                        rows += 1
                        next_t += 100
                if d["u"] <= book_id:
                    continue
                if d["U"] > book_id + 1:
                    raise SystemExit(f"gap at {book_id}")
                apply(bids, asks, d)
                book_id = d["u"]
                last_e = e
                if next_t is None:
                    next_t = -(-e // 100) * 100
    return rows + (1 if next_t is not None else 0), trades


def apply(bids, asks, d):
    for side, key in ((bids, "b"), (asks, "a")):
        for p, q in d[key]:
            p, q = float(p), float(q)
            if q == 0.0:
                side.pop(p, None)
            else:
                side[p] = q


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()
    times = []
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        rows, trades = replay(args.files)
        times.append(time.perf_counter() - t0)
    print(f"python peer: {rows} rows, {trades} trades; median {statistics.median(times) * 1e3:.0f} ms over {args.rounds} rounds")


if __name__ == "__main__":
    main()
