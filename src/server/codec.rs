//! Request bodies in: JSON (with the path of the field at fault in every
//! error) and the binary predict body (little-endian f32: features, then lob,
//! then aux, lengths fixed by the loaded configs).

use serde::de::DeserializeOwned;
use serde_json::error::Category;

use super::error::ApiError;
use crate::engine::{EngineInputs, InputLayout};

/// Parses a whole body as `T`. Errors name the field (`features[3][7]`,
/// `model_type`) and tell malformed JSON, a wrong type, a missing or unknown
/// field and an unknown model or strategy apart.
pub fn from_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(json_error)?;
    de.end().map_err(|e| ApiError::bad("invalid_json", "body", format!("malformed JSON: {e}")))?;
    Ok(value)
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
    fn binary_bodies_split_by_layout() {
        let layout = InputLayout { features: Some([2, 3]), lob: None, aux: Some(2) };
        let floats: Vec<f32> = (0..8).map(|i| i as f32).collect();
        let bytes: Vec<u8> = floats.iter().flat_map(|f| f.to_le_bytes()).collect();
        let inputs = decode_binary(&bytes, &layout).unwrap();
        assert_eq!(inputs.features.unwrap(), vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(inputs.lob, None);
        assert_eq!(inputs.aux.unwrap(), vec![6.0, 7.0]);
        assert_eq!(decode_binary(&bytes[..28], &layout).unwrap_err().field.as_deref(), Some("body"));
    }
}
