//! Request bodies in: JSON (with the path of the field at fault in every
//! error) and the binary predict body (little-endian f32: features, then lob,
//! then aux, lengths fixed by the loaded configs).

use serde::de::{self, DeserializeOwned, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::error::Category;
use serde_path_to_error::Segment;

use super::error::ApiError;
use crate::server::engine::{EngineInputs, InputLayout};

/// Parses a whole body as `T`. Errors name the field (`features[3][7]`,
/// `model_type`) and tell malformed JSON, a wrong type, a missing, unknown or
/// repeated field and an unknown model or strategy apart. A missing field
/// next to a key that is one or two letters off it (`model_typ`) is reported
/// as that unknown key, the likelier mistake.
pub fn from_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let segments: Vec<Segment> = e.path().iter().cloned().collect();
        let err = json_error(e);
        match err.code {
            "missing_field" => misspelt(body, &segments, &err).unwrap_or(err),
            _ => err,
        }
    })?;
    de.end().map_err(|e| ApiError::bad("invalid_json", "body", format!("malformed JSON: {e}")))?;
    Ok(value)
}

/// Parses a body that must be one JSON object, kept as a map (the training
/// body, read in parts). A key given twice anywhere in it is an error naming
/// that key, as the typed bodies' own fields are.
pub fn from_json_object(body: &[u8]) -> Result<serde_json::Map<String, serde_json::Value>, ApiError> {
    let Strict(value) = from_json(body)?;
    match value {
        serde_json::Value::Object(map) => Ok(map),
        other => Err(ApiError::bad("invalid_type", "body", format!("expected a JSON object, got {}", kind(&other)))),
    }
}

fn kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// A JSON value in which no object repeats a key.
struct Strict(serde_json::Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = serde_json::Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, serde_json::Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        Strict::deserialize(d).map(|s| s.0)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(serde_json::Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(de::Error::custom(format_args!("duplicate field `{key}`")));
            }
            let Strict(v) = map.next_value()?;
            out.insert(key, v);
        }
        Ok(serde_json::Value::Object(out))
    }
}

/// The unknown key a missing field was most likely misspelt as, if the
/// object at `segments` has one (edit distance 1 or 2, case aside).
fn misspelt(body: &[u8], segments: &[Segment], missing: &ApiError) -> Option<ApiError> {
    let want = missing.field.as_deref()?.rsplit(['.', ']']).next()?;
    let root: serde_json::Value = serde_json::from_slice(body).ok()?;
    let mut at = &root;
    for s in segments {
        at = match s {
            Segment::Seq { index } => at.get(index)?,
            Segment::Map { key } => at.get(key)?,
            _ => return None,
        };
    }
    let near = at.as_object()?.keys().find(|k| *k != want && edit_distance(k, want) <= 2)?;
    let path = missing.field.as_deref()?.strip_suffix(want)?.trim_end_matches('.');
    Some(ApiError::bad(
        "unknown_field",
        join(if path.is_empty() { "." } else { path }, near),
        format!("unknown field `{near}`: is it `{want}`? (`{want}` is missing)"),
    ))
}

/// Levenshtein distance of two short keys, ASCII case ignored.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) =
        (a.chars().map(|c| c.to_ascii_lowercase()).collect(), b.chars().map(|c| c.to_ascii_lowercase()).collect());
    if a.len().abs_diff(b.len()) > 2 || a.len() > 64 || b.len() > 64 {
        return usize::MAX;
    }
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != cb)).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Deserializes an already parsed value (the training body, after `symbol` is taken out).
pub fn from_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        data_error(&path, &e.into_inner().to_string())
    })
}

fn json_error(e: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let path = e.path().to_string();
    let inner = e.into_inner();
    match inner.classify() {
        Category::Syntax | Category::Eof | Category::Io => {
            let field = if path == "." { "body".to_owned() } else { path };
            let msg = inner.to_string();
            if msg.starts_with("number out of range") {
                // Well-formed, but too large for its type (1e39 as an f32, 1e999 anywhere).
                return ApiError::bad("invalid_value", field, msg);
            }
            ApiError::bad("invalid_json", field, format!("malformed JSON: {msg}"))
        }
        Category::Data => data_error(&path, &inner.to_string()),
    }
}

/// `a.b` joined, treating serde_path_to_error's root `.` as empty.
fn join(path: &str, name: &str) -> String {
    if path == "." || path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

/// The text between the first pair of backticks of a serde message.
fn quoted(msg: &str) -> Option<&str> {
    let start = msg.find('`')? + 1;
    let end = start + msg[start..].find('`')?;
    Some(&msg[start..end])
}

fn data_error(path: &str, msg: &str) -> ApiError {
    let at_root = if path == "." { "body".to_owned() } else { path.to_owned() };
    if msg.starts_with("missing field") {
        let field = quoted(msg).map_or(at_root, |f| join(path, f));
        return ApiError::bad("missing_field", field, msg);
    }
    if msg.starts_with("unknown field") {
        // serde_path_to_error's path already ends at the unknown key.
        let field = match quoted(msg) {
            Some(f) if path.rsplit('.').next() == Some(f) => path.to_owned(),
            Some(f) => join(path, f),
            None => at_root,
        };
        return ApiError::bad("unknown_field", field, msg);
    }
    if msg.starts_with("duplicate field") {
        let field = quoted(msg).map_or(at_root, |f| join(path, f));
        return ApiError::bad("duplicate_field", field, format!("{msg}: give each key once"));
    }
    if msg.starts_with("unknown variant") {
        let last = path.rsplit('.').next().unwrap_or(path);
        let code = match last {
            "model_type" | "architecture" => "unknown_model",
            "strategy" => "unknown_strategy",
            _ => "invalid_value",
        };
        return ApiError::bad(code, at_root, msg);
    }
    ApiError::bad("invalid_type", at_root, msg)
}

/// Splits a binary predict body into the inputs `layout` asks for.
pub fn decode_binary(body: &[u8], layout: &InputLayout) -> Result<EngineInputs, ApiError> {
    let (f, l, a) = (layout.features_len(), layout.lob_len(), layout.aux_len());
    let want = 4 * (f + l + a);
    if body.len() != want {
        return Err(ApiError::bad(
            "invalid_input",
            "body",
            format!(
                "expected {want} bytes: little-endian f32 features ({f}), then lob ({l}), then aux ({a}) for the \
                 loaded models; got {} bytes",
                body.len()
            ),
        ));
    }
    let mut floats = body.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]));
    let mut take = |n: usize| (n > 0).then(|| floats.by_ref().take(n).collect::<Vec<f32>>());
    Ok(EngineInputs { features: take(f), lob: take(l), aux: take(a) })
}

/// `rows` flattened, every row checked to have `width` values.
pub fn flatten2(name: &str, rows: Vec<Vec<f32>>, width: Option<usize>) -> Result<Vec<f32>, ApiError> {
    let mut out = Vec::with_capacity(rows.len() * width.unwrap_or(0));
    for (i, row) in rows.into_iter().enumerate() {
        if let Some(w) = width {
            if row.len() != w {
                return Err(ApiError::bad(
                    "invalid_input",
                    format!("{name}[{i}]"),
                    format!("expected {w} values, got {}", row.len()),
                ));
            }
        }
        out.extend_from_slice(&row);
    }
    Ok(out)
}

/// `lob` (`[t][level][feature]`) flattened, every level checked.
pub fn flatten3(name: &str, t: Vec<Vec<Vec<f32>>>, dims: Option<[usize; 2]>) -> Result<Vec<f32>, ApiError> {
    let mut out = Vec::with_capacity(t.len() * dims.map_or(0, |[a, b]| a * b));
    for (i, levels) in t.into_iter().enumerate() {
        if let Some([n, _]) = dims {
            if levels.len() != n {
                return Err(ApiError::bad(
                    "invalid_input",
                    format!("{name}[{i}]"),
                    format!("expected {n} levels, got {}", levels.len()),
                ));
            }
        }
        let flat = flatten2(&format!("{name}[{i}]"), levels, dims.map(|[_, w]| w))?;
        out.extend_from_slice(&flat);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ensemble::ModelType;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Enable {
        model_type: ModelType,
        enabled: bool,
    }

    #[test]
    fn json_errors_name_the_field_and_the_kind() {
        let e = from_json::<Enable>(br#"{"model_type": "lstm", "enabled": true}"#).unwrap_err();
        assert_eq!((e.code, e.field.as_deref()), ("unknown_model", Some("model_type")));
        let e = from_json::<Enable>(br#"{"model_type": "tlob"}"#).unwrap_err();
        assert_eq!((e.code, e.field.as_deref()), ("missing_field", Some("enabled")));
        let e = from_json::<Enable>(br#"{"model_type": "tlob", "enabled": "yes"}"#).unwrap_err();
        assert_eq!((e.code, e.field.as_deref()), ("invalid_type", Some("enabled")));
        let e = from_json::<Enable>(br#"{"model_type": "tlob", "enabled": true, "x": 1}"#).unwrap_err();
        assert_eq!((e.code, e.field.as_deref()), ("unknown_field", Some("x")));
        let e = from_json::<Enable>(br#"{"model_type": "tlob", "enabled": tru"#).unwrap_err();
        assert_eq!(e.code, "invalid_json");
        let e = from_json::<Enable>(br#"{"model_type": "tlob", "enabled": true} x"#).unwrap_err();
        assert_eq!(e.code, "invalid_json");
    }

    #[test]
    fn repeated_and_misspelt_keys_are_named() {
        let e = from_json::<Enable>(br#"{"model_type": "tlob", "enabled": true, "enabled": false}"#).unwrap_err();
        assert_eq!((e.code, e.field.as_deref()), ("duplicate_field", Some("enabled")));
        let e = from_json::<Enable>(br#"{"model_type": "tlob", "Enabled": true}"#).unwrap_err();
        assert_eq!((e.code, e.field.as_deref()), ("unknown_field", Some("Enabled")));
        let e = from_json_object(br#"{"a": {"b": 1, "b": 2}}"#).unwrap_err();
        assert_eq!((e.code, e.field.as_deref()), ("duplicate_field", Some("a.b")));
        let e = from_json_object(br#"[1]"#).unwrap_err();
        assert_eq!((e.code, e.field.as_deref()), ("invalid_type", Some("body")));
        let m = from_json_object(br#"{"a": [1, 2.5, "x", null, true, {"c": -1}]}"#).unwrap();
        assert_eq!(serde_json::Value::Object(m), serde_json::json!({"a": [1, 2.5, "x", null, true, {"c": -1}]}));
        assert_eq!(edit_distance("model_typ", "model_type"), 1);
        assert_eq!(edit_distance("epochs", "sequence_length"), usize::MAX);
    }

    #[test]
    fn binary_bodies_split_by_layout() {
        let layout = InputLayout { features: Some([2, 3]), lob: None, aux: Some(2), ..InputLayout::default() };
        let floats: Vec<f32> = (0..8).map(|i| i as f32).collect();
        let bytes: Vec<u8> = floats.iter().flat_map(|f| f.to_le_bytes()).collect();
        let inputs = decode_binary(&bytes, &layout).unwrap();
        assert_eq!(inputs.features.unwrap(), vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(inputs.lob, None);
        assert_eq!(inputs.aux.unwrap(), vec![6.0, 7.0]);
        assert_eq!(decode_binary(&bytes[..28], &layout).unwrap_err().field.as_deref(), Some("body"));
    }
}
