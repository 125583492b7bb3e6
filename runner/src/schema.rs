//! JSON Schema of pipeline files, assembled from every kind's params schema, so that
//! editors can complete and check pipelines (`gantry schema > gantry.schema.json`).

use serde_json::{Value, json};

use crate::spec::BACKENDS;

pub fn pipeline_schema() -> Value {
    let mut defs = serde_json::Map::new();
    let mut variants = Vec::new();
    for kind in gantry_stages::registry() {
        let mut params = kind.params_schema().as_value().clone();
        // Lift the kind's own definitions to the top so `$ref`s keep resolving.
        if let Some(Value::Object(d)) = params.as_object_mut().and_then(|o| o.remove("$defs")) {
            defs.extend(d);
        }
        let mut props = params
            .get("properties")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let required: Vec<Value> = params
            .get("required")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut req = required;
        req.push(json!("kind"));
        for slot in kind.inputs() {
            let one = json!({"type": "string", "description": "a stage name, or `stage[key=value]` for one matrix instance"});
            let schema = if slot.many {
                json!({"oneOf": [one, {"type": "array", "items": one}]})
            } else {
                one
            };
            props.insert(slot.key.into(), schema);
            if slot.required {
                req.push(json!(slot.key));
            }
        }
        props.insert(
            "kind".into(),
            json!({"const": kind.name(), "description": kind.summary()}),
        );
        props.insert("description".into(), json!({"type": "string"}));
        props.insert("resources".into(), json!({"$ref": "#/$defs/Resources"}));
        props.insert(
            "matrix".into(),
            json!({
                "type": "object",
                "description": "sweep: one instance per combination of these param values",
                "additionalProperties": {"type": "array", "minItems": 1}
            }),
        );
        let name = format!("Stage_{}", kind.name());
        defs.insert(
            name.clone(),
            json!({
                "type": "object",
                "description": kind.summary(),
                "properties": props,
                "required": req,
                "additionalProperties": false,
            }),
        );
        variants.push(json!({"$ref": format!("#/$defs/{name}")}));
    }
    defs.insert(
        "Resources".into(),
        json!({
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "cpu": {"type": "number", "exclusiveMinimum": 0, "description": "cores (default 1)"},
                "gpu": {"type": "number", "minimum": 0, "description": "GPUs; a fraction shares one"},
                "mem": {"type": ["string", "integer"], "description": "memory, e.g. 4G"}
            }
        }),
    );
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "gantry pipeline",
        "type": "object",
        "additionalProperties": false,
        "required": ["stages"],
        "properties": {
            "name": {"type": "string"},
            "description": {"type": "string"},
            "backend": {"enum": BACKENDS},
            "seed": {"type": "integer", "minimum": 0},
            "params": {"type": "object", "description": "values substituted where stages say ${params.NAME}"},
            "stages": {
                "type": "object",
                "minProperties": 1,
                "propertyNames": {"pattern": "^[A-Za-z0-9_-]+$"},
                "additionalProperties": {"oneOf": variants}
            }
        },
        "$defs": defs,
    })
}
