#!/usr/bin/env python3
"""Generate the TA-Lib golden fixtures for quorum's `features::talib` module.

How to run (needs the pinned reference package, in a private venv):

    python3 -m venv /root/.cache/quorum/talib-venv
    /root/.cache/quorum/talib-venv/bin/pip install ta-lib==0.8.2 numpy
    /root/.cache/quorum/talib-venv/bin/python tools/talib_goldens.py

It writes tests/fixtures/talib/goldens.json (relative to the crate root): the
input series (high, low, close, volume) and, for each of the 25 TA-Lib
functions used by the feature table (docs/features.md, rows 75-111), the
output of `ta-lib` 0.8.2 with the table's parameters (and, on the first two
series, extra parameter sets: other periods, period 1, swapped fast/slow,
unsorted ULTOSC periods), on three series: a random walk; a trending series
with flat stretches (h = l = c, volume 0) and zero-volume stretches; and a
series quoted near 1e-4 with tiny and ulp-sized ranges, flat stretches and a
spike.

NaN is encoded as null; floats are written as repr() strings, so they
round-trip exactly (JSON numbers would go through serde_json's default,
not-quite-exact float parser).  The series are deterministic (seeded numpy),
so re-running the script reproduces the file byte for byte.  The Rust tests
(tests/talib.rs) only read the JSON; they never need Python.
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
        if i < 30 or 160 <= i < 250 or 410 <= i < 440:
            flat[i] = True
        elif i < 160:
            price += 0.05 + rng.normal(0.0, 0.03)
        elif i < 410:
            price -= 0.03 + rng.normal(0.0, 0.03)
        if 330 <= i < 360:
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


def tiny_spiky(n, seed):
    """Prices near 1e-4 with edge cases for TA-Lib 0.8's zero tests.

    Flat stretches (h = l = c, volume 0), a stretch of h = l = c bars moving
    by 1e-9 (ranges far below TA-Lib's old fixed band) then by single ulps
    (machine-flat windows), a one-bar spike of 100x that later leaves
    every window (variance rebuilds), and bars with volume 0 while prices
    move.
    """
    rng = np.random.default_rng(seed)
    close = 1e-4 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))
    spread = np.abs(rng.normal(0.0, 0.004, n)) * close
    for i in range(50, 100):
        close[i] = close[49]
        spread[i] = 0.0
    # A stretch on a grid of 1e-9 (relative moves ~1e-5) with h = l = c:
    # ranges far below TA-Lib's old fixed 1e-14 band in absolute terms.
    base = close[120]
    for i in range(120, 145):
        close[i] = base + (i % 3) * 1e-9
        spread[i] = 0.0
    # Then machine-flat: h = l = c moving by single ulps (TA-Lib 0.8's scaled
    # dead-zones and exact tests; Wilder sums of ulp-sized moves).
    for i in range(145, 170):
        close[i] = base + (i % 3) * np.spacing(base)
        spread[i] = 0.0
    close[200] = close[199] * 100.0
    open_ = np.empty(n)
    open_[0] = close[0]
    open_[1:] = close[:-1]
    high = np.maximum(open_, close) + spread
    low = np.minimum(open_, close) - spread
    volume = np.round(rng.lognormal(1.0, 1.0, n), 3)
    flat = np.zeros(n, dtype=bool)
    flat[51:100] = True
    flat[121:170] = True
    open_[flat] = close[flat]
    high[flat] = close[flat]
    low[flat] = close[flat]
    volume[flat] = 0.0
    volume[230:260] = 0.0
    return open_, high, low, close, volume


def calls():
    """(function, params, inputs, in_table) for every call.

    `inputs` name the series columns; `in_table` marks the parameter sets of
    the feature table (docs/features.md rows 75-111), the others are extra
    sets (other periods, period 1, swapped fast/slow, unsorted ULTOSC).
    """
    c, hlc, hlcv, hl = ["close"], ["high", "low", "close"], ["high", "low", "close", "volume"], ["high", "low"]
    out = []

    def add(func, params, inputs, table):
        out.append((func, params, inputs, table))

    for p in (6, 14, 24):
        add("RSI", {"timeperiod": p}, c, True)
    add("RSI", {"timeperiod": 2}, c, False)
    for (f, s, g), t in (((12, 26, 9), True), ((5, 13, 4), False), ((26, 12, 9), False)):
        add("MACD", {"fastperiod": f, "slowperiod": s, "signalperiod": g}, c, t)
    for (p, u, d), t in (((20, 2.0, 2.0), True), ((10, 1.5, 2.5), False)):
        add("BBANDS", {"timeperiod": p, "nbdevup": u, "nbdevdn": d, "matype": 0}, c, t)
    for name in ("NATR", "ADX", "PLUS_DI", "MINUS_DI"):
        add(name, {"timeperiod": 14}, hlc, True)
        add(name, {"timeperiod": 5}, hlc, False)
    for name in ("NATR", "PLUS_DI", "MINUS_DI"):
        add(name, {"timeperiod": 1}, hlc, False)
    for (k, sk, sd), t in (((14, 3, 3), True), ((5, 2, 4), False)):
        add("STOCH", {"fastk_period": k, "slowk_period": sk, "slowk_matype": 0,
                      "slowd_period": sd, "slowd_matype": 0}, hlc, t)
    add("CCI", {"timeperiod": 20}, hlc, True)
    add("CCI", {"timeperiod": 7}, hlc, False)
    add("WILLR", {"timeperiod": 14}, hlc, True)
    add("WILLR", {"timeperiod": 5}, hlc, False)
    add("MFI", {"timeperiod": 14}, hlcv, True)
    add("MFI", {"timeperiod": 5}, hlcv, False)
    add("OBV", {}, ["close", "volume"], True)
    for p in (10, 30):
        add("ROC", {"timeperiod": p}, c, True)
    add("ROC", {"timeperiod": 1}, c, False)
    add("MOM", {"timeperiod": 10}, c, True)
    add("MOM", {"timeperiod": 3}, c, False)
    for p in (9, 21, 50):
        add("EMA", {"timeperiod": p}, c, True)
    for p in (20, 50, 200):
        add("SMA", {"timeperiod": p}, c, True)
    add("TRIX", {"timeperiod": 15}, c, True)
    add("TRIX", {"timeperiod": 5}, c, False)
    for (a, b, d), t in (((7, 14, 28), True), ((3, 5, 9), False), ((14, 28, 7), False)):
        add("ULTOSC", {"timeperiod1": a, "timeperiod2": b, "timeperiod3": d}, hlc, t)
    add("AROONOSC", {"timeperiod": 14}, hl, True)
    add("AROONOSC", {"timeperiod": 5}, hl, False)
    add("CMO", {"timeperiod": 14}, c, True)
    add("CMO", {"timeperiod": 5}, c, False)
    for (f, s), t in (((12, 26), True), ((5, 10), False), ((10, 5), False)):
        add("PPO", {"fastperiod": f, "slowperiod": s, "matype": 0}, c, t)
    for (p, k, d), t in (((14, 5, 3), True), ((6, 4, 2), False)):
        add("STOCHRSI", {"timeperiod": p, "fastk_period": k, "fastd_period": d,
                         "fastd_matype": 0}, c, t)
    for (f, s), t in (((3, 10), True), ((2, 5), False), ((10, 3), False)):
        add("ADOSC", {"fastperiod": f, "slowperiod": s}, hlcv, t)
    add("LINEARREG_SLOPE", {"timeperiod": 14}, c, True)
    add("LINEARREG_SLOPE", {"timeperiod": 5}, c, False)
    add("STDDEV", {"timeperiod": 20, "nbdev": 1.0}, c, True)
    add("STDDEV", {"timeperiod": 5, "nbdev": 2.0}, c, False)
    return out


OUTPUT_NAMES = {
    "MACD": ["macd", "signal", "hist"],
    "BBANDS": ["upper", "middle", "lower"],
    "STOCH": ["slowk", "slowd"],
    "STOCHRSI": ["fastk", "fastd"],
}


def enc(values):
    # repr() strings, parsed on the Rust side with str::parse::<f64> (correctly
    # rounded, so exact); JSON numbers would go through serde_json's default
    # float parser, which can be off by one ulp.
    return [None if math.isnan(v) else repr(float(v)) for v in values]


def main():
    if talib.__version__ != EXPECTED_VERSION:
        sys.exit(f"need ta-lib {EXPECTED_VERSION}, found {talib.__version__}")
    # name -> (series, whether to run the extra parameter sets too)
    series = {
        "random_walk": (random_walk(300, 20260101), True),
        "trend_flat": (trend_flat(440, 20260102), True),
        "tiny_spiky": (tiny_spiky(300, 20260103), False),
    }
    doc = {
        "generator": "tools/talib_goldens.py",
        "ta_lib_python": talib.__version__,
        "ta_lib_c": talib.__ta_version__.decode() if isinstance(talib.__ta_version__, bytes) else str(talib.__ta_version__),
        "series": [],
    }
    for name, ((o, h, l, c, v), extras) in series.items():
        cols = {"open": o, "high": h, "low": l, "close": c, "volume": v}
        # "open" is used by none of the 25 functions: not stored.
        entry = {"name": name, **{k: enc(x) for k, x in cols.items() if k != "open"},
                 "calls": []}
        for func, params, inputs, in_table in calls():
            if not (in_table or extras):
                continue
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
