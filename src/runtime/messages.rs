//! The control messages between the job master and task executors. Every message carries the
//! job's generation (bumped by every restart), so a late message from an earlier attempt is
//! recognised and dropped.
//!
//! They are plain serializable data: nothing on either side reaches into the other's memory.
//! Debug builds (the test suite) send every message through a JSON round trip
//! ([`transport`]), so a field that does not survive serialization fails the tests.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::OperatorError;
use super::descriptor::{DeploymentDescriptor, SubtaskId};

/// From the job master to a task executor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ToExecutor {
    /// Instantiate and start these subtasks (all or none).
    Deploy {
        /// Job generation.
        generation: u64,
        /// One descriptor per subtask.
        subtasks: Vec<DeploymentDescriptor>,
    },
    /// Take checkpoint `checkpoint`: sources snapshot their position and send its barrier.
    TriggerCheckpoint {
        /// Job generation.
        generation: u64,
        /// Checkpoint id.
        checkpoint: u64,
        /// Whether it is a savepoint (stored under `sp-…`, kept by retention).
        #[serde(default)]
        savepoint: bool,
        /// Whether sources end once it completes (stop with savepoint).
        #[serde(default)]
        stop: bool,
    },
    /// Checkpoint `checkpoint` completed: sinks commit.
    NotifyCheckpointComplete {
        /// Job generation.
        generation: u64,
        /// Checkpoint id.
        checkpoint: u64,
    },
    /// Stop every subtask: with `drain`, sources end their input and the rest finishes
    /// normally; without, subtasks fail fast.
    Cancel {
        /// Job generation.
        generation: u64,
        /// Whether to let what was read reach the sinks.
        drain: bool,
    },
}

/// Counters of one operator in one executor.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorCounters {
    /// Rows in.
    pub rows_in: u64,
    /// Rows out.
    pub rows_out: u64,
    /// Bytes read (sources).
    pub bytes_read: u64,
    /// Bytes to read in all, when known (sources).
    pub bytes_total: u64,
    /// Records skipped or dead-lettered.
    pub bad_records: u64,
    /// Late rows dropped.
    pub late_dropped: u64,
    /// Parquet row groups not read: no consumer could use a row of them (sources).
    #[serde(default)]
    pub row_groups_skipped: u64,
}

/// From a task executor to the job master.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ToMaster {
    /// A subtask started.
    Running {
        /// Job generation.
        generation: u64,
        /// Which subtask.
        subtask: SubtaskId,
    },
    /// A subtask finished normally.
    Finished {
        /// Job generation.
        generation: u64,
        /// Which subtask.
        subtask: SubtaskId,
    },
    /// A subtask failed.
    Failed {
        /// Job generation.
        generation: u64,
        /// Which subtask.
        subtask: SubtaskId,
        /// What happened, with the operator at fault.
        error: OperatorError,
    },
    /// A deployment could not be instantiated; none of its subtasks started.
    DeployFailed {
        /// Job generation.
        generation: u64,
        /// The subtask whose operator failed to build.
        subtask: SubtaskId,
        /// What happened, with the operator at fault.
        error: OperatorError,
    },
    /// A subtask snapshotted and uploaded its state for a checkpoint.
    CheckpointAcknowledged {
        /// Job generation.
        generation: u64,
        /// Which subtask.
        subtask: SubtaskId,
        /// Checkpoint id.
        checkpoint: u64,
        /// Its operators' state, stored.
        #[serde(default)]
        states: Vec<crate::checkpoint::StateHandle>,
    },
    /// A subtask could not take its part of a checkpoint (such as an upload that failed).
    CheckpointDeclined {
        /// Job generation.
        generation: u64,
        /// Which subtask.
        subtask: SubtaskId,
        /// Checkpoint id.
        checkpoint: u64,
        /// Why.
        reason: String,
    },
    /// A source subtask read all its input; it ends once a later checkpoint completes.
    InputEnded {
        /// Job generation.
        generation: u64,
        /// Which subtask.
        subtask: SubtaskId,
    },
    /// The executor's counters so far, per operator (sent periodically and before every
    /// `Finished` or `Failed`, so the last one the master sees is final).
    Metrics {
        /// Job generation.
        generation: u64,
        /// Counters per operator id.
        operators: Vec<(String, OperatorCounters)>,
    },
}

impl ToMaster {
    /// The generation the message belongs to.
    pub fn generation(&self) -> u64 {
        match self {
            ToMaster::Running { generation, .. }
            | ToMaster::Finished { generation, .. }
            | ToMaster::Failed { generation, .. }
            | ToMaster::DeployFailed { generation, .. }
            | ToMaster::CheckpointAcknowledged { generation, .. }
            | ToMaster::CheckpointDeclined { generation, .. }
            | ToMaster::InputEnded { generation, .. }
            | ToMaster::Metrics { generation, .. } => *generation,
        }
    }
}

impl ToExecutor {
    /// The generation the message belongs to.
    pub fn generation(&self) -> u64 {
        match self {
            ToExecutor::Deploy { generation, .. }
            | ToExecutor::TriggerCheckpoint { generation, .. }
            | ToExecutor::NotifyCheckpointComplete { generation, .. }
            | ToExecutor::Cancel { generation, .. } => *generation,
        }
    }
}

/// Delivers a message across the master/executor boundary. In debug builds it goes through a
/// JSON round trip, as it would between processes.
pub fn transport<T: Serialize + DeserializeOwned>(message: T) -> T {
    if !cfg!(debug_assertions) {
        return message;
    }
    let text = serde_json::to_string(&message).expect("control messages serialize");
    serde_json::from_str(&text).expect("control messages deserialize")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::ErrorDomain;

    #[test]
    fn messages_survive_a_round_trip() {
        let mut error = OperatorError::with_record("bad number", "{\"x\": \"a\"}");
        error.operator = Some("parse".into());
        let m = ToMaster::Failed { generation: 3, subtask: SubtaskId { task: 1, subtask: 2 }, error };
        let back = transport(m.clone());
        assert_eq!(back, m);
        let ToMaster::Failed { error, .. } = back else { unreachable!() };
        assert_eq!(error.domain, ErrorDomain::BadData);
        assert!(!error.retryable);
        assert_eq!(error.record.as_deref(), Some("{\"x\": \"a\"}"));
        let c = ToExecutor::Cancel { generation: 3, drain: true };
        assert_eq!(transport(c.clone()), c);
    }
}
