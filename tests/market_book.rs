//! Order book, decimals, Binance parsing and the TLOB tensor.

use quorum::market::binance::{
    combined_json, parse_agg_trade, parse_combined, parse_depth_snapshot, parse_depth_update, parse_event,
};
use quorum::market::book::{BookError, DiffOutcome, OrderBook};
use quorum::market::decimal::{DecimalError, Fixed};
use quorum::market::sequence::{snapshot_rows, RawLOBSequence, SNAPSHOT_ROW};
use quorum::market::types::{Level, Snapshot, SnapshotError, NUM_LEVELS};
use quorum::market::{BinanceError, DepthSnapshot, DepthUpdate, PriceLevel, StreamEvent};

fn fx(s: &str) -> Fixed {
    Fixed::parse(s).unwrap()
}

fn lvl(p: &str, q: &str) -> PriceLevel {
    PriceLevel::new(fx(p), fx(q))
}

fn diff(first: u64, last: u64, bids: &[(&str, &str)], asks: &[(&str, &str)]) -> DepthUpdate {
    DepthUpdate {
        event_time_ms: 1_700_000_000_000,
        symbol: "BTCUSDT".into(),
        first_update_id: first,
        final_update_id: last,
        bids: bids.iter().map(|(p, q)| lvl(p, q)).collect(),
        asks: asks.iter().map(|(p, q)| lvl(p, q)).collect(),
    }
}

fn rest(id: u64, bids: &[(&str, &str)], asks: &[(&str, &str)]) -> DepthSnapshot {
    DepthSnapshot {
        last_update_id: id,
        bids: bids.iter().map(|(p, q)| lvl(p, q)).collect(),
        asks: asks.iter().map(|(p, q)| lvl(p, q)).collect(),
    }
}

fn side(levels: impl Iterator<Item = PriceLevel>) -> Vec<(String, String)> {
    levels.map(|l| (l.price.to_string(), l.quantity.to_string())).collect()
}

fn strs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter().map(|(p, q)| (fx(p).to_string(), fx(q).to_string())).collect()
}

// ---- decimals ---------------------------------------------------------------

#[test]
fn decimals_parse_exactly() {
    assert_eq!(fx("30000.01000000").units(), 3_000_001_000_000);
    assert_eq!(fx("0.00000001").units(), 1);
    assert_eq!(fx("0").units(), 0);
    assert_eq!(fx("12").units(), 1_200_000_000);
    // Trailing zeros past eight digits are exact; a ninth significant digit is not.
    assert_eq!(fx("1.0000000000").units(), 100_000_000);
    assert!(matches!(Fixed::parse("1.000000001"), Err(DecimalError::TooPrecise { .. })));
    // 0.1 + 0.2 == 0.3 exactly, unlike f64.
    assert_eq!(fx("0.1").checked_add(fx("0.2")), Some(fx("0.3")));
    assert_ne!(0.1f64 + 0.2f64, 0.3f64);
    assert_eq!(fx("30000.1").to_string(), "30000.10000000");
    assert_eq!(fx("30000.1").to_f64(), 30000.1f64);
    assert_eq!(fx("0.00012345").to_f64(), 0.00012345f64);
    for bad in ["", ".", "1.", ".5", "-1", "+1", "1e5", "1.2.3", " 1", "1 ", "0x10", "NaN", "١"] {
        assert!(Fixed::parse(bad).is_err(), "{bad:?} should be refused");
    }
    assert!(matches!(Fixed::parse("99999999999999999999"), Err(DecimalError::Overflow { .. })));
    assert!(matches!(Fixed::parse("92233720369"), Err(DecimalError::Overflow { .. })));
    assert!(Fixed::parse("92233720368").is_ok());
}

// ---- sync procedure ---------------------------------------------------------

#[test]
fn sync_drops_stale_buffered_events_and_bridges_the_snapshot() {
    let mut book = OrderBook::new("btcusdt");
    // Events that arrive before the snapshot are buffered.
    let early = [
        diff(90, 95, &[("100.0", "9")], &[]),
        diff(96, 101, &[("100.0", "1.5")], &[("101.0", "2")]),
        diff(102, 105, &[("99.5", "3")], &[("101.0", "0")]),
    ];
    for e in &early {
        assert_eq!(book.apply_diff(e), Ok(DiffOutcome::Buffered));
    }
    assert!(!book.is_synced());
    assert_eq!(book.snapshot(0, 0), Err(BookError::NotSynced));

    let snap = rest(100, &[("100.0", "1"), ("99.0", "4")], &[("101.0", "1"), ("102.0", "5")]);
    let report = book.apply_snapshot(&snap).unwrap();
    assert_eq!(report.dropped_stale, 1);
    assert_eq!(report.applied, 2);
    assert!(book.is_synced());
    assert_eq!(book.last_update_id(), 105);
    assert_eq!(side(book.bids()), strs(&[("100.0", "1.5"), ("99.5", "3"), ("99.0", "4")]));
    assert_eq!(side(book.asks()), strs(&[("102.0", "5")]));

    // Live: U == prev u + 1 applies; u <= book id is stale and ignored.
    assert_eq!(book.apply_diff(&diff(106, 110, &[], &[("101.5", "0.25")])), Ok(DiffOutcome::Applied));
    assert_eq!(book.apply_diff(&diff(104, 110, &[("100.0", "777")], &[])), Ok(DiffOutcome::Stale));
    assert_eq!(book.best_bid(), Some(lvl("100.0", "1.5")));
    assert_eq!(book.best_ask(), Some(lvl("101.5", "0.25")));
    let st = book.stats();
    assert_eq!((st.events_applied, st.events_stale, st.gaps), (3, 2, 0));
}

#[test]
fn snapshot_older_than_the_buffer_is_refused_and_the_buffer_kept() {
    let mut book = OrderBook::new("BTCUSDT");
    book.apply_diff(&diff(105, 107, &[("100.0", "2")], &[])).unwrap();
    book.apply_diff(&diff(108, 109, &[("100.0", "3")], &[])).unwrap();
    let old = rest(100, &[("100.0", "1")], &[("101.0", "1")]);
    assert_eq!(book.apply_snapshot(&old), Err(BookError::SnapshotTooOld { snapshot_id: 100, first: 105 }));
    assert!(!book.is_synced());
    assert_eq!(book.buffered(), 2);
    // A newer snapshot inside the first event's range works.
    let newer = rest(106, &[("100.0", "1")], &[("101.0", "1")]);
    assert_eq!(book.apply_snapshot(&newer).unwrap().applied, 2);
    assert_eq!(book.last_update_id(), 109);
    assert_eq!(book.best_bid(), Some(lvl("100", "3")));
    assert_eq!(book.stats().snapshots_too_old, 1);
}

#[test]
fn a_gap_discards_the_book_and_a_new_snapshot_resyncs() {
    let mut book = OrderBook::new("BTCUSDT");
    book.apply_snapshot(&rest(10, &[("100", "1")], &[("101", "1")])).unwrap();
    book.apply_diff(&diff(11, 12, &[("100", "2")], &[])).unwrap();
    // 13 is missing.
    let err = book.apply_diff(&diff(14, 15, &[("100", "3")], &[])).unwrap_err();
    assert_eq!(err, BookError::Gap { book_id: 12, expected: 13, first: 14, last: 15 });
    assert!(err.to_string().contains("resync"));
    assert!(!book.is_synced());
    assert_eq!(book.bid_depth() + book.ask_depth(), 0);
    assert_eq!(book.snapshot(0, 0), Err(BookError::NotSynced));
    assert_eq!(book.stats().gaps, 1);
    // Events keep arriving while the caller fetches a snapshot.
    book.apply_diff(&diff(16, 18, &[], &[("101", "4")])).unwrap();
    let report = book.apply_snapshot(&rest(15, &[("100", "3")], &[("101", "1")])).unwrap();
    assert_eq!(report.applied, 1);
    assert_eq!(report.dropped_stale, 1);
    assert_eq!(book.best_ask(), Some(lvl("101", "4")));
    assert_eq!(book.last_update_id(), 18);
    book.check_invariants().unwrap();
}

#[test]
fn a_gap_inside_the_buffer_is_reported_at_snapshot_time() {
    let mut book = OrderBook::new("BTCUSDT");
    book.apply_diff(&diff(5, 11, &[("100", "2")], &[])).unwrap();
    book.apply_diff(&diff(13, 14, &[("100", "3")], &[])).unwrap();
    let err = book.apply_snapshot(&rest(8, &[("100", "1")], &[("101", "1")])).unwrap_err();
    assert!(matches!(err, BookError::Gap { expected: 12, first: 13, .. }), "{err:?}");
    assert!(!book.is_synced());
    assert_eq!(book.buffered(), 1);
}

#[test]
fn zero_quantity_removes_and_prices_match_exactly() {
    let mut book = OrderBook::new("BTCUSDT");
    book.apply_snapshot(&rest(1, &[("30000.10", "0.5"), ("30000.00", "1")], &[("30000.20", "0.7")])).unwrap();
    // The same price written differently is the same level.
    book.apply_diff(&diff(2, 2, &[("30000.10000000", "0.25")], &[])).unwrap();
    assert_eq!(book.bid_depth(), 2);
    assert_eq!(book.best_bid(), Some(lvl("30000.1", "0.25")));
    // Removing an absent level is normal.
    book.apply_diff(&diff(3, 3, &[("29999.99", "0")], &[])).unwrap();
    assert_eq!(book.bid_depth(), 2);
    book.apply_diff(&diff(4, 4, &[("30000.1", "0.00000000")], &[])).unwrap();
    assert_eq!(book.bid_depth(), 1);
    let s = book.snapshot(7, 8).unwrap();
    assert_eq!(s.bids[0].price, 30000.0);
    assert_eq!(s.asks[0].price, 30000.2);
    assert_eq!(s.asks[0].quantity, 0.7);
    assert_eq!((s.ts_exchange_ms, s.ts_local_ns, s.last_update_id), (7, 8, 4));
    assert_eq!((s.bid_levels(), s.ask_levels()), (1, 1));
    assert!(s.bids[1].is_missing() && s.asks[NUM_LEVELS - 1].is_missing());
    s.validate().unwrap();
}

#[test]
fn many_small_updates_do_not_drift() {
    // A quantity set 10,000 times by exact decimals ends exactly where it should.
    let mut book = OrderBook::new("BTCUSDT");
    book.apply_snapshot(&rest(0, &[("1.00000001", "0.1")], &[("1.00000002", "0.1")])).unwrap();
    let mut q = fx("0.1");
    for i in 1..=10_000u64 {
        q = q.checked_add(fx("0.00000001")).unwrap();
        book.apply_diff(&diff(i, i, &[("1.00000001", &q.to_string())], &[])).unwrap();
    }
    assert_eq!(book.best_bid(), Some(lvl("1.00000001", "0.1001")));
    let s = book.snapshot(0, 0).unwrap();
    assert_eq!(s.bids[0].quantity, 0.1001);
    assert_eq!(s.bids[0].price, 1.00000001);
}

#[test]
fn top_n_is_sorted_and_capped() {
    let mut book = OrderBook::new("BTCUSDT");
    let bids: Vec<(String, String)> = (0..30).map(|i| (format!("{}", 1000 - i), format!("{}", i + 1))).collect();
    let asks: Vec<(String, String)> = (0..7).map(|i| (format!("{}", 1001 + i), "2".to_string())).collect();
    let b: Vec<(&str, &str)> = bids.iter().map(|(p, q)| (p.as_str(), q.as_str())).collect();
    let a: Vec<(&str, &str)> = asks.iter().map(|(p, q)| (p.as_str(), q.as_str())).collect();
    // Given out of order: the book sorts.
    let mut b_shuffled = b.clone();
    b_shuffled.reverse();
    book.apply_snapshot(&rest(1, &b_shuffled, &a)).unwrap();
    let s = book.snapshot(0, 0).unwrap();
    assert_eq!((s.bid_levels(), s.ask_levels()), (NUM_LEVELS, 7));
    for i in 0..NUM_LEVELS {
        assert_eq!(s.bids[i].price, (1000 - i) as f64);
        assert_eq!(s.bids[i].quantity, (i + 1) as f64);
    }
    for i in 0..7 {
        assert_eq!(s.asks[i].price, (1001 + i) as f64);
    }
    s.validate().unwrap();
    let r = book.to_depth_snapshot(5);
    assert_eq!(r.bids.len(), 5);
    assert_eq!(r.bids[0], lvl("1000", "1"));
    assert_eq!(r.asks[4], lvl("1005", "2"));
}

#[test]
fn crossed_books_are_rejected_and_counted() {
    let mut book = OrderBook::new("BTCUSDT");
    let err = book.apply_snapshot(&rest(1, &[("101", "1")], &[("101", "1")])).unwrap_err();
    assert!(matches!(err, BookError::Crossed { .. }));
    assert_eq!(book.stats().rejected_books, 1);
    assert!(!book.is_synced());

    book.apply_snapshot(&rest(1, &[("100", "1")], &[("101", "1")])).unwrap();
    // A diff that crosses the book: the next snapshot is refused.
    book.apply_diff(&diff(2, 2, &[("101.5", "1")], &[])).unwrap();
    assert_eq!(book.snapshot(0, 0), Err(BookError::Crossed { bid: fx("101.5"), ask: fx("101") }));
    assert_eq!(book.stats().rejected_books, 2);
    // Fixed by the next event.
    book.apply_diff(&diff(3, 3, &[("101.5", "0")], &[])).unwrap();
    assert!(book.snapshot(0, 0).is_ok());

    // Duplicate levels in a REST snapshot are an invalid book too.
    let mut other = OrderBook::new("BTCUSDT");
    let err = other.apply_snapshot(&rest(1, &[("100", "1"), ("100.0", "2")], &[("101", "1")])).unwrap_err();
    assert!(matches!(err, BookError::DuplicateLevel { field: "bids", .. }));
    assert_eq!(other.stats().rejected_books, 1);
}

#[test]
fn events_for_another_symbol_or_with_bad_ranges_are_refused() {
    let mut book = OrderBook::new("BTCUSDT");
    book.apply_snapshot(&rest(1, &[("100", "1")], &[("101", "1")])).unwrap();
    let mut e = diff(2, 2, &[("100", "2")], &[]);
    e.symbol = "ETHUSDT".into();
    assert!(matches!(book.apply_diff(&e), Err(BookError::SymbolMismatch { .. })));
    assert!(matches!(book.apply_diff(&diff(5, 4, &[], &[])), Err(BookError::InvalidRange { first: 5, last: 4 })));
    assert_eq!(book.last_update_id(), 1);
    assert_eq!(book.stats().events_invalid, 2);
    book.clear();
    assert!(!book.is_synced());
    assert_eq!(book.bid_depth(), 0);
}

// ---- snapshot validation ----------------------------------------------------

fn valid_snapshot() -> Snapshot {
    let mut s = Snapshot::empty(1, 2, 3);
    for i in 0..3 {
        s.bids[i] = Level::new(100.0 - i as f64, 1.0);
        s.asks[i] = Level::new(101.0 + i as f64, 1.0);
    }
    s
}

#[test]
fn snapshot_validation_names_the_field() {
    valid_snapshot().validate().unwrap();
    type Mutation = Box<dyn Fn(&mut Snapshot)>;
    let cases: Vec<(Mutation, &str)> = vec![
        (Box::new(|s| s.bids[2].quantity = -0.5), "bid_qty_2"),
        (Box::new(|s| s.asks[1].price = f64::INFINITY), "ask_px_1"),
        (Box::new(|s| s.asks[0].price = -101.0), "ask_px_0"),
        (Box::new(|s| s.bids[1].price = 0.0), "bid_px_1"),
        (Box::new(|s| s.bids[5] = Level::new(50.0, 1.0)), "bid_px_5"),
        (Box::new(|s| s.asks[2].price = 101.5), "ask_px_2"),
        (Box::new(|s| s.asks[1].quantity = f64::NAN), "ask_qty_1"),
        (Box::new(|s| s.bids[4].quantity = 3.0), "bid_qty_4"),
        (Box::new(|s| s.bids[0].price = 101.0), "bid_px_0"),
    ];
    for (mutate, field) in cases {
        let mut s = valid_snapshot();
        mutate(&mut s);
        let err = s.validate().unwrap_err();
        assert!(err.to_string().contains(field), "{err} should name {field}");
    }
    let mut crossed = valid_snapshot();
    crossed.bids[0].price = 101.0;
    assert_eq!(crossed.validate(), Err(SnapshotError::Crossed { bid: 101.0, ask: 101.0 }));
}

// ---- Binance messages -------------------------------------------------------

const DEPTH: &str = r#"{"e":"depthUpdate","E":1700000000123,"s":"BNBBTC","U":157,"u":160,"b":[["0.0024","10"]],"a":[["0.0026","100"],["0.0027","0.00000000"]]}"#;
const AGG: &str = r#"{"e":"aggTrade","E":123456789,"s":"BNBBTC","a":12345,"p":"0.001","q":"100","f":100,"l":105,"T":123456785,"m":true,"M":true}"#;
const SNAP: &str =
    r#"{"lastUpdateId":1027024,"bids":[["4.00000000","431.00000000"]],"asks":[["4.00000200","12.00000000"]]}"#;

#[test]
fn parses_binance_messages() {
    let d = parse_depth_update(DEPTH).unwrap();
    assert_eq!(d.event_time_ms, 1_700_000_000_123);
    assert_eq!(d.symbol, "BNBBTC");
    assert_eq!((d.first_update_id, d.final_update_id), (157, 160));
    assert_eq!(d.bids, vec![lvl("0.0024", "10")]);
    assert_eq!(d.asks, vec![lvl("0.0026", "100"), lvl("0.0027", "0")]);

    let t = parse_agg_trade(AGG).unwrap();
    assert_eq!(t.agg_trade_id, 12345);
    assert_eq!((t.first_trade_id, t.last_trade_id), (100, 105));
    assert_eq!(t.trade_time_ms, 123_456_785);
    assert!(t.is_buyer_maker);
    let row = t.to_trade();
    assert_eq!((row.ts_exchange_ms, row.trade_id, row.price, row.quantity), (123_456_785, 12345, 0.001, 100.0));

    let s = parse_depth_snapshot(SNAP).unwrap();
    assert_eq!(s.last_update_id, 1_027_024);
    assert_eq!(s.asks, vec![lvl("4.000002", "12")]);

    let m = parse_combined(&combined_json("bnbbtc@depth@100ms", DEPTH)).unwrap();
    assert_eq!(m.stream, "bnbbtc@depth@100ms");
    assert_eq!(m.event, StreamEvent::Depth(d.clone()));
    let m = parse_combined(&combined_json("bnbbtc@aggTrade", AGG)).unwrap();
    assert_eq!(m.event, StreamEvent::AggTrade(t.clone()));
    assert_eq!(parse_event(r#"{"e":"kline","E":1,"s":"X","k":{}}"#).unwrap(), StreamEvent::Other);

    // What we write, we read back identically.
    assert_eq!(parse_depth_update(&d.to_json()).unwrap(), d);
    assert_eq!(parse_agg_trade(&t.to_json()).unwrap(), t);
    assert_eq!(parse_depth_snapshot(&s.to_json()).unwrap(), s);
}

#[test]
fn parse_errors_name_the_field() {
    let bad_price = DEPTH.replace("\"0.0026\"", "\"0.00x26\"");
    let err = parse_depth_update(&bad_price).unwrap_err();
    assert!(err.to_string().contains("a[0].price"), "{err}");
    let bad_qty = DEPTH.replace("\"10\"", "\"-10\"");
    let err = parse_depth_update(&bad_qty).unwrap_err();
    assert!(err.to_string().contains("b[0].quantity"), "{err}");
    let zero = DEPTH.replace("\"0.0024\"", "\"0.0\"");
    assert!(matches!(parse_depth_update(&zero), Err(BinanceError::ZeroPrice { .. })));
    let range = DEPTH.replace("\"U\":157", "\"U\":161");
    assert!(matches!(parse_depth_update(&range), Err(BinanceError::UpdateRange { first: 161, last: 160 })));
    let missing = DEPTH.replace("\"u\":160,", "");
    let err = parse_depth_update(&missing).unwrap_err();
    assert!(err.to_string().contains("`u`"), "{err}");
    let err = parse_agg_trade(&AGG.replace("\"p\":\"0.001\"", "\"p\":0.001")).unwrap_err();
    assert!(matches!(err, BinanceError::Json(_)), "{err}");
    assert!(parse_depth_snapshot(r#"{"lastUpdateId":-1,"bids":[],"asks":[]}"#).is_err());
}

/// A small deterministic generator for the fuzz loop (no dependency).
struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const ALPHABET: &[u8] =
    br#"{}[]":,.-+0123456789eEUuabspqflTmMtrudepthUpdateaggTradestreamdatalastUpdateIdbidsasks ntrue false null\"#;

fn feed(book: &mut OrderBook, text: &str) {
    let parsed = parse_combined(text).map(|m| m.event).or_else(|_| parse_event(text));
    if let Ok(StreamEvent::Depth(d)) = parsed {
        let _ = book.apply_diff(&d);
    }
    if let Ok(s) = parse_depth_snapshot(text) {
        let _ = book.apply_snapshot(&s);
    }
    book.check_invariants().unwrap();
    if let Ok(s) = book.snapshot(0, 0) {
        s.validate().unwrap();
    }
}

#[test]
fn fuzz_parser_and_book_with_random_truncated_and_mutated_messages() {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut book = OrderBook::with_buffer_capacity("BNBBTC", 64);
    let valid = [
        DEPTH.to_string(),
        AGG.to_string(),
        SNAP.to_string(),
        combined_json("bnbbtc@depth@100ms", DEPTH),
        combined_json("bnbbtc@aggTrade", AGG),
    ];
    // Every strict prefix of a valid message is refused.
    for v in &valid {
        for cut in 0..v.len() {
            let t = &v[..cut];
            assert!(parse_combined(t).is_err(), "prefix {t:?} parsed as combined");
            assert!(parse_event(t).is_err(), "prefix {t:?} parsed as event");
            assert!(parse_depth_snapshot(t).is_err(), "prefix {t:?} parsed as snapshot");
            feed(&mut book, t);
        }
    }
    let mut accepted = 0;
    for _ in 0..20_000 {
        let text: Vec<u8> = match rng.below(3) {
            // Random bytes from a JSON-ish alphabet, or any bytes.
            0 => (0..rng.below(120))
                .map(|_| if rng.below(4) == 0 { rng.next() as u8 } else { ALPHABET[rng.below(ALPHABET.len())] })
                .collect(),
            // A valid message with a few bytes replaced, inserted or deleted.
            _ => {
                let mut b = valid[rng.below(valid.len())].clone().into_bytes();
                for _ in 0..1 + rng.below(3) {
                    let i = rng.below(b.len());
                    match rng.below(3) {
                        0 => b[i] = ALPHABET[rng.below(ALPHABET.len())],
                        1 => b.insert(i, ALPHABET[rng.below(ALPHABET.len())]),
                        _ => {
                            b.remove(i);
                        }
                    }
                }
                b
            }
        };
        let text = String::from_utf8_lossy(&text);
        if parse_combined(&text).is_ok() || parse_event(&text).is_ok() || parse_depth_snapshot(&text).is_ok() {
            accepted += 1;
        }
        feed(&mut book, &text);
    }
    // The mutations are not all fatal: some messages still parse and reach the book.
    assert!(accepted > 100, "only {accepted} mutated messages parsed");
    let st = book.stats();
    assert!(st.snapshots_applied > 0 && st.events_buffered > 0, "{st:?}");
}

// ---- TLOB tensor ------------------------------------------------------------

#[test]
fn snapshot_normalized_tensor_matches_a_hand_computed_case() {
    // Three snapshots: mids 100, 100.25 and none (one side empty).
    let mut s0 = Snapshot::empty(0, 0, 1);
    s0.bids[0] = Level::new(99.5, 1.0);
    s0.asks[0] = Level::new(100.5, 3.0);
    s0.asks[1] = Level::new(101.0, 0.0);
    let mut s1 = Snapshot::empty(100, 0, 2);
    s1.bids[0] = Level::new(100.0, 7.0);
    s1.asks[0] = Level::new(100.5, 1.0);
    let mut s2 = Snapshot::empty(200, 0, 3);
    s2.asks[0] = Level::new(100.5, 1.0);
    let seq = RawLOBSequence::new(vec![s0, s1]).unwrap();
    let t = seq.to_snapshot_tensor(None);
    let at = |tt: usize, l: usize, f: usize| t[(tt * NUM_LEVELS + l) * 4 + f];
    // Snapshot 0 has no snapshot before it: its own mid, 100.
    assert_eq!([at(0, 0, 0), at(0, 0, 2), at(0, 1, 2)], [-50.0, 50.0, 100.0]);
    // Its volumes by its own statistics: ln 2, ln 4, 0.
    let z = |v: &[f64], x: f64| {
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let std = (v.iter().map(|y| (y - mean).powi(2)).sum::<f64>() / v.len() as f64).sqrt();
        ((x - mean) / (std + 1e-8)) as f32
    };
    let v0 = [2f64.ln(), 4f64.ln(), 0.0];
    assert_eq!([at(0, 0, 1), at(0, 0, 3), at(0, 1, 3)], [z(&v0, v0[0]), z(&v0, v0[1]), z(&v0, 0.0)]);
    // Snapshot 1's prices from snapshot 0's mid (100): its own move shows.
    assert_eq!([at(1, 0, 0), at(1, 0, 2)], [0.0, 50.0]);
    let v1 = [8f64.ln(), 2f64.ln()];
    assert_eq!([at(1, 0, 1), at(1, 0, 3)], [z(&v1, v1[0]), z(&v1, v1[1])]);
    // Missing levels are 0 in every feature.
    assert!((2..NUM_LEVELS).all(|l| (0..4).all(|f| at(0, l, f) == 0.0 && at(1, l, f) == 0.0)));
    // A snapshot before the window moves the first row's reference only.
    let mut before = Snapshot::empty(0, 0, 0);
    before.bids[0] = Level::new(98.0, 1.0);
    before.asks[0] = Level::new(102.0, 1.0);
    let moved = seq.to_snapshot_tensor(Some(&before));
    assert_eq!(moved[..4], [-50.0, at(0, 0, 1), 50.0, at(0, 0, 3)]);
    assert_eq!(moved[NUM_LEVELS * 4..], t[NUM_LEVELS * 4..]);
    // A previous snapshot without a mid: the row's own mid; neither: prices 0.
    let r = snapshot_rows(Some(&s2), &s1);
    assert_eq!([r[0], r[2]], [(1e4 * (100.0 / 100.25 - 1.0)) as f32, (1e4 * (100.5 / 100.25 - 1.0)) as f32]);
    let r = snapshot_rows(None, &s2);
    assert_eq!([r[2], r[3]], [0.0, 0.0]);
    // The window tensor is its snapshots' rows, in order.
    assert_eq!(t[..SNAPSHOT_ROW], snapshot_rows(None, &s0));
    assert_eq!(t[SNAPSHOT_ROW..], snapshot_rows(Some(&s0), &s1));
}

#[test]
fn normalized_tensor_matches_a_hand_computed_case() {
    // Two snapshots; the reference mid is the last one's: (99 + 101) / 2 = 100.
    let mut s0 = Snapshot::empty(0, 0, 1);
    s0.bids[0] = Level::new(99.5, 1.0);
    s0.asks[0] = Level::new(100.5, 3.0);
    s0.asks[1] = Level::new(101.0, 0.0);
    let mut s1 = Snapshot::empty(100, 0, 2);
    s1.bids[0] = Level::new(99.0, 7.0);
    s1.asks[0] = Level::new(101.0, 1.0);
    let seq = RawLOBSequence::new(vec![s0, s1]).unwrap();
    assert_eq!(seq.tensor_shape(), [2, NUM_LEVELS, 4]);
    let t = seq.to_normalized_tensor();
    assert_eq!(t.len(), 2 * NUM_LEVELS * 4);

    // Volumes ln(1+q): entries 1, 3, 0 (snapshot 0) and 7, 1 (snapshot 1).
    let v = [2f64.ln(), 4f64.ln(), 0.0, 8f64.ln(), 2f64.ln()];
    let mean = v.iter().sum::<f64>() / 5.0;
    let std = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 5.0).sqrt();
    let z = |x: f64| ((x - mean) / (std + 1e-8)) as f32;
    let at = |tt: usize, l: usize, f: usize| t[(tt * NUM_LEVELS + l) * 4 + f];

    // bps(px / 100 - 1)
    assert_eq!(at(0, 0, 0), -50.0);
    assert_eq!(at(0, 0, 1), z(2f64.ln()));
    assert_eq!(at(0, 0, 2), 50.0);
    assert_eq!(at(0, 0, 3), z(4f64.ln()));
    assert_eq!(at(0, 1, 2), 100.0);
    assert_eq!(at(0, 1, 3), z(0.0));
    assert_eq!(at(1, 0, 0), -100.0);
    assert_eq!(at(1, 0, 1), z(8f64.ln()));
    assert_eq!(at(1, 0, 2), 100.0);
    assert_eq!(at(1, 0, 3), z(2f64.ln()));
    // Missing levels are 0 in every feature.
    assert_eq!(at(0, 1, 0), 0.0);
    assert_eq!(at(0, 1, 1), 0.0);
    for l in 2..NUM_LEVELS {
        for f in 0..4 {
            assert_eq!(at(0, l, f), 0.0);
            assert_eq!(at(1, l, f), 0.0);
        }
    }
    // Spot values by hand: mean = ln(2·4·8·2)/5 = ln(128)/5.
    assert!((mean - 128f64.ln() / 5.0).abs() < 1e-12);
    // The standardized volumes have mean 0 and (population) std 1.
    let zs: Vec<f64> = v.iter().map(|&x| z(x) as f64).collect();
    assert!(zs.iter().sum::<f64>().abs() < 1e-5);
    assert!(((zs.iter().map(|x| x * x).sum::<f64>() / 5.0) - 1.0).abs() < 1e-5);

    assert!(RawLOBSequence::new(vec![]).is_err());
    assert!(RawLOBSequence::new(vec![Snapshot::empty(0, 0, 0)]).is_err());
}
