//! Cache keys: blake3 over the node kind, its version, canonical params JSON, input keys and an
//! optional model fingerprint. Nothing else (no clocks, paths or thread counts) goes in.

use serde_json::Value;

/// Canonical JSON: object keys sorted, integral floats written as integers, -0 as 0, other floats
/// in their shortest round-trip form. Equal values give equal text whatever their construction.
pub fn canonical_json(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                out.push_str(&i.to_string());
            } else if let Some(u) = n.as_u64() {
                out.push_str(&u.to_string());
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                if f.fract() == 0.0 && f.abs() < 9.0e15 {
                    out.push_str(&(f as i64).to_string());
                } else {
                    out.push_str(
                        &serde_json::Number::from_f64(f)
                            .map_or("null".to_string(), |n| n.to_string()),
                    );
                }
            }
        }
        Value::String(s) => out.push_str(&serde_json::to_string(s).unwrap_or_default()),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(k).unwrap_or_default());
                out.push(':');
                write_canonical(&map[k], out);
            }
            out.push('}');
        }
    }
}

/// The node's cache key (64 hex chars).
pub fn cache_key(
    kind: &str,
    version: u32,
    params: &Value,
    inputs: &[(String, String)],
    fingerprint: Option<&str>,
) -> String {
    let mut h = blake3::Hasher::new();
    // Length-prefixed fields so that no two different tuples hash the same bytes.
    let mut field = |tag: &str, bytes: &[u8]| {
        h.update(tag.as_bytes());
        h.update(&(bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    field("kind", kind.as_bytes());
    field("version", &version.to_le_bytes());
    field("params", canonical_json(params).as_bytes());
    for (name, key) in inputs {
        field("input-name", name.as_bytes());
        field("input-key", key.as_bytes());
    }
    if let Some(fp) = fingerprint {
        field("fingerprint", fp.as_bytes());
    }
    h.finalize().to_hex().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(params: Value) -> String {
        cache_key("k", 1, &params, &[("a".into(), "abc".into())], None)
    }

    #[test]
    fn stable_under_key_order_and_number_spelling() {
        let a: Value = serde_json::from_str(r#"{"x": 1, "y": {"b": 2.0, "a": [1, 2.5]}}"#).unwrap();
        let b: Value =
            serde_json::from_str(r#"{"y": {"a": [1.0, 2.5], "b": 2}, "x": 1.0}"#).unwrap();
        assert_eq!(canonical_json(&a), canonical_json(&b));
        assert_eq!(key(a), key(b));
        assert_eq!(canonical_json(&json!(-0.0)), "0");
    }

    #[test]
    fn changes_with_each_component() {
        let base = key(json!({"x": 1}));
        assert_eq!(base, key(json!({"x": 1})));
        assert_ne!(base, key(json!({"x": 2})));
        assert_ne!(base, key(json!({"x": 1, "y": 0})));
        assert_ne!(
            base,
            cache_key(
                "k",
                2,
                &json!({"x": 1}),
                &[("a".into(), "abc".into())],
                None
            )
        );
        assert_ne!(
            base,
            cache_key(
                "other",
                1,
                &json!({"x": 1}),
                &[("a".into(), "abc".into())],
                None
            )
        );
        assert_ne!(
            base,
            cache_key(
                "k",
                1,
                &json!({"x": 1}),
                &[("a".into(), "abd".into())],
                None
            )
        );
        assert_ne!(
            base,
            cache_key(
                "k",
                1,
                &json!({"x": 1}),
                &[("b".into(), "abc".into())],
                None
            )
        );
        assert_ne!(base, cache_key("k", 1, &json!({"x": 1}), &[], None));
        assert_ne!(
            base,
            cache_key(
                "k",
                1,
                &json!({"x": 1}),
                &[("a".into(), "abc".into())],
                Some("fp")
            )
        );
        assert_eq!(base.len(), 64);
    }
}
