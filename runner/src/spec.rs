//! Pipeline files: YAML → substituted → matrix-expanded → resolved, checked DAG.
//!
//! ```yaml
//! name: sweep
//! seed: 42
//! params: { data: { synthetic: { count: 64 } } }
//! stages:
//!   shapes: { kind: dataset, from: "${params.data}" }
//!   small:
//!     kind: downsample
//!     input: shapes
//!     size: 16
//!     matrix: { filter: [box, bicubic] }   # small[filter=box], small[filter=bicubic]
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use gantry_stages::{ArtifactType, StageKind};
use petgraph::graph::{DiGraph, NodeIndex};

use crate::error::{SpecError, suggestion};
use crate::yaml::{self, Entry, Node, Pos, Value};

/// Keys of a stage that belong to the runner; everything else is the kind's params.
pub const RUNNER_KEYS: &[&str] = &["kind", "matrix", "resources", "description"];
const TOP_KEYS: &[&str] = &["name", "description", "backend", "seed", "params", "stages"];
pub const BACKENDS: &[&str] = &["auto", "cpu", "cuda", "wgpu"];

/// A checked pipeline, ready to plan.
pub struct Pipeline {
    pub name: String,
    /// The file as the user named it, for messages.
    pub file: String,
    /// Relative paths in params are relative to this folder.
    pub base_dir: PathBuf,
    pub backend: String,
    pub seed: u64,
    /// Stage instances in a topological order (upstream first, file order among equals).
    pub instances: Vec<Instance>,
    pub graph: DiGraph<usize, ()>,
}

pub struct Instance {
    /// `small` or `small[filter=box]`.
    pub name: String,
    /// The stage as written in the file.
    pub stage: String,
    pub matrix: Vec<(String, serde_json::Value)>,
    pub kind: Arc<dyn StageKind>,
    pub params: serde_json::Value,
    /// Upstream instances (indices into `Pipeline::instances`) by slot.
    pub inputs: BTreeMap<String, Vec<usize>>,
    /// Files and folders on disk the stage reads, resolved against the pipeline folder.
    pub files: Vec<PathBuf>,
    pub resources: Resources,
    pub pos: Pos,
    pub description: Option<String>,
}

/// What a stage needs while it runs; the executor never oversubscribes the machine.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Resources {
    /// Cores. Without `cpu:` in the file, a stage gets a fair share of the cores free when
    /// it starts (`cpu_auto`), at least one.
    pub cpu: f64,
    pub cpu_auto: bool,
    /// GPUs; a fraction (`0.5`) explicitly allows sharing one GPU with other stages.
    pub gpu: f64,
    pub mem_bytes: u64,
}

impl Default for Resources {
    fn default() -> Self {
        Resources {
            cpu: 1.0,
            cpu_auto: true,
            gpu: 0.0,
            mem_bytes: 0,
        }
    }
}

impl Pipeline {
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.instances.iter().position(|i| i.name == name)
    }

    /// Instances selected by a stage name or instance name (`--only`, `show`).
    pub fn select(&self, sel: &str) -> Vec<usize> {
        let (stage, filter) = parse_selector(sel);
        self.instances
            .iter()
            .enumerate()
            .filter(|(_, i)| {
                (i.name == sel)
                    || (i.stage == stage
                        && filter.iter().all(|(k, v)| {
                            i.matrix
                                .iter()
                                .any(|(mk, mv)| mk == k && render_json(mv) == *v)
                        }))
            })
            .map(|(n, _)| n)
            .collect()
    }

    /// `idx` and everything upstream of it.
    pub fn with_ancestors(&self, roots: &[usize]) -> Vec<bool> {
        let mut keep = vec![false; self.instances.len()];
        let mut stack: Vec<usize> = roots.to_vec();
        while let Some(i) = stack.pop() {
            if !keep[i] {
                keep[i] = true;
                stack.extend(self.instances[i].inputs.values().flatten().copied());
            }
        }
        keep
    }
}

/// Load and check a pipeline file. `overrides` are `-S name=value` pairs (value in YAML).
pub fn load(path: &Path, overrides: &[(String, String)]) -> Result<Pipeline, SpecError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| SpecError::new(&file, None, None, format!("cannot read: {e}")))?;
    let base_dir = path
        .parent()
        .map(Path::to_path_buf)
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."));
    let base_dir = std::path::absolute(&base_dir).unwrap_or(base_dir);
    let default_name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "pipeline".into());
    parse_str(&text, &file, base_dir, &default_name, overrides)
}

pub fn parse_str(
    text: &str,
    file: &str,
    base_dir: PathBuf,
    default_name: &str,
    overrides: &[(String, String)],
) -> Result<Pipeline, SpecError> {
    let err =
        |pos: Pos, stage: Option<&str>, msg: String| SpecError::new(file, Some(pos), stage, msg);
    let root = yaml::parse(text).map_err(|e| err(e.pos, None, format!("YAML: {}", e.message)))?;
    let Some(top) = root.as_map() else {
        return Err(err(
            root.pos,
            None,
            format!(
                "a pipeline file is a mapping with `stages:`, not {}",
                root.type_name()
            ),
        ));
    };
    for e in top {
        if !TOP_KEYS.contains(&e.key.as_str()) {
            return Err(err(
                e.key_pos,
                None,
                format!(
                    "unknown key `{}`{}; a pipeline has {}",
                    e.key,
                    suggestion(&e.key, TOP_KEYS.iter().copied()),
                    list_keys(TOP_KEYS)
                ),
            ));
        }
    }
    let name = match root.get("name") {
        None => default_name.to_string(),
        Some(e) => match &e.value.value {
            Value::Str(s) if !s.is_empty() => s.clone(),
            _ => return Err(expected(file, &e.value, None, "name", "a non-empty string")),
        },
    };
    let backend = match root.get("backend") {
        None => "auto".to_string(),
        Some(e) => match e.value.as_str() {
            Some(s) if BACKENDS.contains(&s) => s.to_string(),
            _ => {
                return Err(err(
                    e.value.pos,
                    None,
                    format!(
                        "key `backend`: `{}` is not a backend; use one of {}",
                        e.value.render(),
                        list_keys(BACKENDS)
                    ),
                ));
            }
        },
    };
    let seed = match root.get("seed") {
        None => 0,
        Some(e) => match e.value.value {
            Value::Int(i) if i >= 0 => i as u64,
            _ => return Err(expected(file, &e.value, None, "seed", "a whole number ≥ 0")),
        },
    };

    let mut params: Vec<Entry> = match root.get("params") {
        None => Vec::new(),
        Some(e) => match &e.value.value {
            Value::Map(m) => m.clone(),
            Value::Null => Vec::new(),
            _ => return Err(expected(file, &e.value, None, "params", "a mapping")),
        },
    };
    for (k, v) in overrides {
        let node = yaml::parse(v).map_err(|e| {
            SpecError::new(
                file,
                None,
                None,
                format!("-S {k}={v}: not a YAML value: {}", e.message),
            )
        })?;
        match params.iter_mut().find(|e| &e.key == k) {
            Some(e) => {
                let pos = e.value.pos;
                e.value = node;
                e.value.pos = pos;
            }
            None => {
                return Err(SpecError::new(
                    file,
                    None,
                    None,
                    format!(
                        "-S {k}=…: the pipeline has no param `{k}`{}",
                        suggestion(k, params.iter().map(|e| e.key.as_str()))
                    ),
                ));
            }
        }
    }

    let Some(stages_entry) = root.get("stages") else {
        return Err(err(
            Pos { line: 1, col: 1 },
            None,
            "missing key `stages`".into(),
        ));
    };
    let Some(stage_entries) = stages_entry.value.as_map() else {
        return Err(expected(
            file,
            &stages_entry.value,
            None,
            "stages",
            "a mapping of stage names to stages",
        ));
    };
    if stage_entries.is_empty() {
        return Err(err(stages_entry.key_pos, None, "`stages` is empty".into()));
    }

    // Expand every stage into its instances.
    let mut raw: Vec<RawInstance> = Vec::new();
    for se in stage_entries {
        check_stage_name(file, se)?;
        let mut node = se.value.clone();
        substitute(file, &se.key, &mut node, &params)?;
        raw.extend(expand(file, se, node)?);
    }

    // Resolve references between instances.
    let by_stage: HashMap<&str, Vec<usize>> = {
        let mut m: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, r) in raw.iter().enumerate() {
            m.entry(r.stage.as_str()).or_default().push(i);
        }
        m
    };
    let stage_names: Vec<&str> = stage_entries.iter().map(|e| e.key.as_str()).collect();
    let mut instances: Vec<Instance> = Vec::with_capacity(raw.len());
    for r in &raw {
        instances.push(resolve(file, r, &raw, &by_stage, &stage_names, &base_dir)?);
    }

    // The graph, and a topological order that keeps file order among independent stages.
    let mut graph = DiGraph::<usize, ()>::new();
    let nodes: Vec<NodeIndex> = (0..instances.len()).map(|i| graph.add_node(i)).collect();
    for (i, inst) in instances.iter().enumerate() {
        for &up in inst.inputs.values().flatten() {
            graph.add_edge(nodes[up], nodes[i], ());
        }
    }
    let order = topo_order(&instances).map_err(|cycle| {
        let first = &raw[cycle[0]];
        let names: Vec<&str> = cycle
            .iter()
            .chain(std::iter::once(&cycle[0]))
            .map(|&i| raw[i].name.as_str())
            .collect();
        // Point at the reference that closes the loop: the first stage reading the last.
        let last = cycle[cycle.len() - 1];
        let slot_pos = instances[cycle[0]]
            .inputs
            .iter()
            .find(|(_, ups)| ups.contains(&last))
            .and_then(|(k, _)| {
                let e = first.node.get(k)?;
                Some(match &e.value.value {
                    Value::Seq(items) => items
                        .iter()
                        .find(|n| {
                            n.as_str()
                                .is_some_and(|s| select(s, &raw, &by_stage).contains(&last))
                        })
                        .map(|n| n.pos)
                        .unwrap_or(e.value.pos),
                    _ => e.value.pos,
                })
            })
            .unwrap_or(first.pos);
        err(
            slot_pos,
            None,
            format!("cycle between stages: {}", names.join(" -> ")),
        )
    })?;
    // Renumber instances into topological order.
    let mut new_index = vec![0; instances.len()];
    for (new, &old) in order.iter().enumerate() {
        new_index[old] = new;
    }
    let mut slots: Vec<Option<Instance>> = instances.into_iter().map(Some).collect();
    let mut ordered = Vec::with_capacity(slots.len());
    for &old in &order {
        if let Some(mut inst) = slots[old].take() {
            for ups in inst.inputs.values_mut() {
                for u in ups.iter_mut() {
                    *u = new_index[*u];
                }
            }
            ordered.push(inst);
        }
    }
    let mut graph = DiGraph::<usize, ()>::new();
    let nodes: Vec<NodeIndex> = (0..ordered.len()).map(|i| graph.add_node(i)).collect();
    for (i, inst) in ordered.iter().enumerate() {
        for &up in inst.inputs.values().flatten() {
            graph.add_edge(nodes[up], nodes[i], ());
        }
    }

    Ok(Pipeline {
        name,
        file: file.to_string(),
        base_dir,
        backend,
        seed,
        instances: ordered,
        graph,
    })
}

fn list_keys(keys: &[&str]) -> String {
    keys.iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn expected(file: &str, node: &Node, stage: Option<&str>, key: &str, what: &str) -> SpecError {
    SpecError::new(
        file,
        Some(node.pos),
        stage,
        format!("key `{key}`: expected {what}, found {}", describe(node)),
    )
}

fn describe(node: &Node) -> String {
    match &node.value {
        Value::Null => "nothing".into(),
        Value::Seq(items) if items.is_empty() => "an empty list".into(),
        Value::Str(s) => format!("the string \"{s}\""),
        Value::Seq(_) | Value::Map(_) => node.type_name().into(),
        _ => format!("{} `{}`", node.type_name(), node.render()),
    }
}

fn check_stage_name(file: &str, se: &Entry) -> Result<(), SpecError> {
    let ok = !se.key.is_empty()
        && se
            .key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !ok {
        return Err(SpecError::new(
            file,
            Some(se.key_pos),
            None,
            format!(
                "`{}` is not a valid stage name: use letters, digits, `_` and `-`",
                se.key
            ),
        ));
    }
    Ok(())
}

/// Replace `${params.x}` (and `${params.x.y}` inside mapping params). A value that is the
/// reference alone takes the param's type (a number stays a number, a mapping a mapping);
/// a reference inside a longer string is spliced in as text.
fn substitute(file: &str, stage: &str, node: &mut Node, params: &[Entry]) -> Result<(), SpecError> {
    match &mut node.value {
        Value::Seq(items) => {
            for item in items {
                substitute(file, stage, item, params)?;
            }
        }
        Value::Map(entries) => {
            for e in entries {
                substitute(file, stage, &mut e.value, params)?;
            }
        }
        Value::Str(s) if s.contains("${") => {
            let s = s.clone();
            let pos = node.pos;
            let lookup = |reference: &str| -> Result<Node, SpecError> {
                let path: Vec<&str> = reference.trim().split('.').collect();
                if path.first() != Some(&"params") || path.len() < 2 {
                    return Err(SpecError::new(
                        file,
                        Some(pos),
                        Some(stage),
                        format!("`${{{reference}}}`: only `${{params.NAME}}` can be substituted"),
                    ));
                }
                let mut cur: Option<&Node> =
                    params.iter().find(|e| e.key == path[1]).map(|e| &e.value);
                if cur.is_none() {
                    return Err(SpecError::new(
                        file,
                        Some(pos),
                        Some(stage),
                        format!(
                            "`${{{reference}}}`: no param `{}`{}",
                            path[1],
                            suggestion(path[1], params.iter().map(|e| e.key.as_str()))
                        ),
                    ));
                }
                for part in &path[2..] {
                    cur = cur.and_then(|n| n.get(part)).map(|e| &e.value);
                }
                cur.cloned().ok_or_else(|| {
                    SpecError::new(
                        file,
                        Some(pos),
                        Some(stage),
                        format!("`${{{reference}}}`: no such param"),
                    )
                })
            };
            let trimmed = s.trim();
            if trimmed.starts_with("${")
                && trimmed.ends_with('}')
                && trimmed.matches("${").count() == 1
            {
                let mut v = lookup(&trimmed[2..trimmed.len() - 1])?;
                v.pos = pos;
                *node = v;
                return Ok(());
            }
            let mut out = String::new();
            let mut rest = s.as_str();
            while let Some(start) = rest.find("${") {
                out.push_str(&rest[..start]);
                let Some(end) = rest[start..].find('}') else {
                    return Err(SpecError::new(
                        file,
                        Some(pos),
                        Some(stage),
                        format!("unclosed `${{` in \"{s}\""),
                    ));
                };
                let v = lookup(&rest[start + 2..start + end])?;
                match v.value {
                    Value::Map(_) | Value::Seq(_) => {
                        return Err(SpecError::new(
                            file,
                            Some(pos),
                            Some(stage),
                            format!(
                                "`{}` is {} and cannot be spliced into the string \"{s}\"",
                                &rest[start..start + end + 1],
                                v.type_name()
                            ),
                        ));
                    }
                    _ => out.push_str(&v.render()),
                }
                rest = &rest[start + end + 1..];
            }
            out.push_str(rest);
            node.value = Value::Str(out);
        }
        _ => {}
    }
    Ok(())
}

struct RawInstance {
    name: String,
    stage: String,
    matrix: Vec<(String, Node)>,
    /// The stage mapping, with matrix values written in as params.
    node: Node,
    pos: Pos,
    kind: Arc<dyn StageKind>,
}

fn expand(file: &str, se: &Entry, node: Node) -> Result<Vec<RawInstance>, SpecError> {
    let stage = se.key.as_str();
    let Some(entries) = node.as_map() else {
        return Err(SpecError::new(
            file,
            Some(node.pos),
            Some(stage),
            format!(
                "a stage is a mapping with a `kind`, not {}",
                node.type_name()
            ),
        ));
    };
    let kind = match node.get("kind") {
        None => {
            return Err(SpecError::new(
                file,
                Some(se.key_pos),
                Some(stage),
                format!("missing key `kind`; kinds: {}", kind_names()),
            ));
        }
        Some(e) => match e.value.as_str() {
            Some(k) => gantry_stages::find_kind(k).ok_or_else(|| {
                let names: Vec<&'static str> =
                    gantry_stages::registry().iter().map(|k| k.name()).collect();
                SpecError::new(
                    file,
                    Some(e.value.pos),
                    Some(stage),
                    format!(
                        "unknown kind `{k}`{}; kinds: {}",
                        suggestion(k, names.iter().copied()),
                        kind_names()
                    ),
                )
            })?,
            None => {
                return Err(expected(
                    file,
                    &e.value,
                    Some(stage),
                    "kind",
                    "a stage kind name",
                ));
            }
        },
    };
    let Some(matrix) = node.get("matrix") else {
        return Ok(vec![RawInstance {
            name: stage.to_string(),
            stage: stage.to_string(),
            matrix: Vec::new(),
            node: node.clone(),
            pos: se.key_pos,
            kind,
        }]);
    };
    let Some(axes) = matrix.value.as_map() else {
        return Err(expected(
            file,
            &matrix.value,
            Some(stage),
            "matrix",
            "a mapping of param names to lists of values",
        ));
    };
    if axes.is_empty() {
        return Err(SpecError::new(
            file,
            Some(matrix.key_pos),
            Some(stage),
            "`matrix` is empty",
        ));
    }
    let slot_keys: Vec<&str> = kind.inputs().iter().map(|s| s.key).collect();
    let mut lists: Vec<(&Entry, &Vec<Node>)> = Vec::new();
    for axis in axes {
        if RUNNER_KEYS.contains(&axis.key.as_str()) || slot_keys.contains(&axis.key.as_str()) {
            return Err(SpecError::new(
                file,
                Some(axis.key_pos),
                Some(stage),
                format!("key `matrix.{}`: `{}` cannot be swept", axis.key, axis.key),
            ));
        }
        if let Some(fixed) = entries.iter().find(|e| e.key == axis.key) {
            return Err(SpecError::new(
                file,
                Some(axis.key_pos),
                Some(stage),
                format!(
                    "key `matrix.{}`: `{}` is also set at line {}; set it in one place",
                    axis.key, axis.key, fixed.key_pos.line
                ),
            ));
        }
        match &axis.value.value {
            Value::Seq(items) if !items.is_empty() => lists.push((axis, items)),
            _ => {
                return Err(expected(
                    file,
                    &axis.value,
                    Some(stage),
                    &format!("matrix.{}", axis.key),
                    "a non-empty list of values",
                ));
            }
        }
    }
    // Cartesian product, first axis slowest.
    let mut combos: Vec<Vec<(String, Node)>> = vec![Vec::new()];
    for (axis, items) in &lists {
        let mut next = Vec::new();
        for c in &combos {
            for item in items.iter() {
                let mut c = c.clone();
                c.push((axis.key.clone(), item.clone()));
                next.push(c);
            }
        }
        combos = next;
    }
    let mut seen: HashMap<String, Pos> = HashMap::new();
    let mut out = Vec::new();
    for combo in combos {
        let label = combo
            .iter()
            .map(|(k, v)| format!("{k}={}", v.render()))
            .collect::<Vec<_>>()
            .join(",");
        let name = format!("{stage}[{label}]");
        if let Some(p) = seen.insert(name.clone(), combo[0].1.pos) {
            return Err(SpecError::new(
                file,
                Some(combo[0].1.pos),
                Some(stage),
                format!(
                    "key `matrix`: `{name}` appears twice (also at line {})",
                    p.line
                ),
            ));
        }
        let mut n = node.clone();
        if let Value::Map(es) = &mut n.value {
            es.retain(|e| e.key != "matrix");
            for (k, v) in &combo {
                es.push(Entry {
                    key: k.clone(),
                    key_pos: v.pos,
                    value: v.clone(),
                });
            }
        }
        out.push(RawInstance {
            name,
            stage: stage.to_string(),
            matrix: combo,
            node: n,
            pos: se.key_pos,
            kind: kind.clone(),
        });
    }
    Ok(out)
}

fn kind_names() -> String {
    gantry_stages::registry()
        .iter()
        .map(|k| k.name())
        .collect::<Vec<_>>()
        .join(", ")
}

fn resolve(
    file: &str,
    r: &RawInstance,
    all: &[RawInstance],
    by_stage: &HashMap<&str, Vec<usize>>,
    stage_names: &[&str],
    base_dir: &Path,
) -> Result<Instance, SpecError> {
    let stage = r.stage.as_str();
    let err = |pos: Pos, msg: String| SpecError::new(file, Some(pos), Some(stage), msg);
    let entries = r.node.as_map().unwrap_or(&[]);
    let mut params = serde_json::Map::new();
    let mut inputs: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let slots = r.kind.inputs();
    let mut resources = Resources::default();
    let mut description = None;
    for e in entries {
        match e.key.as_str() {
            "kind" | "matrix" => {}
            "description" => description = e.value.as_str().map(str::to_string),
            "resources" => resources = parse_resources(file, stage, &e.value)?,
            key => {
                if let Some(slot) = slots.iter().find(|s| s.key == key) {
                    let refs: Vec<&Node> = match &e.value.value {
                        Value::Str(_) => vec![&e.value],
                        Value::Seq(items) if slot.many => items.iter().collect(),
                        _ => {
                            let what = if slot.many {
                                "a stage name or a list of stage names"
                            } else {
                                "a stage name"
                            };
                            return Err(expected(file, &e.value, Some(stage), key, what));
                        }
                    };
                    let mut ups = Vec::new();
                    for rn in refs {
                        let Some(sel) = rn.as_str() else {
                            return Err(expected(file, rn, Some(stage), key, "a stage name"));
                        };
                        let found = select(sel, all, by_stage);
                        if found.is_empty() {
                            let (target, _) = parse_selector(sel);
                            let msg = if by_stage.contains_key(target) {
                                let names: Vec<&str> = by_stage[target]
                                    .iter()
                                    .map(|&i| all[i].name.as_str())
                                    .collect();
                                format!(
                                    "key `{key}`: no instance of `{target}` matches `{sel}`; instances: {}",
                                    names.join(", ")
                                )
                            } else {
                                format!(
                                    "key `{key}`: `{sel}` is not a stage{}",
                                    suggestion(target, stage_names.iter().copied())
                                )
                            };
                            return Err(err(rn.pos, msg));
                        }
                        for &u in &found {
                            let up = &all[u];
                            let produces = up.kind.output();
                            if !slot.accepts.contains(&produces) {
                                let wants: Vec<String> =
                                    slot.accepts.iter().map(ArtifactType::to_string).collect();
                                return Err(err(
                                    rn.pos,
                                    format!(
                                        "key `{key}`: `{}` (kind `{}`) produces a {produces}, but `{key}` takes a {}",
                                        up.name,
                                        up.kind.name(),
                                        wants.join(" or ")
                                    ),
                                ));
                            }
                        }
                        if !slot.many && (found.len() > 1 || !ups.is_empty()) {
                            let names: Vec<&str> =
                                found.iter().map(|&i| all[i].name.as_str()).collect();
                            return Err(err(
                                rn.pos,
                                format!(
                                    "key `{key}`: takes one stage, but `{sel}` has {} instances ({}); name one",
                                    names.len(),
                                    names.join(", ")
                                ),
                            ));
                        }
                        ups.extend(found);
                    }
                    inputs.insert(key.to_string(), ups);
                } else {
                    params.insert(key.to_string(), e.value.to_json());
                }
            }
        }
    }
    for slot in slots {
        if slot.required && !inputs.contains_key(slot.key) {
            return Err(err(
                r.pos,
                format!("missing key `{}` (the stage to read from)", slot.key),
            ));
        }
    }
    let checked = r
        .kind
        .check(serde_json::Value::Object(params), base_dir)
        .map_err(|pe| {
            let path = name_variants(&r.node, pe.path());
            let pos = r.node.key_pos(&path);
            let dotted = path.join(".");
            let msg = match &pe {
                gantry_stages::ParamsError::UnknownKey { .. } => {
                    let last = path.last().cloned().unwrap_or_default();
                    let known = known_keys(&r.kind, &path[..path.len().saturating_sub(1)]);
                    let mut all_known: Vec<&str> = known.iter().map(String::as_str).collect();
                    if path.len() == 1 {
                        all_known.extend(RUNNER_KEYS);
                        all_known.extend(slots.iter().map(|s| s.key));
                    }
                    let shown = if path.len() > 1 {
                        dotted.clone()
                    } else {
                        last.clone()
                    };
                    format!(
                        "unknown key `{shown}`{}",
                        suggestion(&last, all_known.iter().copied())
                    )
                }
                gantry_stages::ParamsError::Invalid { message, .. } if path.is_empty() => {
                    message.clone()
                }
                gantry_stages::ParamsError::Invalid { message, .. } => {
                    format!("key `{dotted}`: {message}")
                }
            };
            err(pos, msg)
        })?;
    let files: Vec<PathBuf> = checked.files.iter().map(|f| base_dir.join(f)).collect();
    for abs in &files {
        if !abs.exists() {
            let (key, pos) = entries
                .iter()
                .filter(|e| !RUNNER_KEYS.contains(&e.key.as_str()))
                .find_map(|e| find_path(&e.value, base_dir, abs).map(|p| (e.key.clone(), p)))
                .unwrap_or_else(|| (String::new(), r.pos));
            let at = if key.is_empty() {
                String::new()
            } else {
                format!("key `{key}`: ")
            };
            return Err(err(pos, format!("{at}{} does not exist", abs.display())));
        }
    }
    Ok(Instance {
        name: r.name.clone(),
        stage: r.stage.clone(),
        matrix: r
            .matrix
            .iter()
            .map(|(k, v)| (k.clone(), v.to_json()))
            .collect(),
        kind: r.kind.clone(),
        params: checked.canonical,
        inputs,
        files,
        resources,
        pos: r.pos,
        description,
    })
}

/// Where the path `abs` is written in the stage, for errors about it.
fn find_path(node: &Node, base_dir: &Path, abs: &Path) -> Option<Pos> {
    match &node.value {
        Value::Str(s) => {
            let p = base_dir.join(s);
            (std::path::absolute(&p).unwrap_or(p) == abs).then_some(node.pos)
        }
        Value::Seq(items) => items.iter().find_map(|n| find_path(n, base_dir, abs)),
        Value::Map(es) => es.iter().find_map(|e| find_path(&e.value, base_dir, abs)),
        _ => None,
    }
}

/// serde_ignored writes `?` for an enum variant in a path; the YAML says which one.
fn name_variants(node: &Node, path: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(path.len());
    let mut cur = Some(node);
    for part in path {
        let name = match (part.as_str(), cur.and_then(Node::as_map)) {
            ("?", Some([only])) => only.key.clone(),
            _ => part.clone(),
        };
        cur = cur.and_then(|n| n.at_path(std::slice::from_ref(&name)));
        out.push(name);
    }
    out
}

/// Property names the kind's params accept at `path`, from its JSON Schema, for
/// "did you mean" hints.
fn known_keys(kind: &Arc<dyn StageKind>, path: &[String]) -> Vec<String> {
    let schema = kind.params_schema();
    let v = schema.as_value();
    let mut cur = v.clone();
    for part in path {
        let next = props_of(&cur, v).and_then(|p| p.get(part).cloned());
        match next {
            Some(n) => cur = n,
            None => return Vec::new(),
        }
    }
    props_of(&cur, v)
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default()
}

fn props_of(
    node: &serde_json::Value,
    root: &serde_json::Value,
) -> Option<serde_json::Map<String, serde_json::Value>> {
    let node = follow_ref(node, root);
    if let Some(p) = node.get("properties").and_then(|p| p.as_object()) {
        return Some(p.clone());
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        if let Some(list) = node.get(key).and_then(|l| l.as_array()) {
            let mut m = serde_json::Map::new();
            for item in list {
                if let Some(p) = props_of(item, root) {
                    m.extend(p);
                }
            }
            if !m.is_empty() {
                return Some(m);
            }
        }
    }
    None
}

fn follow_ref<'a>(
    node: &'a serde_json::Value,
    root: &'a serde_json::Value,
) -> &'a serde_json::Value {
    match node.get("$ref").and_then(|r| r.as_str()) {
        Some(r) => r
            .strip_prefix("#/")
            .map(|p| p.split('/').fold(root, |acc, part| &acc[part]))
            .unwrap_or(node),
        None => node,
    }
}

fn parse_resources(file: &str, stage: &str, node: &Node) -> Result<Resources, SpecError> {
    let Some(entries) = node.as_map() else {
        return Err(expected(
            file,
            node,
            Some(stage),
            "resources",
            "a mapping with `cpu`, `gpu`, `mem`",
        ));
    };
    let mut r = Resources::default();
    for e in entries {
        let num = match e.value.value {
            Value::Int(i) => Some(i as f64),
            Value::Float(f) => Some(f),
            _ => None,
        };
        match e.key.as_str() {
            "cpu" => match num {
                Some(n) if n > 0.0 => {
                    r.cpu = n;
                    r.cpu_auto = false;
                }
                _ => {
                    return Err(expected(
                        file,
                        &e.value,
                        Some(stage),
                        "resources.cpu",
                        "a positive number of cores",
                    ));
                }
            },
            "gpu" => match num {
                Some(n) if n >= 0.0 && (n <= 1.0 || n.fract() == 0.0) => r.gpu = n,
                _ => {
                    return Err(expected(
                        file,
                        &e.value,
                        Some(stage),
                        "resources.gpu",
                        "a whole number of GPUs, or a fraction of one to share it",
                    ));
                }
            },
            "mem" => {
                r.mem_bytes = parse_mem(&e.value).ok_or_else(|| {
                    expected(
                        file,
                        &e.value,
                        Some(stage),
                        "resources.mem",
                        "a size such as `4G` or `512M`",
                    )
                })?
            }
            other => {
                return Err(SpecError::new(
                    file,
                    Some(e.key_pos),
                    Some(stage),
                    format!(
                        "unknown key `resources.{other}`{}; resources are `cpu`, `gpu`, `mem`",
                        suggestion(other, ["cpu", "gpu", "mem"])
                    ),
                ));
            }
        }
    }
    Ok(r)
}

fn parse_mem(node: &Node) -> Option<u64> {
    match &node.value {
        Value::Int(i) if *i >= 0 => Some(*i as u64),
        Value::Str(s) => {
            let s = s.trim();
            let (num, mult) = match s.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
                Some((i, _)) => {
                    let unit = s[i..].trim_end_matches(['B', 'b', 'i']);
                    let m: u64 = match unit.to_ascii_uppercase().as_str() {
                        "" => 1,
                        "K" => 1 << 10,
                        "M" => 1 << 20,
                        "G" => 1 << 30,
                        "T" => 1 << 40,
                        _ => return None,
                    };
                    (&s[..i], m)
                }
                None => (s, 1),
            };
            let n: f64 = num.trim().parse().ok()?;
            (n >= 0.0).then_some((n * mult as f64) as u64)
        }
        _ => None,
    }
}

fn parse_selector(sel: &str) -> (&str, Vec<(String, String)>) {
    match sel.split_once('[') {
        Some((stage, rest)) => {
            let inner = rest.strip_suffix(']').unwrap_or(rest);
            let pairs = inner
                .split(',')
                .filter(|p| !p.trim().is_empty())
                .map(|p| match p.split_once('=') {
                    Some((k, v)) => (k.trim().to_string(), v.trim().to_string()),
                    None => (p.trim().to_string(), String::new()),
                })
                .collect();
            (stage, pairs)
        }
        None => (sel, Vec::new()),
    }
}

fn select(sel: &str, all: &[RawInstance], by_stage: &HashMap<&str, Vec<usize>>) -> Vec<usize> {
    let (stage, filter) = parse_selector(sel);
    let Some(cands) = by_stage.get(stage) else {
        return Vec::new();
    };
    cands
        .iter()
        .copied()
        .filter(|&i| {
            filter.iter().all(|(k, v)| {
                all[i]
                    .matrix
                    .iter()
                    .any(|(mk, mv)| mk == k && mv.render() == *v)
            })
        })
        .collect()
}

pub fn render_json(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Kahn's algorithm, always taking the earliest ready instance in file order, so that the
/// order (and so logs and `status`) is stable. On a cycle, returns its members in order.
fn topo_order(instances: &[Instance]) -> Result<Vec<usize>, Vec<usize>> {
    let n = instances.len();
    let mut indegree = vec![0usize; n];
    let mut down: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, inst) in instances.iter().enumerate() {
        for &u in inst.inputs.values().flatten() {
            indegree[i] += 1;
            down[u].push(i);
        }
    }
    let mut ready: std::collections::BTreeSet<usize> =
        (0..n).filter(|&i| indegree[i] == 0).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(i) = ready.pop_first() {
        order.push(i);
        for &d in &down[i] {
            indegree[d] -= 1;
            if indegree[d] == 0 {
                ready.insert(d);
            }
        }
    }
    if order.len() == n {
        return Ok(order);
    }
    // Walk upstream from the first stuck instance until a node repeats: that is a cycle.
    let start = (0..n).find(|&i| indegree[i] > 0).unwrap_or(0);
    let mut path = vec![start];
    let mut cur = start;
    loop {
        let next = instances[cur]
            .inputs
            .values()
            .flatten()
            .copied()
            .find(|&u| indegree[u] > 0);
        let Some(next) = next else { break };
        if let Some(at) = path.iter().position(|&p| p == next) {
            let mut cycle: Vec<usize> = path[at..].to_vec();
            // Upstream walk gives consumers first; show data flow order, starting from
            // the stage that comes first in the file.
            cycle.reverse();
            let first = cycle
                .iter()
                .enumerate()
                .min_by_key(|&(_, &i)| i)
                .map(|(k, _)| k)
                .unwrap_or(0);
            cycle.rotate_left(first);
            return Err(cycle);
        }
        path.push(next);
        cur = next;
    }
    Err(vec![start])
}
