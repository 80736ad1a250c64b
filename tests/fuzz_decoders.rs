//! The decoders that read bytes from the network or from a user's file, fed
//! arbitrary and mutated input (proptest, a bounded number of cases so it runs
//! in the suite): the binary predict body, JSON bodies, Binance's stream and
//! REST messages, and the safetensors reader. Each must answer Ok or an error,
//! never panic, and never allocate from a size it was only told about (a
//! safetensors header claiming exabytes is an error, not an allocation).

use std::collections::HashMap;

use proptest::prelude::*;
use quorum::market::binance;
use quorum::server::codec;
use quorum::server::engine::InputLayout;
use quorum::weights::{read_tensor_file, to_bytes};
use quorum::Tensor;

fn config() -> ProptestConfig {
    ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() }
}

/// `base` with up to eight bytes overwritten and its end cut at `cut` (as a share of its length).
fn mutate(base: &[u8], edits: &[(usize, u8)], cut: f64) -> Vec<u8> {
    let mut b = base.to_vec();
    for &(at, v) in edits {
        if !b.is_empty() {
            let i = at % b.len();
            b[i] = v;
        }
    }
    let keep = ((b.len() as f64) * cut.clamp(0.0, 1.0)).round() as usize;
    b.truncate(keep.max(1).min(b.len()));
    b
}

fn edits() -> impl Strategy<Value = Vec<(usize, u8)>> {
    prop::collection::vec((any::<usize>(), any::<u8>()), 0..8)
}

const DEPTH: &str = r#"{"e":"depthUpdate","E":1764000000123,"s":"BTCUSDT","U":157,"u":160,"b":[["0.0024","10"]],"a":[["0.0026","100"]]}"#;
const AGG: &str = r#"{"e":"aggTrade","E":1764000000123,"s":"BTCUSDT","a":12345,"p":"0.001","q":"100","f":100,"l":105,"T":1764000000120,"m":true}"#;
const SNAPSHOT: &str =
    r#"{"lastUpdateId":1027024,"bids":[["4.00000000","431.00000000"]],"asks":[["4.00000200","12.00000000"]]}"#;

/// Every Binance parser on one text: each returns, none panics.
fn parse_all(text: &str) {
    let _ = binance::parse_combined(text);
    let _ = binance::parse_event(text);
    let _ = binance::parse_depth_update(text);
    let _ = binance::parse_agg_trade(text);
    let _ = binance::parse_depth_snapshot(text);
}

#[test]
fn the_valid_seeds_parse() {
    // The mutations start from real messages: they must be accepted as they are.
    binance::parse_depth_update(DEPTH).unwrap();
    binance::parse_agg_trade(AGG).unwrap();
    binance::parse_depth_snapshot(SNAPSHOT).unwrap();
    binance::parse_combined(&binance::combined_json("btcusdt@depth@100ms", DEPTH)).unwrap();
    read_tensor_file(&small_safetensors(), "seed").unwrap();
}

fn layout() -> InputLayout {
    InputLayout { features: Some([60, 112]), lob: Some([100, 20, 4]), aux: Some(112), ..InputLayout::default() }
}

fn small_safetensors() -> Vec<u8> {
    let mut t = HashMap::new();
    t.insert("a.weight".to_string(), Tensor::new(vec![2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap());
    t.insert("b".to_string(), Tensor::new(vec![1], vec![7.0]).unwrap());
    to_bytes(&t, HashMap::from([("model".to_string(), "cnn_lstm".to_string())])).unwrap()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn binary_predict_bodies_of_any_length_and_content(len_words in 0usize..200, fill in any::<u32>(), exact in any::<bool>()) {
        let l = layout();
        let n = if exact { l.total_len() } else { len_words };
        let mut body = Vec::with_capacity(4 * n + 3);
        for i in 0..n {
            body.extend_from_slice(&(fill.rotate_left(i as u32 % 32)).to_le_bytes());
        }
        body.extend(std::iter::repeat_n(0u8, (fill % 4) as usize));
        let r = codec::decode_binary(&body, &l);
        prop_assert_eq!(r.is_ok(), body.len() == 4 * l.total_len());
    }

    #[test]
    fn json_bodies_of_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = codec::from_json_object(&bytes);
        let _ = codec::from_json::<serde_json::Value>(&bytes);
    }

    #[test]
    fn json_bodies_mutated_from_a_valid_predict(e in edits(), cut in 0.0f64..1.2) {
        let base = br#"{"predictions":[{"model_type":"tlob","direction":"up","confidence":0.7,"expected_return":1.5e308,"probabilities":[0.1,0.2,0.7]}],"features":[[1,2],[3,4]]}"#;
        let b = mutate(base, &e, cut);
        let _ = codec::from_json_object(&b);
        let _ = codec::from_json::<serde_json::Value>(&b);
    }

    #[test]
    fn binance_messages_of_arbitrary_text(text in ".{0,300}") {
        parse_all(&text);
    }

    #[test]
    fn binance_messages_mutated_from_real_ones(which in 0usize..4, e in edits(), cut in 0.0f64..1.2) {
        let combined = binance::combined_json("btcusdt@depth@100ms", DEPTH);
        let base = [DEPTH, AGG, SNAPSHOT, combined.as_str()][which];
        let b = mutate(base.as_bytes(), &e, cut);
        parse_all(&String::from_utf8_lossy(&b));
    }

    #[test]
    fn safetensors_of_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = read_tensor_file(&bytes, "fuzz");
    }

    #[test]
    fn safetensors_mutated_and_with_any_header_length(e in edits(), cut in 0.0f64..1.2, header_len in any::<u64>()) {
        let base = small_safetensors();
        let _ = read_tensor_file(&mutate(&base, &e, cut), "fuzz");
        // The first 8 bytes are the header's length: any value, even one far
        // past the file (and past memory), is an error and allocates nothing.
        let mut lying = base.clone();
        lying[..8].copy_from_slice(&header_len.to_le_bytes());
        let r = read_tensor_file(&lying, "fuzz");
        if header_len as usize != u64::from_le_bytes(base[..8].try_into().unwrap()) as usize {
            prop_assert!(r.is_err());
        }
    }
}
