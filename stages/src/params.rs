//! Typed params from the JSON value the runner hands over, with errors that carry the
//! path of the offending key so that the runner can point at its line and column.

use std::path::PathBuf;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Params after checking: the canonical form that goes into the stage key, and the files
/// or folders on disk the stage will read (relative to the pipeline file's folder).
#[derive(Debug, Clone)]
pub struct Checked {
    pub canonical: serde_json::Value,
    /// Absolute, or relative to the current directory.
    pub files: Vec<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamsError {
    /// A key the kind does not have. `path` ends with the key itself.
    #[error("unknown key `{}`", path.last().map(String::as_str).unwrap_or(""))]
    UnknownKey {
        path: Vec<String>,
        expected: Vec<String>,
    },
    /// A value of the wrong type or out of range; `path` leads to the value.
    #[error("{message}")]
    Invalid { path: Vec<String>, message: String },
}

impl ParamsError {
    pub fn path(&self) -> &[String] {
        match self {
            ParamsError::UnknownKey { path, .. } | ParamsError::Invalid { path, .. } => path,
        }
    }

    pub fn invalid(path: &[&str], message: impl Into<String>) -> Self {
        ParamsError::Invalid {
            path: path.iter().map(|s| s.to_string()).collect(),
            message: message.into(),
        }
    }
}

/// Deserialize `P` from `value`. Unknown keys are errors (reported with their full path,
/// the first one found); type errors carry the path of the bad value.
///
/// Params structs must *not* use serde's `deny_unknown_fields` (its error loses the path
/// of a nested key); unknown keys are collected here with `serde_ignored` instead. Use
/// `#[schemars(deny_unknown_fields)]` so that the JSON Schema still says so.
pub fn from_value<P: DeserializeOwned + Serialize>(
    value: serde_json::Value,
) -> Result<(P, serde_json::Value), ParamsError> {
    let mut unknown: Vec<Vec<String>> = Vec::new();
    let parsed: Result<P, _> = {
        let mut record = |path: serde_ignored::Path| unknown.push(split_path(&path.to_string()));
        let tracked = serde_ignored::Deserializer::new(&value, &mut record);
        serde_path_to_error::deserialize(tracked)
    };
    if let Some(path) = unknown.into_iter().next() {
        return Err(ParamsError::UnknownKey {
            path,
            expected: Vec::new(),
        });
    }
    let parsed = parsed.map_err(|e| {
        let path = split_path(&e.path().to_string());
        ParamsError::Invalid {
            path,
            message: clean_serde_message(&e.inner().to_string()),
        }
    })?;
    let canonical = serde_json::to_value(&parsed).map_err(|e| ParamsError::Invalid {
        path: Vec::new(),
        message: e.to_string(),
    })?;
    Ok((parsed, canonical))
}

fn split_path(p: &str) -> Vec<String> {
    if p == "." || p.is_empty() {
        return Vec::new();
    }
    // serde_path_to_error writes `a.b[3].c`; serde_ignored writes `a.b.3.c`.
    let mut out = Vec::new();
    for part in p.split('.') {
        let mut rest = part;
        while let Some(open) = rest.find('[') {
            if open > 0 {
                out.push(rest[..open].to_string());
            }
            let close = rest[open..]
                .find(']')
                .map(|c| c + open)
                .unwrap_or(rest.len());
            out.push(rest[open + 1..close.min(rest.len())].to_string());
            rest = if close < rest.len() {
                &rest[close + 1..]
            } else {
                ""
            };
        }
        if !rest.is_empty() {
            out.push(rest.to_string());
        }
    }
    out
}

/// serde's messages mention Rust types; say what the user wrote instead.
fn clean_serde_message(m: &str) -> String {
    m.replace("u32", "a whole number")
        .replace("u64", "a whole number")
        .replace("usize", "a whole number")
        .replace("f32", "a number")
        .replace("f64", "a number")
        .replace("a sequence", "a list")
        .replace("a map", "a mapping")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, serde::Serialize, Debug)]
    struct Inner {
        a: u32,
    }
    #[derive(serde::Deserialize, serde::Serialize, Debug)]
    struct Outer {
        inner: Inner,
        #[serde(default)]
        list: Vec<Inner>,
    }

    #[test]
    fn nested_unknown_key_has_full_path() {
        let v = serde_json::json!({"inner": {"a": 1, "zz": 2}});
        let e = from_value::<Outer>(v).unwrap_err();
        assert_eq!(e.path(), &["inner".to_string(), "zz".to_string()]);
    }

    #[test]
    fn type_error_has_path_into_lists() {
        let v = serde_json::json!({"inner": {"a": 1}, "list": [{"a": 1}, {"a": "x"}]});
        let e = from_value::<Outer>(v).unwrap_err();
        assert_eq!(e.path(), &["list", "1", "a"]);
        assert!(e.to_string().contains("invalid type"), "{e}");
    }
}
