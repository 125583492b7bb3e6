//! A YAML tree that remembers where every key and value came from, so that any error
//! found later (a dangling reference, a cycle, a bad param) can point at line:column.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, PartialOrd, Ord)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

impl std::fmt::Display for Pos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub pos: Pos,
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<Entry>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub key: String,
    pub key_pos: Pos,
    pub value: Node,
}

#[derive(Debug, Clone, PartialEq)]
pub struct YamlError {
    pub pos: Pos,
    pub message: String,
}

impl Node {
    pub fn type_name(&self) -> &'static str {
        match &self.value {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    pub fn as_map(&self) -> Option<&[Entry]> {
        match &self.value {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.as_map()?.iter().find(|e| e.key == key)
    }

    /// The node at `path` (mapping keys and list indices), for error positions.
    pub fn at_path(&self, path: &[String]) -> Option<&Node> {
        let mut node = self;
        for part in path {
            node = match &node.value {
                Value::Map(m) => &m.iter().find(|e| &e.key == part)?.value,
                Value::Seq(items) => items.get(part.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(node)
    }

    /// The position of the key at `path` (its last element), or of the value for list
    /// items; the closest known position when the path runs out.
    pub fn key_pos(&self, path: &[String]) -> Pos {
        let mut node = self;
        let mut pos = self.pos;
        for part in path {
            match &node.value {
                Value::Map(m) => match m.iter().find(|e| &e.key == part) {
                    Some(e) => {
                        pos = e.key_pos;
                        node = &e.value;
                    }
                    None => return pos,
                },
                Value::Seq(items) => match part.parse::<usize>().ok().and_then(|i| items.get(i)) {
                    Some(n) => {
                        pos = n.pos;
                        node = n;
                    }
                    None => return pos,
                },
                _ => return pos,
            }
        }
        pos
    }

    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(J::Number)
                .unwrap_or(J::Null),
            Value::Str(s) => J::String(s.clone()),
            Value::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(m) => J::Object(
                m.iter()
                    .map(|e| (e.key.clone(), e.value.to_json()))
                    .collect(),
            ),
        }
    }

    /// A short rendering for messages and instance names: `0.01`, `adam`, `[1, 2]`.
    pub fn render(&self) -> String {
        match &self.value {
            Value::Null => "null".into(),
            Value::Bool(b) => b.to_string(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) => render_float(*f),
            Value::Str(s) => s.clone(),
            Value::Seq(items) => format!(
                "[{}]",
                items
                    .iter()
                    .map(Node::render)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Value::Map(m) => format!(
                "{{{}}}",
                m.iter()
                    .map(|e| format!("{}: {}", e.key, e.value.render()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

fn render_float(f: f64) -> String {
    let s = f.to_string();
    if s.contains('.') || s.contains('e') || s.contains("inf") || s.contains("NaN") {
        s
    } else {
        format!("{s}.0")
    }
}

/// Parse one YAML document.
pub fn parse(text: &str) -> Result<Node, YamlError> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    parser.load(&mut builder, false).map_err(|e| YamlError {
        pos: pos(e.marker()),
        message: e.info().to_string(),
    })?;
    if let Some(err) = builder.error {
        return Err(err);
    }
    Ok(builder.root.unwrap_or(Node {
        pos: Pos { line: 1, col: 1 },
        value: Value::Null,
    }))
}

fn pos(m: &Marker) -> Pos {
    Pos {
        line: m.line(),
        col: m.col() + 1,
    }
}

enum Frame {
    Seq(Pos, usize, Vec<Node>),
    Map(Pos, usize, Vec<Entry>, Option<(String, Pos)>),
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    root: Option<Node>,
    anchors: HashMap<usize, Node>,
    error: Option<YamlError>,
}

impl Builder {
    fn fail(&mut self, pos: Pos, message: String) {
        if self.error.is_none() {
            self.error = Some(YamlError { pos, message });
        }
    }

    fn push_value(&mut self, node: Node) {
        match self.stack.last_mut() {
            None => {
                if self.root.is_none() {
                    self.root = Some(node);
                }
            }
            Some(Frame::Seq(_, _, items)) => items.push(node),
            Some(Frame::Map(_, _, entries, pending)) => match pending.take() {
                None => {
                    // A key: only plain scalars make sense as keys in a pipeline file.
                    let key = match &node.value {
                        Value::Str(s) => Some(s.clone()),
                        Value::Int(i) => Some(i.to_string()),
                        Value::Bool(b) => Some(b.to_string()),
                        Value::Float(f) => Some(render_float(*f)),
                        Value::Null => Some("null".into()),
                        _ => None,
                    };
                    match key {
                        Some(k) => {
                            if let Some(prev) = entries.iter().find(|e| e.key == k) {
                                let msg = format!(
                                    "duplicate key `{k}` (first defined at line {})",
                                    prev.key_pos.line
                                );
                                let p = node.pos;
                                *pending = Some((k, node.pos));
                                self.fail(p, msg);
                            } else {
                                *pending = Some((k, node.pos));
                            }
                        }
                        None => {
                            let p = node.pos;
                            *pending = Some((String::new(), p));
                            self.fail(p, "a mapping key must be a plain value".into());
                        }
                    }
                }
                Some((key, key_pos)) => entries.push(Entry {
                    key,
                    key_pos,
                    value: node,
                }),
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let p = pos(&mark);
        match ev {
            Event::Scalar(text, style, anchor, tag) => {
                let value = if style == TScalarStyle::Plain && tag.is_none() {
                    resolve_plain(&text)
                } else {
                    Value::Str(text)
                };
                let node = Node { pos: p, value };
                if anchor > 0 {
                    self.anchors.insert(anchor, node.clone());
                }
                self.push_value(node);
            }
            Event::SequenceStart(anchor, _) => self.stack.push(Frame::Seq(p, anchor, Vec::new())),
            Event::MappingStart(anchor, _) => {
                self.stack.push(Frame::Map(p, anchor, Vec::new(), None))
            }
            Event::SequenceEnd => {
                if let Some(Frame::Seq(pos, anchor, items)) = self.stack.pop() {
                    let node = Node {
                        pos,
                        value: Value::Seq(items),
                    };
                    if anchor > 0 {
                        self.anchors.insert(anchor, node.clone());
                    }
                    self.push_value(node);
                }
            }
            Event::MappingEnd => {
                if let Some(Frame::Map(pos, anchor, entries, _)) = self.stack.pop() {
                    let node = Node {
                        pos,
                        value: Value::Map(entries),
                    };
                    if anchor > 0 {
                        self.anchors.insert(anchor, node.clone());
                    }
                    self.push_value(node);
                }
            }
            Event::Alias(id) => match self.anchors.get(&id).cloned() {
                Some(mut node) => {
                    node.pos = p;
                    self.push_value(node);
                }
                None => self.fail(p, "unknown alias".into()),
            },
            Event::DocumentStart => {
                if self.root.is_some() {
                    self.fail(p, "a pipeline file holds one YAML document".into());
                }
            }
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {}
        }
    }
}

/// YAML 1.2 core schema for plain scalars.
fn resolve_plain(s: &str) -> Value {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Value::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return Value::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Value::Float(f64::NAN),
        _ => {}
    }
    let body = s.strip_prefix(['+', '-']).unwrap_or(s);
    if !body.is_empty()
        && body.bytes().all(|b| b.is_ascii_digit())
        && let Ok(i) = s.parse::<i64>()
    {
        return Value::Int(i);
    }
    if let Some(hex) = s.strip_prefix("0x")
        && let Ok(i) = i64::from_str_radix(hex, 16)
    {
        return Value::Int(i);
    }
    let looks_numeric = body
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
        && body.bytes().any(|b| b.is_ascii_digit());
    if looks_numeric && let Ok(f) = s.parse::<f64>() {
        return Value::Float(f);
    }
    Value::Str(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_and_types() {
        let n = parse("a: 1\nb:\n  c: [x, 2.5, true]\n  d: 'q'\n").unwrap();
        assert_eq!(n.get("a").unwrap().key_pos, Pos { line: 1, col: 1 });
        let b = &n.get("b").unwrap().value;
        assert_eq!(b.get("c").unwrap().key_pos, Pos { line: 3, col: 3 });
        let c = &b.get("c").unwrap().value;
        assert_eq!(
            c.to_json(),
            serde_json::json!(["x", 2.5, true]),
            "plain scalars are typed"
        );
        assert_eq!(b.get("d").unwrap().value.value, Value::Str("q".into()));
        assert_eq!(
            n.key_pos(&["b".into(), "c".into(), "1".into()]),
            Pos { line: 3, col: 10 }
        );
    }

    #[test]
    fn duplicate_keys_are_errors() {
        let e = parse("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(e.pos, Pos { line: 3, col: 1 });
        assert_eq!(e.message, "duplicate key `a` (first defined at line 1)");
    }

    #[test]
    fn syntax_errors_have_positions() {
        let e = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(e.pos.line >= 2, "{e:?}");
    }

    #[test]
    fn aliases_copy_the_anchor() {
        let n = parse("x: &v {a: 1}\ny: *v\n").unwrap();
        assert_eq!(
            n.get("y").unwrap().value.to_json(),
            serde_json::json!({"a": 1})
        );
    }
}
