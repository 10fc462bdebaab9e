//! Deployment descriptors: everything a task executor needs to instantiate one subtask, as
//! plain serializable data (operator ids, channel addresses, partitioners), so a job master
//! can ship them to an executor in another process.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::OperatorError;
use super::controller::JobError;
use super::partition::Partitioner;
use crate::plan::{self, Partitioning, PhysicalPlan};
use crate::spec::Validated;

/// One subtask of the job: task id (from the physical plan) and subtask index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SubtaskId {
    /// Task id.
    pub task: usize,
    /// Subtask index.
    pub subtask: usize,
}

/// Where a producer sends: a consumer subtask and the channel of its input gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelAddress {
    /// The consuming subtask.
    pub consumer: SubtaskId,
    /// The channel at its gate.
    pub channel: usize,
}

/// One input channel of a subtask's gate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputChannel {
    /// The producing operator.
    pub operator: String,
    /// The producing subtask.
    pub producer: SubtaskId,
    /// Which input of the head operator it feeds.
    pub input: usize,
}

/// One outgoing edge of the chain's tail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputEdge {
    /// The consuming operator.
    pub to: String,
    /// How rows pick a consumer.
    pub partitioner: Partitioner,
    /// One address per consumer subtask, in subtask order.
    pub consumers: Vec<ChannelAddress>,
    /// Indices of the stream's columns this edge carries, when not all of them.
    pub projection: Option<Vec<usize>>,
}

/// Everything an executor needs to run one subtask.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentDescriptor {
    /// Which subtask.
    pub id: SubtaskId,
    /// Subtasks of this task.
    pub parallelism: usize,
    /// Operator ids of the chain, head first.
    pub chain: Vec<String>,
    /// The input gate's channels, by channel id (empty for a source).
    pub inputs: Vec<InputChannel>,
    /// Per output of the tail (0 main, then side outputs in order): its stream name and edges.
    pub outputs: Vec<(String, Vec<OutputEdge>)>,
    /// For a source head: this subtask's share of the splits.
    pub splits: Vec<String>,
    /// For a source head: every split, so a subtask knows what others own.
    pub all_splits: Vec<String>,
    /// For a transform head, per input (by input index): the columns its input edge carries,
    /// when the edge prunes the stream to what the transform reads.
    pub input_columns: Vec<Option<Vec<String>>>,
    /// For a source head: the columns it must decode, when its consumers read fewer than all.
    #[serde(default)]
    pub source_columns: Option<Vec<String>>,
    /// For a source head: per consumer, comparisons its rows must meet (see
    /// [`crate::plan::Operator::skips`]).
    #[serde(default)]
    pub source_skips: Option<Vec<Vec<crate::plan::predicate::ColumnBound>>>,
}

/// The partitioner of edge `e`; a hash key that is not a column of the stream is an error.
fn partitioner(v: &Validated, e: &plan::Edge) -> Result<Partitioner, JobError> {
    Ok(match &e.partitioning {
        Partitioning::Forward => Partitioner::Forward,
        Partitioning::Rebalance => Partitioner::Rebalance,
        Partitioning::Global => Partitioner::Global,
        Partitioning::Broadcast => Partitioner::Broadcast,
        Partitioning::Hash { key } => {
            // Key columns are found in what the edge carries.
            let carried: Vec<String> = match &e.columns {
                Some(c) => c.clone(),
                None => v.streams[&e.stream].schema.schema.fields().iter().map(|f| f.name().clone()).collect(),
            };
            let columns = key
                .iter()
                .map(|k| {
                    carried.iter().position(|c| c == k).ok_or_else(|| JobError {
                        operator: e.to.clone(),
                        subtask: 0,
                        error: OperatorError::new(format!(
                            "cannot partition stream `{}` by `{k}`: it has no such column",
                            e.stream
                        )),
                    })
                })
                .collect::<Result<_, _>>()?;
            Partitioner::Hash { columns, max_parallelism: v.pipeline.key_groups() }
        }
    })
}

/// One descriptor per subtask of `plan`, in task order; `splits` holds each source's splits.
pub fn build(
    v: &Validated,
    plan: &PhysicalPlan,
    splits: &HashMap<String, Vec<String>>,
) -> Result<Vec<DeploymentDescriptor>, JobError> {
    let task_of: HashMap<&str, usize> = plan.operators.iter().map(|o| (o.id.as_str(), o.task)).collect();
    let par: HashMap<&str, usize> = plan.operators.iter().map(|o| (o.id.as_str(), o.parallelism as usize)).collect();
    let task_par: HashMap<usize, usize> = plan.tasks.iter().map(|t| (t.id, t.parallelism as usize)).collect();

    // Channels per consumer subtask, and per (edge, producer subtask) the consumer addresses.
    let mut inputs: HashMap<SubtaskId, Vec<InputChannel>> = HashMap::new();
    let mut edges: HashMap<(usize, usize), OutputEdge> = HashMap::new();
    for (ei, e) in plan.edges.iter().enumerate().filter(|(_, e)| !e.chained) {
        let partitioner = partitioner(v, e)?;
        let projection = match &e.columns {
            Some(columns) => {
                let schema = &v.streams[&e.stream].schema.schema;
                Some(columns.iter().filter_map(|c| schema.index_of(c).ok()).collect::<Vec<usize>>())
            }
            None => None,
        };
        let input = e.input;
        let (from_task, to_task) = (task_of[e.from.as_str()], task_of[e.to.as_str()]);
        for u in 0..par[e.from.as_str()] {
            let producer = SubtaskId { task: from_task, subtask: u };
            let mut consumers = Vec::new();
            for s in 0..par[e.to.as_str()] {
                let consumer = SubtaskId { task: to_task, subtask: s };
                let chans = inputs.entry(consumer).or_default();
                consumers.push(ChannelAddress { consumer, channel: chans.len() });
                chans.push(InputChannel { operator: e.from.clone(), producer, input });
            }
            edges.insert(
                (ei, u),
                OutputEdge {
                    to: e.to.clone(),
                    partitioner: partitioner.clone(),
                    consumers,
                    projection: projection.clone(),
                },
            );
        }
    }

    let mut out = Vec::new();
    for t in &plan.tasks {
        let tail = t.operators.last().expect("a task has operators");
        let head = &t.operators[0];
        let mut streams = vec![tail.clone()];
        if let Some(src) = v.pipeline.sources.get(tail) {
            streams.extend(src.get().dead_letter().map(str::to_string));
        } else if let Some(tr) = v.pipeline.transforms.get(tail) {
            streams.extend(tr.get().side_outputs().iter().map(|(n, _)| n.to_string()));
        }
        let parallelism = task_par[&t.id];
        // Per input of a transform head: the columns its pruned edge carries.
        let inputs_of_head = v.pipeline.transforms.get(head).map_or(0, |tr| tr.get().inputs().len());
        let input_columns: Vec<Option<Vec<String>>> = (0..inputs_of_head)
            .map(|i| {
                let edge = plan.edges.iter().find(|e| !e.chained && &e.to == head && e.input == i);
                edge.and_then(|e| e.columns.clone())
            })
            .collect();
        let head_op = plan.operators.iter().find(|o| &o.id == head);
        let source_columns = head_op.and_then(|o| o.reads.clone());
        let source_skips = head_op.and_then(|o| o.skips.clone());
        for s in 0..parallelism {
            let id = SubtaskId { task: t.id, subtask: s };
            let outputs = streams
                .iter()
                .map(|stream| {
                    let list = plan
                        .edges
                        .iter()
                        .enumerate()
                        .filter(|(_, e)| !e.chained && &e.from == tail && &e.stream == stream)
                        .map(|(ei, _)| edges[&(ei, s)].clone())
                        .collect();
                    (stream.clone(), list)
                })
                .collect();
            let all_splits = splits.get(head).cloned().unwrap_or_default();
            out.push(DeploymentDescriptor {
                id,
                parallelism,
                chain: t.operators.clone(),
                inputs: inputs.remove(&id).unwrap_or_default(),
                outputs,
                splits: all_splits.iter().skip(s).step_by(parallelism).cloned().collect(),
                all_splits,
                input_columns: input_columns.clone(),
                source_columns: source_columns.clone(),
                source_skips: source_skips.clone(),
            });
        }
    }
    Ok(out)
}
