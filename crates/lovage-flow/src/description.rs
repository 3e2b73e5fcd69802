//! Workflows written as JSON, for the CLI and anyone not writing Rust.
//!
//! Each node is an object with one of `task`, `chain`, `group` or `chord`:
//!
//! ```json
//! {"chain": [
//!    {"task": "lovage.echo", "args": [[1, 2, 3]]},
//!    {"group": [{"task": "lovage.sum"}, {"task": "lovage.echo"}]},
//!    {"task": "lovage.echo", "immutable": true, "args": ["done"]}
//!  ],
//!  "on_error": {"task": "lovage.append_jsonl", "args": ["/tmp/failures.jsonl"]}}
//! ```
//!
//! A task takes `args` (a JSON array, or an object by parameter name when it receives no
//! previous result), `immutable`, `queue`, `priority`, `countdown`, `expires`, `retries`,
//! `time_limit` and `link`. A chord is `{"chord": [members...], "body": node}`. Any node takes
//! `on_error` (a node or a list of nodes).

use serde_json::{Map, Value};

use lovage_core::{parse_duration, Codec, RetryPolicy, Signature};

use crate::{chain, chord, group, Canvas, FlowError};

/// Parses a workflow description (see the module docs); errors name the path of the node.
pub fn parse(text: &str) -> Result<Canvas, FlowError> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| FlowError::Invalid(format!("the workflow is not valid JSON: {e}")))?;
    node(&value, "workflow")
}

fn invalid(path: &str, what: impl std::fmt::Display) -> FlowError {
    FlowError::Invalid(format!("{path}: {what}"))
}

fn nodes(v: &Value, path: &str) -> Result<Vec<Canvas>, FlowError> {
    match v {
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| node(item, &format!("{path}[{i}]")))
            .collect(),
        Value::Object(_) => Ok(vec![node(v, path)?]),
        _ => Err(invalid(path, "expected a node or a list of nodes")),
    }
}

fn node(v: &Value, path: &str) -> Result<Canvas, FlowError> {
    let Value::Object(m) = v else {
        return Err(invalid(
            path,
            "expected an object with task, chain, group or chord",
        ));
    };
    let kinds: Vec<&str> = ["task", "chain", "group", "chord"]
        .into_iter()
        .filter(|k| m.contains_key(*k))
        .collect();
    let canvas = match kinds.as_slice() {
        ["task"] => task(m, path)?,
        ["chain"] => {
            check_keys(m, path, &["chain", "on_error"])?;
            chain(nodes(&m["chain"], &format!("{path}.chain"))?)
        }
        ["group"] => {
            check_keys(m, path, &["group", "on_error"])?;
            group(nodes(&m["group"], &format!("{path}.group"))?)
        }
        ["chord"] => {
            check_keys(m, path, &["chord", "body", "on_error"])?;
            let body = m
                .get("body")
                .ok_or_else(|| invalid(path, "a chord needs a body"))?;
            chord(
                nodes(&m["chord"], &format!("{path}.chord"))?,
                node(body, &format!("{path}.body"))?,
            )
        }
        [] => return Err(invalid(path, "expected one of task, chain, group or chord")),
        many => {
            return Err(invalid(
                path,
                format!("one node cannot be {}", many.join(" and ")),
            ))
        }
    };
    let mut canvas = canvas;
    if let Some(cbs) = m.get("on_error") {
        for cb in nodes(cbs, &format!("{path}.on_error"))? {
            canvas = canvas.on_error(cb);
        }
    }
    Ok(canvas)
}

fn check_keys(m: &Map<String, Value>, path: &str, allowed: &[&str]) -> Result<(), FlowError> {
    match m.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(invalid(
            path,
            format!("unknown key {k:?} (allowed: {})", allowed.join(", ")),
        )),
        None => Ok(()),
    }
}

fn task(m: &Map<String, Value>, path: &str) -> Result<Canvas, FlowError> {
    const KEYS: [&str; 11] = [
        "task",
        "args",
        "immutable",
        "queue",
        "priority",
        "countdown",
        "expires",
        "retries",
        "time_limit",
        "link",
        "on_error",
    ];
    check_keys(m, path, &KEYS)?;
    let name = m["task"]
        .as_str()
        .ok_or_else(|| invalid(path, "task must be a task name"))?;
    let args = match m.get("args") {
        None => Value::Array(Vec::new()),
        Some(a @ (Value::Array(_) | Value::Object(_))) => a.clone(),
        Some(_) => return Err(invalid(path, "args must be a JSON array or object")),
    };
    let mut sig = Signature::new(name, &args, Codec::Json).map_err(|e| invalid(path, e))?;
    let duration = |key: &str| -> Result<Option<std::time::Duration>, FlowError> {
        m.get(key)
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| invalid(path, format!("{key} must be a duration like \"10s\"")))
                    .and_then(|t| {
                        parse_duration(t).map_err(|e| invalid(path, format!("{key}: {e}")))
                    })
            })
            .transpose()
    };
    let o = &mut sig.options;
    o.queue = match m.get("queue") {
        None => None,
        Some(Value::String(q)) => Some(q.clone()),
        Some(_) => return Err(invalid(path, "queue must be a string")),
    };
    o.priority = match m.get("priority") {
        None => None,
        Some(v) => Some(
            v.as_u64()
                .filter(|p| *p <= 9)
                .ok_or_else(|| invalid(path, "priority must be 0-9"))? as u8,
        ),
    };
    o.countdown = duration("countdown")?;
    o.expires = duration("expires")?;
    o.time_limit = duration("time_limit")?;
    o.retry = match m.get("retries") {
        None => None,
        Some(v) => Some(RetryPolicy::retries(
            v.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| invalid(path, "retries must be a whole number"))?,
        )),
    };
    let mut canvas = Canvas::from(sig);
    match m.get("immutable") {
        None | Some(Value::Bool(false)) => {}
        Some(Value::Bool(true)) => canvas = canvas.immutable(),
        Some(_) => return Err(invalid(path, "immutable must be true or false")),
    }
    if let Some(links) = m.get("link") {
        for cb in nodes(links, &format!("{path}.link"))? {
            canvas = canvas.link(cb);
        }
    }
    Ok(canvas)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Node;

    #[test]
    fn a_nested_description_parses() {
        let c = parse(
            r#"{"chain": [
                {"task": "lovage.echo", "args": [[1, 2]]},
                {"chord": [{"task": "lovage.echo"}, {"task": "lovage.echo"}], "body": {"task": "lovage.sum"}},
                {"task": "lovage.echo", "immutable": true, "args": ["done"], "queue": "q", "priority": 3}
              ],
              "on_error": {"task": "lovage.echo", "immutable": true}}"#,
        )
        .unwrap();
        let Node::Chain(items) = &c.node else {
            panic!("not a chain")
        };
        assert_eq!(items.len(), 3);
        assert!(matches!(items[1].node, Node::Chord { .. }));
        assert_eq!(c.on_error.len(), 1);
        let Node::Task(last) = &items[2].node else {
            panic!("not a task")
        };
        assert!(last.immutable);
        assert_eq!(last.options.priority, Some(3));
    }

    #[test]
    fn mistakes_name_the_node() {
        let err = parse(r#"{"chain": [{"task": "a"}, {"taks": "b"}]}"#).unwrap_err();
        assert!(err.to_string().contains("workflow.chain[1]"), "{err}");
        let err = parse(r#"{"chord": [{"task": "a"}]}"#).unwrap_err();
        assert!(err.to_string().contains("needs a body"), "{err}");
        let err = parse(r#"{"task": "a", "priority": 12}"#).unwrap_err();
        assert!(err.to_string().contains("priority must be 0-9"), "{err}");
        let err = parse(r#"{"task": "a", "countdown": "soon"}"#).unwrap_err();
        assert!(err.to_string().contains("countdown"), "{err}");
        assert!(parse("[1,").is_err());
    }
}
