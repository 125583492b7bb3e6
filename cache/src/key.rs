use crate::Hash;

/// Builds a stage key from labelled parts, so that two different sets of parts can
/// never produce the same byte stream (every part is length-prefixed).
pub struct KeyBuilder {
    hasher: blake3::Hasher,
}

impl KeyBuilder {
    pub fn new(domain: &str) -> Self {
        let mut b = KeyBuilder {
            hasher: blake3::Hasher::new(),
        };
        b.str("domain", domain);
        b
    }

    pub fn str(&mut self, label: &str, value: &str) -> &mut Self {
        self.bytes(label, value.as_bytes())
    }

    pub fn bytes(&mut self, label: &str, value: &[u8]) -> &mut Self {
        for part in [label.as_bytes(), value] {
            self.hasher.update(&(part.len() as u64).to_le_bytes());
            self.hasher.update(part);
        }
        self
    }

    pub fn hash(&mut self, label: &str, h: &Hash) -> &mut Self {
        self.bytes(label, &h.0)
    }

    pub fn json(&mut self, label: &str, v: &serde_json::Value) -> &mut Self {
        let s = canonical_json(v);
        self.str(label, &s)
    }

    pub fn finish(&self) -> Hash {
        self.hasher.finalize().into()
    }
}

/// JSON with object keys sorted and no whitespace, whatever map type serde_json was
/// built with: the same params always give the same bytes.
pub fn canonical_json(v: &serde_json::Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String((*k).clone()).to_string());
                out.push(':');
                write_canonical(&map[*k], out);
            }
            out.push('}');
        }
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
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_at_every_depth() {
        let a = serde_json::json!({"b": 1, "a": {"y": [1, {"d": 2, "c": 3}], "x": null}});
        assert_eq!(
            canonical_json(&a),
            r#"{"a":{"x":null,"y":[1,{"c":3,"d":2}]},"b":1}"#
        );
    }

    #[test]
    fn parts_are_unambiguous() {
        let k1 = KeyBuilder::new("t").str("a", "bc").finish();
        let k2 = KeyBuilder::new("t").str("ab", "c").finish();
        assert_ne!(k1, k2);
    }
}
