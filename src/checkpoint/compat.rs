//! State compatibility: whether a spec can take over the state of a checkpoint, operator by
//! operator (`sluice plan --against`, and `sluice run` before it restores).
//!
//! Operators are matched by id (their spec name). A stateful operator of the checkpoint is
//! kept when the spec has it with the same type, key columns and key types, and (for
//! transforms) the same window and aggregates; dropped when the spec no longer has it (gone
//! or renamed); incompatible otherwise, or when the number of key groups changed. Changing
//! parallelism is compatible: key-group ranges are reassigned at restore.

use serde::Serialize;

use super::Manifest;
use crate::plan::{self, PhysicalPlan};
use crate::spec::Validated;

/// What identifies an operator's state in a manifest: its type, what it does and the states
/// it declares, with its key columns and their types.
pub fn fingerprint(v: &Validated, op: &plan::Operator) -> serde_json::Value {
    let mut key = Vec::new();
    if let Some(t) = v.pipeline.transforms.get(&op.id) {
        let t = t.get();
        if let (plan::InputPartitioning::Hash(cols), Some((input, _))) = (t.partitioning(0), t.inputs().first()) {
            let schema = &v.streams[*input].schema.schema;
            for c in cols {
                let ty = schema.field_with_name(&c).map(|f| plan::type_name(f.data_type())).unwrap_or_default();
                key.push(serde_json::json!({ "column": c, "type": ty }));
            }
        }
    }
    serde_json::json!({
        "type": op.ty,
        "role": op.role,
        "description": op.description,
        "states": op.state.as_ref().map(|s| s.declared.clone()).unwrap_or_default(),
        "key": key,
    })
}

/// What happens to one operator's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Restored as it is (possibly across another parallelism).
    Kept,
    /// The checkpoint has state for an operator the spec no longer has.
    Dropped,
    /// The spec's operator cannot read the checkpoint's state.
    Incompatible,
    /// A stateful operator the checkpoint does not know: it starts empty.
    New,
}

/// One operator's verdict, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StateChange {
    /// The operator id.
    pub operator: String,
    /// What happens to its state.
    pub verdict: Verdict,
    /// Why, in one sentence.
    pub reason: String,
}

impl StateChange {
    /// Whether state would be lost.
    pub fn loses_state(&self) -> bool {
        matches!(self.verdict, Verdict::Dropped | Verdict::Incompatible)
    }
}

fn field<'a>(f: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    f.get(name).unwrap_or(&serde_json::Value::Null)
}

/// Compares the spec `v` (planned as `plan`) with the checkpoint `manifest`.
pub fn compare(v: &Validated, plan: &PhysicalPlan, manifest: &Manifest) -> Vec<StateChange> {
    let key_groups = v.pipeline.key_groups();
    let mut out = Vec::new();
    for entry in &manifest.operators {
        let change = |verdict, reason: String| StateChange { operator: entry.id.clone(), verdict, reason };
        let Some(op) = plan.operators.iter().find(|o| o.id == entry.id) else {
            out.push(change(Verdict::Dropped, "the spec has no operator of this name (removed or renamed)".into()));
            continue;
        };
        let (old, new) = (&entry.fingerprint, fingerprint(v, op));
        let keyed = !field(old, "key").as_array().is_none_or(Vec::is_empty);
        let reason = if field(old, "type") != field(&new, "type") {
            Some(format!("its type changed from {} to {}", field(old, "type"), field(&new, "type")))
        } else if field(old, "key") != field(&new, "key") {
            Some(format!("its key changed from {} to {}", field(old, "key"), field(&new, "key")))
        } else if op.role == "transform" && field(old, "description") != field(&new, "description") {
            Some(format!(
                "its window or aggregates changed (was: {}; now: {})",
                field(old, "description").as_str().unwrap_or(""),
                field(&new, "description").as_str().unwrap_or("")
            ))
        } else if field(old, "states") != field(&new, "states") {
            Some("the states it declares changed".into())
        } else if keyed && manifest.max_parallelism != key_groups {
            Some(format!(
                "max_parallelism changed from {} to {key_groups}: keyed state cannot move to other key groups",
                manifest.max_parallelism
            ))
        } else {
            None
        };
        out.push(match reason {
            Some(r) => change(Verdict::Incompatible, r),
            None if entry.parallelism != op.parallelism as usize => change(
                Verdict::Kept,
                format!(
                    "parallelism {} → {}{}",
                    entry.parallelism,
                    op.parallelism,
                    if keyed { ": key groups are reassigned" } else { "" }
                ),
            ),
            None => change(Verdict::Kept, "unchanged".into()),
        });
    }
    for op in &plan.operators {
        let keyed = op.state.as_ref().is_some_and(|s| s.kind == "keyed");
        if keyed && manifest.operator(&op.id).is_none() {
            out.push(StateChange {
                operator: op.id.clone(),
                verdict: Verdict::New,
                reason: "the checkpoint has no state for it: it starts empty".into(),
            });
        }
    }
    out
}
