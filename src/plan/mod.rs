//! The physical plan: what `sluice plan` shows and what the runtime will deploy.
//!
//! A validated spec becomes a graph of operators (one per source, transform and sink, with
//! the spec name as its stable id), each with a parallelism, connected by edges whose
//! partitioning follows from what the consumer needs: `forward` when both ends have the same
//! parallelism, `hash` on the key for keyed operators, `global` for operators that need every
//! row in one subtask, `rebalance` otherwise. Forward edges into single-input operators are
//! chained, so a chain of operators runs as one task. Rendering: text, dot, mermaid, json.

pub mod predicate;

use std::collections::HashMap;
use std::fmt::Write as _;

use arrow::datatypes::{DataType, SchemaRef};
use serde::Serialize;

use crate::spec::{StateBackend, Validated};
use crate::state::backend::StateDescriptor;

/// What state an operator keeps, as declared by its component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateKind {
    /// Stateless.
    None,
    /// Per-subtask state that is not keyed (offsets, open files).
    Operator(&'static str),
    /// Keyed state in the state backend, partitioned by key group.
    Keyed(&'static str),
}

/// How an operator needs its input rows distributed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputPartitioning {
    /// Any subtask may process any row; keep rows where they are when possible.
    Forward,
    /// Rows with the same key must reach the same subtask.
    Hash(Vec<String>),
    /// Every row must reach one single subtask.
    Single,
    /// Every row must reach every subtask.
    Broadcast,
}

/// How rows travel along one edge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Partitioning {
    /// Subtask i sends to subtask i; chained when possible.
    Forward,
    /// By hash of the key columns → key group → owning subtask.
    Hash {
        /// Key columns.
        key: Vec<String>,
    },
    /// Round-robin to all consumer subtasks.
    Rebalance,
    /// Every row to every consumer subtask.
    Broadcast,
    /// Every row to the consumer's single subtask.
    Global,
}

impl std::fmt::Display for Partitioning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Partitioning::Forward => f.write_str("forward"),
            Partitioning::Hash { key } => write!(f, "hash({})", key.join(", ")),
            Partitioning::Rebalance => f.write_str("rebalance"),
            Partitioning::Broadcast => f.write_str("broadcast"),
            Partitioning::Global => f.write_str("global"),
        }
    }
}

/// One column of an edge's schema.
#[derive(Debug, Clone, Serialize)]
pub struct Column {
    /// Column name.
    pub name: String,
    /// Type, in spec notation where there is one.
    #[serde(rename = "type")]
    pub ty: String,
    /// Whether the column may be null.
    pub nullable: bool,
}

/// State of one operator, for display.
#[derive(Debug, Clone, Serialize)]
pub struct State {
    /// `operator` or `keyed`.
    pub kind: &'static str,
    /// What is kept.
    pub what: &'static str,
    /// Where keyed state lives.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<&'static str>,
    /// The states the operator declares up front (name, kind, codec).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub declared: Vec<StateDescriptor>,
}

/// One operator of the physical graph.
#[derive(Debug, Clone, Serialize)]
pub struct Operator {
    /// Stable id: the spec name.
    pub id: String,
    /// `source`, `transform` or `sink`.
    pub role: &'static str,
    /// Connector or transform type.
    #[serde(rename = "type")]
    pub ty: &'static str,
    /// What it does, in one line.
    pub description: String,
    /// Number of subtasks.
    pub parallelism: u32,
    /// What state it keeps, if any.
    pub state: Option<State>,
    /// The task (chain) it runs in.
    pub task: usize,
    /// For a source whose consumers read only some of its columns: those (with its event time
    /// and its non-nullable columns), in stream order. It decodes only these and leaves the
    /// others null.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reads: Option<Vec<String>>,
    /// For a source whose every consumer keeps only rows meeting some column comparisons: per
    /// consumer, those comparisons. Data where each consumer has one provably false (by a
    /// Parquet row group's statistics) is skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skips: Option<Vec<Vec<predicate::ColumnBound>>>,
}

/// One edge of the physical graph.
#[derive(Debug, Clone, Serialize)]
pub struct Edge {
    /// Producing operator.
    pub from: String,
    /// Consuming operator.
    pub to: String,
    /// The stream name carried (the producer's name, or a side output's).
    pub stream: String,
    /// How rows are distributed.
    pub partitioning: Partitioning,
    /// Whether producer and consumer are chained into one task.
    pub chained: bool,
    /// Column to carry event time, if the stream has it.
    pub event_time: Option<String>,
    /// The schema of the rows.
    pub schema: Vec<Column>,
    /// When the consumer reads only some columns of the stream: those, in stream order; the
    /// producer sends only them (and `schema` lists only them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub columns: Option<Vec<String>>,
    /// Which input of the consumer this edge feeds (its position in the consumer's inputs).
    pub input: usize,
}

/// A chain of operators running as one task.
#[derive(Debug, Clone, Serialize)]
pub struct Task {
    /// Task number, from 1.
    pub id: usize,
    /// Operators, in chain order.
    pub operators: Vec<String>,
    /// Subtasks of the task.
    pub parallelism: u32,
}

/// The physical graph of a pipeline.
#[derive(Debug, Clone, Serialize)]
pub struct PhysicalPlan {
    /// Pipeline name.
    pub pipeline: String,
    /// Key groups (max parallelism).
    pub max_parallelism: u32,
    /// Operators in topological order.
    pub operators: Vec<Operator>,
    /// Edges.
    pub edges: Vec<Edge>,
    /// Tasks (chains).
    pub tasks: Vec<Task>,
}

/// Spec-notation name of an Arrow type.
pub fn type_name(t: &DataType) -> String {
    match t {
        DataType::Boolean => "boolean".into(),
        DataType::Int32 => "int".into(),
        DataType::Int64 => "bigint".into(),
        DataType::Float32 => "float".into(),
        DataType::Float64 => "double".into(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "string".into(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "bytes".into(),
        DataType::Date32 => "date".into(),
        DataType::Timestamp(_, _) => "timestamp".into(),
        other => other.to_string().to_lowercase(),
    }
}

fn columns(schema: &SchemaRef) -> Vec<Column> {
    schema
        .fields()
        .iter()
        .map(|f| Column { name: f.name().clone(), ty: type_name(f.data_type()), nullable: f.is_nullable() })
        .collect()
}

/// Builds the physical plan of a validated spec.
pub fn build(v: &Validated) -> PhysicalPlan {
    build_with(v, false)
}

/// Builds the physical plan; with `ordered_inputs` (tests) every source runs as one subtask,
/// and so does every operator that is not keyed and reads only single-subtask operators, so
/// given rows and watermarks reach each keyed subtask in the order they were given: which
/// rows are late depends on the test, not on thread timing.
pub fn build_with(v: &Validated, ordered_inputs: bool) -> PhysicalPlan {
    let p = &v.pipeline;
    let default = p.default_parallelism();
    let backend = match p.state.as_ref().map(|s| s.backend).unwrap_or_default() {
        StateBackend::Memory => "memory",
        StateBackend::Rocksdb => "rocksdb",
    };
    let state = |k: StateKind| match k {
        StateKind::None => None,
        StateKind::Operator(what) => Some(State { kind: "operator", what, backend: None, declared: Vec::new() }),
        StateKind::Keyed(what) => Some(State { kind: "keyed", what, backend: Some(backend), declared: Vec::new() }),
    };
    let mut ops: Vec<Operator> = Vec::new();
    // Operator id → its index in `ops`, so lookups stay constant-time on long chains.
    let mut index: HashMap<String, usize> = HashMap::new();
    // (consumer, stream, what the consumer needs)
    // (consumer, stream, partitioning, which input of the consumer it feeds)
    let mut wants: Vec<(String, String, InputPartitioning, usize)> = Vec::new();
    for (name, s) in &p.sources {
        let c = s.get();
        index.insert(name.clone(), ops.len());
        ops.push(Operator {
            id: name.clone(),
            role: "source",
            ty: s.name(),
            description: c.describe(),
            parallelism: if ordered_inputs { 1 } else { c.parallelism().unwrap_or(default) },
            state: state(c.state()),
            task: 0,
            reads: None,
            skips: None,
        });
    }
    // Transforms in the order their streams were typed (topological).
    let mut seen = std::collections::HashSet::new();
    for stream in v.streams.values() {
        let Some(t) = p.transforms.get(&stream.producer) else { continue };
        if !seen.insert(stream.producer.clone()) {
            continue;
        }
        let c = t.get();
        let needs: Vec<InputPartitioning> = (0..c.inputs().len()).map(|i| c.partitioning(i)).collect();
        let single = needs.contains(&InputPartitioning::Single);
        let forward = needs.iter().all(|n| *n == InputPartitioning::Forward);
        let single_inputs = c.inputs().iter().all(|(input, _)| {
            let producer = &v.streams[*input].producer;
            index.get(producer).is_some_and(|&i| ops[i].parallelism == 1)
        });
        let parallelism =
            if single || (ordered_inputs && forward && single_inputs) { 1 } else { c.parallelism().unwrap_or(default) };
        // Each input is partitioned on its own (its own key columns); an operator reading one
        // stream twice, as a self-join does, has two inputs and two edges.
        for (i, ((input, _), need)) in c.inputs().into_iter().zip(needs).enumerate() {
            wants.push((stream.producer.clone(), input.to_string(), need, i));
        }
        index.insert(stream.producer.clone(), ops.len());
        ops.push(Operator {
            id: stream.producer.clone(),
            role: "transform",
            ty: t.name(),
            description: c.describe(),
            parallelism,
            state: state(c.state()).map(|st| State { declared: c.states(), ..st }),
            task: 0,
            reads: None,
            skips: None,
        });
    }
    for (name, s) in &p.sinks {
        let c = s.get();
        wants.push((name.clone(), c.input().to_string(), InputPartitioning::Forward, 0));
        let producer = &v.streams[c.input()].producer;
        let single_input = index.get(producer).is_some_and(|&i| ops[i].parallelism == 1);
        index.insert(name.clone(), ops.len());
        ops.push(Operator {
            id: name.clone(),
            role: "sink",
            ty: s.name(),
            description: c.describe(),
            parallelism: if ordered_inputs && single_input { 1 } else { c.parallelism().unwrap_or(default) },
            state: state(c.state()),
            task: 0,
            reads: None,
            skips: None,
        });
    }
    let par: HashMap<String, u32> = ops.iter().map(|o| (o.id.clone(), o.parallelism)).collect();
    let mut edges: Vec<Edge> = wants
        .into_iter()
        .map(|(to, stream, need, input)| {
            let s = &v.streams[&stream];
            let from = s.schema.clone();
            let producer = v.streams[&stream].producer.clone();
            let partitioning = match need {
                InputPartitioning::Hash(key) => Partitioning::Hash { key },
                InputPartitioning::Single => Partitioning::Global,
                InputPartitioning::Broadcast => Partitioning::Broadcast,
                InputPartitioning::Forward if par[&producer] == par[&to] => Partitioning::Forward,
                InputPartitioning::Forward => Partitioning::Rebalance,
            };
            Edge {
                from: producer,
                to,
                stream,
                partitioning,
                chained: false,
                event_time: from.event_time.clone(),
                schema: columns(&from.schema),
                columns: None,
                input,
            }
        })
        .collect();
    let mut in_degree: HashMap<&str, usize> = HashMap::new();
    let mut out_degree: HashMap<&str, usize> = HashMap::new();
    for e in &edges {
        *in_degree.entry(&e.to).or_default() += 1;
        *out_degree.entry(&e.from).or_default() += 1;
    }
    let chained: Vec<bool> = edges
        .iter()
        .map(|e| {
            e.partitioning == Partitioning::Forward
                && in_degree[e.to.as_str()] == 1
                && out_degree[e.from.as_str()] == 1
                && e.stream == e.from
        })
        .collect();
    for (e, chained) in edges.iter_mut().zip(chained) {
        e.chained = chained;
        // Columns nobody downstream reads do not cross an exchange.
        let reads = (!chained).then(|| p.transforms.get(&e.to)).flatten().and_then(|t| {
            let t = t.get();
            (t.inputs().len() == 1).then(|| t.reads(&v.streams[&e.stream].schema)).flatten()
        });
        if let Some(reads) = reads {
            let kept: Vec<Column> = e.schema.iter().filter(|c| reads.contains(&c.name)).cloned().collect();
            if kept.len() < e.schema.len() {
                e.columns = Some(kept.iter().map(|c| c.name.clone()).collect());
                e.schema = kept;
            }
        }
    }
    // What each source must decode: the union of what the consumers of its stream read.
    for op in ops.iter_mut().filter(|o| o.role == "source") {
        let stream = &v.streams[&op.id].schema;
        let mut read: Vec<String> = stream.event_time.iter().cloned().collect();
        if p.sources.get(&op.id).is_none_or(|s| s.get().checks_non_nullable()) {
            read.extend(stream.schema.fields().iter().filter(|f| !f.is_nullable()).map(|f| f.name().clone()));
        }
        let all_known = edges.iter().filter(|e| e.stream == op.id).all(|e| {
            let reads = p.transforms.get(&e.to).and_then(|t| {
                let t = t.get();
                (t.inputs().len() == 1).then(|| t.reads(stream)).flatten()
            });
            reads.map(|r| read.extend(r)).is_some()
        });
        let kept: Vec<String> =
            stream.column_names().into_iter().filter(|c| read.iter().any(|r| r == c)).map(String::from).collect();
        if all_known && kept.len() < stream.schema.fields().len() {
            op.reads = Some(kept);
        }
        let consumers: Vec<&Edge> = edges.iter().filter(|e| e.stream == op.id).collect();
        let keeps: Option<Vec<Vec<predicate::ColumnBound>>> = consumers
            .iter()
            .map(|e| {
                let t = p.transforms.get(&e.to)?.get();
                (t.inputs().len() == 1).then(|| t.keeps(stream)).flatten().filter(|b| !b.is_empty())
            })
            .collect();
        op.skips = keeps.filter(|k| !k.is_empty());
    }
    // Tasks: follow chained edges from every operator that is not chained to its input.
    let mut tasks = Vec::new();
    // A chained edge is its producer's only outgoing edge.
    let chained_from: HashMap<&str, &str> =
        edges.iter().filter(|e| e.chained).map(|e| (e.from.as_str(), e.to.as_str())).collect();
    let chained_into: std::collections::HashSet<&str> = chained_from.values().copied().collect();
    for op in &ops {
        if chained_into.contains(op.id.as_str()) {
            continue;
        }
        let mut members = vec![op.id.clone()];
        let mut cur = op.id.as_str();
        while let Some(&next) = chained_from.get(cur) {
            cur = next;
            members.push(cur.to_string());
        }
        tasks.push(Task { id: tasks.len() + 1, operators: members, parallelism: op.parallelism });
    }
    for t in &tasks {
        for m in &t.operators {
            if let Some(&i) = index.get(m) {
                ops[i].task = t.id;
            }
        }
    }
    PhysicalPlan { pipeline: p.name.clone(), max_parallelism: p.key_groups(), operators: ops, edges, tasks }
}

/// Output formats of `sluice plan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum PlanFormat {
    /// Readable text.
    #[default]
    Text,
    /// Graphviz.
    Dot,
    /// Mermaid flowchart (renders in GitHub markdown).
    Mermaid,
    /// Machine-readable.
    Json,
}

impl PhysicalPlan {
    /// Renders the plan.
    pub fn render(&self, format: PlanFormat) -> String {
        match format {
            PlanFormat::Text => self.text(),
            PlanFormat::Dot => self.dot(),
            PlanFormat::Mermaid => self.mermaid(),
            PlanFormat::Json => serde_json::to_string_pretty(self).expect("plan serializes") + "\n",
        }
    }

    /// Operators by id, for rendering.
    fn by_id(&self) -> HashMap<&str, &Operator> {
        self.operators.iter().map(|o| (o.id.as_str(), o)).collect()
    }

    fn text(&self) -> String {
        let ops = self.by_id();
        let mut s = String::new();
        let subtasks: u32 = self.tasks.iter().map(|t| t.parallelism).sum();
        let _ = writeln!(
            s,
            "pipeline {}: {} operators in {} tasks, {} subtasks, {} key groups\n",
            self.pipeline,
            self.operators.len(),
            self.tasks.len(),
            subtasks,
            self.max_parallelism
        );
        for t in &self.tasks {
            let _ = writeln!(s, "task {} × {}", t.id, t.parallelism);
            for (i, id) in t.operators.iter().enumerate() {
                let op = ops[id.as_str()];
                let arrow = if i == 0 { "  " } else { "  ↳ " };
                let _ = writeln!(s, "{arrow}{} [{} {}] {}", op.id, op.role, op.ty, op.description);
                if let Some(reads) = &op.reads {
                    let _ = writeln!(s, "      decodes only {} (nothing downstream reads the rest)", reads.join(", "));
                }
                if let Some(skips) = &op.skips {
                    let each: Vec<String> = skips
                        .iter()
                        .map(|c| c.iter().map(|b| b.to_string()).collect::<Vec<_>>().join(" AND "))
                        .collect();
                    let _ = writeln!(
                        s,
                        "      skips Parquet row groups where none can hold rows with {}",
                        each.join(" or with ")
                    );
                }
                if let Some(st) = &op.state {
                    let backend = st.backend.map(|b| format!(" in {b}")).unwrap_or_default();
                    let what = if st.declared.is_empty() {
                        st.what.to_string()
                    } else {
                        let kind = |k| match k {
                            crate::state::backend::StateKind::Value => "value",
                            crate::state::backend::StateKind::Map => "map",
                            crate::state::backend::StateKind::List => "list",
                            crate::state::backend::StateKind::Timers => "timers",
                        };
                        let states: Vec<String> =
                            st.declared.iter().map(|d| format!("{} ({}: {})", d.name, kind(d.kind), d.codec)).collect();
                        states.join(", ")
                    };
                    let _ = writeln!(s, "      state: {} — {what}{backend}", st.kind);
                }
            }
        }
        let _ = writeln!(s, "\nedges");
        for e in &self.edges {
            let via = if e.stream != e.from { format!(" (stream {})", e.stream) } else { String::new() };
            let chained = if e.chained { ", chained" } else { "" };
            let pruned = if e.columns.is_some() { ", only the columns it reads" } else { "" };
            let _ = writeln!(s, "  {} → {}{via}: {}{chained}{pruned}", e.from, e.to, e.partitioning);
            let cols: Vec<String> = e
                .schema
                .iter()
                .map(|c| {
                    let et = if e.event_time.as_deref() == Some(c.name.as_str()) { " (event time)" } else { "" };
                    let null = if c.nullable { "" } else { " not null" };
                    format!("{} {}{null}{et}", c.name, c.ty)
                })
                .collect();
            let _ = writeln!(s, "      {}", cols.join(", "));
        }
        s
    }

    fn dot(&self) -> String {
        let ops = self.by_id();
        let mut s = format!(
            "digraph \"{}\" {{\n  rankdir=LR;\n  node [shape=box, fontname=\"monospace\"];\n",
            esc(&self.pipeline)
        );
        for t in &self.tasks {
            let _ = writeln!(s, "  subgraph cluster_task{} {{\n    label=\"task {} × {}\";", t.id, t.id, t.parallelism);
            for id in &t.operators {
                let op = ops[id.as_str()];
                let state = op.state.as_ref().map(|st| format!("\\nstate: {}", st.kind)).unwrap_or_default();
                let _ = writeln!(s, "    \"{}\" [label=\"{}\\n{} {}{}\"];", esc(id), esc(id), op.role, op.ty, state);
            }
            s.push_str("  }\n");
        }
        for e in &self.edges {
            let style = if e.chained { ", style=bold" } else { "" };
            let _ = writeln!(
                s,
                "  \"{}\" -> \"{}\" [label=\"{}\"{style}];",
                esc(&e.from),
                esc(&e.to),
                esc(&e.partitioning.to_string())
            );
        }
        s.push_str("}\n");
        s
    }

    fn mermaid(&self) -> String {
        let ops = self.by_id();
        let mut s = String::from("flowchart LR\n");
        for t in &self.tasks {
            let _ = writeln!(s, "  subgraph task{}[\"task {} × {}\"]", t.id, t.id, t.parallelism);
            for id in &t.operators {
                let op = ops[id.as_str()];
                let _ = writeln!(s, "    {id}[\"{id}<br/>{} {}\"]", op.role, op.ty);
            }
            s.push_str("  end\n");
        }
        for e in &self.edges {
            let arrow = if e.chained { "==>" } else { "-->" };
            let _ = writeln!(s, "  {} {arrow}|{}| {}", e.from, e.partitioning, e.to);
        }
        s
    }
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}
