//! Every example in `pipelines/` is valid, plans, and together they use every connector and
//! transform, in both syntaxes.

use std::collections::BTreeSet;

use sluice::connectors::{SinkConfig, SourceConfig};
use sluice::operators::TransformConfig;
use sluice::spec::{self, Options};

use crate::{root, sluice, spec_files};

#[test]
fn examples_are_valid_and_cover_every_component() {
    let files = spec_files(&root().join("pipelines"));
    assert!(files.len() >= 6, "at least six examples");
    let (mut sources, mut sinks, mut transforms, mut windows) =
        (BTreeSet::new(), BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    let mut syntaxes = BTreeSet::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        assert!(text.starts_with('#'), "{} starts with a comment saying what it shows", file.display());
        let report = spec::validate_file(file, &Options::default()).unwrap();
        assert!(report.diagnostics.is_empty(), "{}: {:#?}", file.display(), report.diagnostics);
        let v = report.validated.expect("valid");
        assert!(!v.pipeline.tests.is_empty(), "{} carries a test", file.display());
        syntaxes.insert(file.extension().unwrap().to_str().unwrap().to_string());
        sources.extend(v.pipeline.sources.values().map(|s| s.name()));
        sinks.extend(v.pipeline.sinks.values().map(|s| s.name()));
        for t in v.pipeline.transforms.values() {
            transforms.insert(t.name());
            if let TransformConfig::WindowAggregate(w) = t {
                windows.insert(format!("{:?}", w.window).split_whitespace().next().unwrap().to_string());
            }
        }
        let plan = sluice::plan::build(&v);
        assert_eq!(
            plan.operators.len(),
            v.pipeline.sources.len() + v.pipeline.transforms.len() + v.pipeline.sinks.len()
        );
    }
    assert_eq!(sources, SourceConfig::NAMES.iter().copied().collect());
    assert_eq!(sinks, SinkConfig::NAMES.iter().copied().collect());
    assert_eq!(transforms, TransformConfig::NAMES.iter().copied().collect());
    assert_eq!(windows, ["Hopping", "Session", "Tumbling"].iter().map(|s| s.to_string()).collect());
    assert!(syntaxes.contains("yaml") && syntaxes.contains("toml"));
}

#[test]
fn validate_pipelines_folder_exits_zero() {
    let out = sluice(&["validate", "pipelines/"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("0 errors, 0 warnings"), "{stdout}");
}

#[test]
fn plan_shows_chains_partitioning_state_and_schemas() {
    let out = sluice(&["plan", "pipelines/orders.yaml"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("orders → big_orders: forward, chained"), "{text}");
    assert!(text.contains("big_orders → per_customer: hash(customer_id)"), "{text}");
    assert!(text.contains("state: keyed"), "{text}");
    assert!(text.contains("window_start timestamp not null (event time)"), "{text}");
    assert!(text.contains("per_customer → late (stream late_orders)"), "{text}");
}

#[test]
fn plan_formats() {
    let json = sluice(&["plan", "pipelines/payments.yaml", "--format", "json"]);
    assert!(json.status.success());
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let ops = v["operators"].as_array().unwrap();
    let daily = ops.iter().find(|o| o["id"] == "daily").unwrap();
    assert_eq!(daily["parallelism"], 1, "a window without key runs in one subtask");
    let edge = v["edges"].as_array().unwrap().iter().find(|e| e["to"] == "daily").unwrap();
    assert_eq!(edge["partitioning"]["kind"], "global");
    // The window reads only `amount` and its event time: the other columns stay behind.
    let names: Vec<&str> = edge["schema"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["amount", "ts"]);
    assert_eq!(edge["columns"], serde_json::json!(["amount", "ts"]));
    let text = String::from_utf8(sluice(&["plan", "pipelines/payments.yaml"]).stdout).unwrap();
    assert!(text.contains("all_payments → daily: global, only the columns it reads"), "{text}");

    let dot = String::from_utf8(sluice(&["plan", "pipelines/nexmark_q5.yaml", "--format", "dot"]).stdout).unwrap();
    assert!(
        dot.starts_with("digraph") && dot.contains("\"bids\" -> \"bids_per_auction\" [label=\"hash(auction)\"]"),
        "{dot}"
    );
    let mermaid =
        String::from_utf8(sluice(&["plan", "pipelines/currency.toml", "--format", "mermaid"]).stdout).unwrap();
    assert!(mermaid.starts_with("flowchart LR") && mermaid.contains("bids ==>|forward| in_euro"), "{mermaid}");
}

#[test]
fn parallelism_change_turns_forward_into_rebalance() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(root().join("pipelines/quickstart.yaml")).unwrap().replace(
        "big_orders: { type: filter, input: orders,",
        "big_orders: { type: filter, parallelism: 3, input: orders,",
    );
    let path = dir.path().join("p.yaml");
    std::fs::write(&path, text).unwrap();
    let report = spec::validate_file(&path, &Options::default()).unwrap();
    let plan = sluice::plan::build(report.validated.as_ref().unwrap());
    let edge = plan.edges.iter().find(|e| e.to == "big_orders").unwrap();
    assert_eq!(edge.partitioning, sluice::plan::Partitioning::Rebalance);
    assert!(!edge.chained);
    assert_eq!(plan.operators.iter().find(|o| o.id == "big_orders").unwrap().parallelism, 3);
}
