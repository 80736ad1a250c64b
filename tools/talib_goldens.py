#!/usr/bin/env python3
"""Generate the TA-Lib golden fixtures for quorum's `features::talib` module.

How to run (needs the pinned reference package, in a private venv):

    python3 -m venv /root/.cache/quorum/talib-venv
    /root/.cache/quorum/talib-venv/bin/pip install ta-lib==0.8.2 numpy
    /root/.cache/quorum/talib-venv/bin/python tools/talib_goldens.py

It writes tests/fixtures/talib/goldens.json (relative to the crate root): the
input series (open, high, low, close, volume) and, for each of the 25 TA-Lib
functions used by the feature table (docs: spec/features.md, rows 75-111), the
output of `ta-lib` 0.8.2 with the table's parameters plus one extra parameter
set.  NaN is encoded as null; floats are written with repr(), so they
round-trip exactly.  The series are deterministic (seeded numpy), so re-running
the script reproduces the file byte for byte.  The Rust tests (tests/talib.rs)
only read the JSON; they never need Python.
"""
import json
import math
import os
import sys

import numpy as np
import talib

EXPECTED_VERSION = "0.8.2"


def random_walk(n, seed):
    """A random-walk OHLCV series with positive prices and volumes."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.004, n)))
    open_ = np.empty(n)
    open_[0] = 100.0
    open_[1:] = close[:-1]
    spread_hi = np.abs(rng.normal(0.0, 0.002, n)) * close
    spread_lo = np.abs(rng.normal(0.0, 0.002, n)) * close
    high = np.maximum(open_, close) + spread_hi
    low = np.minimum(open_, close) - spread_lo
    volume = np.round(rng.lognormal(3.0, 1.0, n), 3)
    return open_, high, low, close, volume


def trend_flat(n, seed):
    """A trending series with flat stretches (h = l = o = c, volume 0).

    It starts flat (so seeds see zero ranges and zero volumes), trends up,
    goes flat for a long stretch (long enough for Wilder averages to decay),
    trends down, has a stretch where prices move but volume is 0, and a
    short flat stretch near the end.
    """
    rng = np.random.default_rng(seed)
    close = np.empty(n)
    price = 50.0
    flat = np.zeros(n, dtype=bool)
    zero_vol = np.zeros(n, dtype=bool)
    for i in range(n):
        if i < 40 or 200 <= i < 300 or 470 <= i < 500:
            flat[i] = True
        elif i < 200:
            price += 0.05 + rng.normal(0.0, 0.03)
        elif i < 470:
            price -= 0.03 + rng.normal(0.0, 0.03)
        else:
            price += rng.normal(0.0, 0.05)
        if 380 <= i < 420:
            zero_vol[i] = True
        close[i] = round(price, 4)
    open_ = np.empty(n)
    open_[0] = close[0]
    open_[1:] = close[:-1]
    high = np.maximum(open_, close) + np.round(np.abs(rng.normal(0.0, 0.02, n)), 4)
    low = np.minimum(open_, close) - np.round(np.abs(rng.normal(0.0, 0.02, n)), 4)
    volume = np.round(rng.lognormal(2.0, 0.8, n), 2)
    open_[flat] = close[flat]
    high[flat] = close[flat]
    low[flat] = close[flat]
    volume[flat] = 0.0
    volume[zero_vol] = 0.0
    return open_, high, low, close, volume


def calls():
    """(function, params, inputs) for every call; inputs name the series columns."""
    c, hlc, hlcv, hl = ["close"], ["high", "low", "close"], ["high", "low", "close", "volume"], ["high", "low"]
    out = []
    for p in (6, 14, 24, 2):
        out.append(("RSI", {"timeperiod": p}, c))
    for f, s, g in ((12, 26, 9), (5, 13, 4), (26, 12, 9)):
        out.append(("MACD", {"fastperiod": f, "slowperiod": s, "signalperiod": g}, c))
    for p, u, d in ((20, 2.0, 2.0), (10, 1.5, 2.5)):
        out.append(("BBANDS", {"timeperiod": p, "nbdevup": u, "nbdevdn": d, "matype": 0}, c))
    for name in ("NATR", "ADX", "PLUS_DI", "MINUS_DI"):
        for p in (14, 5):
            out.append((name, {"timeperiod": p}, hlc))
    out.append(("NATR", {"timeperiod": 1}, hlc))
    out.append(("PLUS_DI", {"timeperiod": 1}, hlc))
    out.append(("MINUS_DI", {"timeperiod": 1}, hlc))
    for k, sk, sd in ((14, 3, 3), (5, 2, 4)):
        out.append(("STOCH", {"fastk_period": k, "slowk_period": sk, "slowk_matype": 0,
                              "slowd_period": sd, "slowd_matype": 0}, hlc))
    for p in (20, 7):
        out.append(("CCI", {"timeperiod": p}, hlc))
    for p in (14, 5):
        out.append(("WILLR", {"timeperiod": p}, hlc))
    for p in (14, 5):
        out.append(("MFI", {"timeperiod": p}, hlcv))
    out.append(("OBV", {}, ["close", "volume"]))
    for p in (10, 30, 1):
        out.append(("ROC", {"timeperiod": p}, c))
    for p in (10, 3):
        out.append(("MOM", {"timeperiod": p}, c))
    for p in (9, 21, 50):
        out.append(("EMA", {"timeperiod": p}, c))
    for p in (20, 50, 200):
        out.append(("SMA", {"timeperiod": p}, c))
    for p in (15, 5):
        out.append(("TRIX", {"timeperiod": p}, c))
    for a, b, d in ((7, 14, 28), (3, 5, 9), (14, 28, 7)):
        out.append(("ULTOSC", {"timeperiod1": a, "timeperiod2": b, "timeperiod3": d}, hlc))
    for p in (14, 5):
        out.append(("AROONOSC", {"timeperiod": p}, hl))
    for p in (14, 5):
        out.append(("CMO", {"timeperiod": p}, c))
    for f, s in ((12, 26), (5, 10), (10, 5)):
        out.append(("PPO", {"fastperiod": f, "slowperiod": s, "matype": 0}, c))
    for p, k, d in ((14, 5, 3), (6, 4, 2)):
        out.append(("STOCHRSI", {"timeperiod": p, "fastk_period": k, "fastd_period": d,
                                 "fastd_matype": 0}, c))
    for f, s in ((3, 10), (2, 5), (10, 3)):
        out.append(("ADOSC", {"fastperiod": f, "slowperiod": s}, hlcv))
    for p in (14, 5):
        out.append(("LINEARREG_SLOPE", {"timeperiod": p}, c))
    for p, d in ((20, 1.0), (5, 2.0)):
        out.append(("STDDEV", {"timeperiod": p, "nbdev": d}, c))
    return out


OUTPUT_NAMES = {
    "MACD": ["macd", "signal", "hist"],
    "BBANDS": ["upper", "middle", "lower"],
    "STOCH": ["slowk", "slowd"],
    "STOCHRSI": ["fastk", "fastd"],
}


def enc(values):
    return [None if math.isnan(v) else float(v) for v in values]


def main():
    if talib.__version__ != EXPECTED_VERSION:
        sys.exit(f"need ta-lib {EXPECTED_VERSION}, found {talib.__version__}")
    n = 500
    series = {
        "random_walk": random_walk(n, 20260101),
        "trend_flat": trend_flat(n, 20260102),
    }
    doc = {
        "generator": "tools/talib_goldens.py",
        "ta_lib_python": talib.__version__,
        "ta_lib_c": talib.__ta_version__.decode() if isinstance(talib.__ta_version__, bytes) else str(talib.__ta_version__),
        "series": [],
    }
    for name, (o, h, l, c, v) in series.items():
        cols = {"open": o, "high": h, "low": l, "close": c, "volume": v}
        entry = {"name": name, **{k: enc(x) for k, x in cols.items()}, "calls": []}
        for func, params, inputs in calls():
            res = getattr(talib, func)(*[cols[i] for i in inputs], **params)
            if not isinstance(res, tuple):
                res = (res,)
            names = OUTPUT_NAMES.get(func, ["real"])
            entry["calls"].append({
                "func": func,
                "params": params,
                "outputs": {nm: enc(r) for nm, r in zip(names, res)},
            })
        doc["series"].append(entry)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.path.join(root, "tests", "fixtures", "talib", "goldens.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        json.dump(doc, fh, separators=(",", ":"), allow_nan=False)
        fh.write("\n")
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    main()
