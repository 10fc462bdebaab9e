//! The job master: a state machine that deploys a job's subtasks and follows them, exchanging
//! only [`messages`](super::messages) with task executors.
//!
//! ```text
//! created ──start──▶ running ──a subtask finished──▶ finishing ──all finished──▶ finished
//!                      │  └──────────cancel──────────▶ cancelling ──all ended──▶ finished (stopped)
//!                      └──a failure (any state)─────▶ failing ────all ended──▶ failed
//! ```
//!
//! The first failure is the job's cause; later ones are subtasks told to stop. Messages of
//! another generation are dropped.

use std::collections::{BTreeMap, HashMap};

use super::OperatorError;
use super::descriptor::{DeploymentDescriptor, SubtaskId};
use super::messages::{OperatorCounters, ToExecutor, ToMaster};

/// Where the job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// Built, nothing deployed.
    Created,
    /// Deployed; every subtask is running.
    Running,
    /// Some subtasks have finished; waiting for the rest.
    Finishing,
    /// Cancel was asked for; waiting for every subtask to end.
    Cancelling,
    /// A subtask failed; the rest were told to stop and are being waited for.
    Failing,
    /// Every subtask finished (or the job was cancelled and drained).
    Finished,
    /// The job failed.
    Failed,
}

/// What a subtask's last report said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SubtaskState {
    Deploying,
    Running,
    Finished,
    Failed,
}

/// The job's first failure.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// The failing subtask.
    pub subtask: SubtaskId,
    /// What happened.
    pub error: OperatorError,
}

/// The master of one job attempt.
pub struct JobMaster {
    generation: u64,
    state: JobState,
    descriptors: Option<Vec<DeploymentDescriptor>>,
    subtasks: BTreeMap<SubtaskId, SubtaskState>,
    failure: Option<Failure>,
    cancelled: bool,
    counters: HashMap<String, OperatorCounters>,
    acknowledged: BTreeMap<u64, usize>,
    next_checkpoint: u64,
}

impl JobMaster {
    /// A master for attempt `generation` of the job made of `descriptors`.
    pub fn new(generation: u64, descriptors: Vec<DeploymentDescriptor>) -> JobMaster {
        let subtasks = descriptors.iter().map(|d| (d.id, SubtaskState::Deploying)).collect();
        JobMaster {
            generation,
            state: JobState::Created,
            descriptors: Some(descriptors),
            subtasks,
            failure: None,
            cancelled: false,
            counters: HashMap::new(),
            acknowledged: BTreeMap::new(),
            next_checkpoint: 1,
        }
    }

    /// The current state.
    pub fn state(&self) -> JobState {
        self.state
    }

    /// Whether the job has ended (finished or failed).
    pub fn is_terminal(&self) -> bool {
        matches!(self.state, JobState::Finished | JobState::Failed)
    }

    /// The first failure, if any.
    pub fn failure(&self) -> Option<&Failure> {
        self.failure.as_ref()
    }

    /// Whether the job was cancelled.
    pub fn cancelled(&self) -> bool {
        self.cancelled
    }

    /// The latest counters reported, per operator.
    pub fn counters(&self) -> &HashMap<String, OperatorCounters> {
        &self.counters
    }

    /// Subtasks that acknowledged checkpoint `id`.
    pub fn acknowledgements(&self, checkpoint: u64) -> usize {
        self.acknowledged.get(&checkpoint).copied().unwrap_or(0)
    }

    /// Deploys the job (one executor hosts every subtask for now).
    pub fn start(&mut self) -> Vec<ToExecutor> {
        let Some(subtasks) = self.descriptors.take().filter(|_| self.state == JobState::Created) else {
            return Vec::new();
        };
        self.state = JobState::Running;
        if subtasks.is_empty() {
            self.state = JobState::Finished;
            return Vec::new();
        }
        vec![ToExecutor::Deploy { generation: self.generation, subtasks }]
    }

    /// Asks every subtask to stop: with `drain` the sources end and the rest finishes.
    pub fn cancel(&mut self, drain: bool) -> Vec<ToExecutor> {
        if !matches!(self.state, JobState::Running | JobState::Finishing) {
            return Vec::new();
        }
        self.cancelled = true;
        self.state = JobState::Cancelling;
        vec![ToExecutor::Cancel { generation: self.generation, drain }]
    }

    /// Triggers a checkpoint (acknowledged by every subtask; nothing is stored yet).
    pub fn trigger_checkpoint(&mut self) -> Vec<ToExecutor> {
        if self.state != JobState::Running {
            return Vec::new();
        }
        let checkpoint = self.next_checkpoint;
        self.next_checkpoint += 1;
        vec![ToExecutor::TriggerCheckpoint { generation: self.generation, checkpoint }]
    }

    /// Handles a report; returns what to send in reply.
    pub fn on_message(&mut self, message: ToMaster) -> Vec<ToExecutor> {
        if message.generation() != self.generation {
            return Vec::new();
        }
        let mut out = Vec::new();
        match message {
            ToMaster::Running { subtask, .. } => {
                if let Some(s) = self.subtasks.get_mut(&subtask).filter(|s| **s == SubtaskState::Deploying) {
                    *s = SubtaskState::Running;
                }
            }
            ToMaster::Finished { subtask, .. } => {
                self.subtasks.insert(subtask, SubtaskState::Finished);
                if self.state == JobState::Running {
                    self.state = JobState::Finishing;
                }
            }
            ToMaster::Failed { subtask, error, .. } => {
                self.subtasks.insert(subtask, SubtaskState::Failed);
                out.extend(self.fail(subtask, error));
            }
            ToMaster::DeployFailed { subtask, error, .. } => {
                // Nothing of the deployment started.
                for s in self.subtasks.values_mut() {
                    *s = SubtaskState::Failed;
                }
                self.fail(subtask, error);
            }
            ToMaster::CheckpointAcknowledged { checkpoint, .. } => {
                *self.acknowledged.entry(checkpoint).or_default() += 1;
                if self.acknowledged[&checkpoint] == self.subtasks.len() {
                    out.push(ToExecutor::NotifyCheckpointComplete { generation: self.generation, checkpoint });
                }
            }
            ToMaster::Metrics { operators, .. } => self.counters.extend(operators),
        }
        if self.subtasks.values().all(|s| matches!(s, SubtaskState::Finished | SubtaskState::Failed)) {
            self.state = if self.failure.is_some() { JobState::Failed } else { JobState::Finished };
        }
        out
    }

    fn fail(&mut self, subtask: SubtaskId, error: OperatorError) -> Vec<ToExecutor> {
        if self.failure.is_some() {
            return Vec::new();
        }
        self.failure = Some(Failure { subtask, error });
        self.state = JobState::Failing;
        vec![ToExecutor::Cancel { generation: self.generation, drain: false }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn descriptor(task: usize, subtask: usize) -> DeploymentDescriptor {
        DeploymentDescriptor {
            id: SubtaskId { task, subtask },
            parallelism: 2,
            chain: vec![format!("op{task}")],
            inputs: Vec::new(),
            outputs: Vec::new(),
            splits: Vec::new(),
            all_splits: Vec::new(),
            input_columns: Vec::new(),
            source_columns: None,
            source_skips: None,
        }
    }

    fn id(task: usize, subtask: usize) -> SubtaskId {
        SubtaskId { task, subtask }
    }

    #[test]
    fn a_job_runs_finishes_and_ignores_other_generations() {
        let mut m = JobMaster::new(7, vec![descriptor(0, 0), descriptor(0, 1)]);
        assert_eq!(m.state(), JobState::Created);
        let deploy = m.start();
        assert!(matches!(&deploy[..], [ToExecutor::Deploy { generation: 7, subtasks }] if subtasks.len() == 2));
        assert_eq!(m.state(), JobState::Running);
        m.on_message(ToMaster::Finished { generation: 6, subtask: id(0, 0) });
        assert_eq!(m.state(), JobState::Running, "a stale generation is dropped");
        m.on_message(ToMaster::Finished { generation: 7, subtask: id(0, 0) });
        assert_eq!(m.state(), JobState::Finishing);
        m.on_message(ToMaster::Finished { generation: 7, subtask: id(0, 1) });
        assert_eq!(m.state(), JobState::Finished);
        assert!(m.is_terminal() && m.failure().is_none());
    }

    #[test]
    fn the_first_failure_cancels_the_rest_and_is_the_cause() {
        let mut m = JobMaster::new(1, vec![descriptor(0, 0), descriptor(1, 0), descriptor(1, 1)]);
        m.start();
        let reply =
            m.on_message(ToMaster::Failed { generation: 1, subtask: id(1, 1), error: OperatorError::new("boom") });
        assert_eq!(reply, [ToExecutor::Cancel { generation: 1, drain: false }]);
        assert_eq!(m.state(), JobState::Failing);
        let reply =
            m.on_message(ToMaster::Failed { generation: 1, subtask: id(0, 0), error: OperatorError::new("stopping") });
        assert!(reply.is_empty(), "only the first failure cancels");
        m.on_message(ToMaster::Finished { generation: 1, subtask: id(1, 0) });
        assert_eq!(m.state(), JobState::Failed);
        assert_eq!(m.failure().unwrap().subtask, id(1, 1));
        assert_eq!(m.failure().unwrap().error.message, "boom");
    }

    #[test]
    fn cancel_drains_and_ends_finished() {
        let mut m = JobMaster::new(1, vec![descriptor(0, 0)]);
        m.start();
        assert_eq!(m.cancel(true), [ToExecutor::Cancel { generation: 1, drain: true }]);
        assert_eq!(m.state(), JobState::Cancelling);
        assert!(m.cancel(true).is_empty(), "cancel is sent once");
        m.on_message(ToMaster::Finished { generation: 1, subtask: id(0, 0) });
        assert_eq!(m.state(), JobState::Finished);
        assert!(m.cancelled());
    }

    #[test]
    fn a_failed_deployment_fails_the_job_at_once() {
        let mut m = JobMaster::new(1, vec![descriptor(0, 0), descriptor(0, 1)]);
        m.start();
        m.on_message(ToMaster::DeployFailed { generation: 1, subtask: id(0, 1), error: OperatorError::new("no file") });
        assert_eq!(m.state(), JobState::Failed);
    }

    #[test]
    fn checkpoints_complete_once_every_subtask_acknowledged() {
        let mut m = JobMaster::new(1, vec![descriptor(0, 0), descriptor(0, 1)]);
        m.start();
        assert_eq!(m.trigger_checkpoint(), [ToExecutor::TriggerCheckpoint { generation: 1, checkpoint: 1 }]);
        let ack = |s| ToMaster::CheckpointAcknowledged { generation: 1, subtask: id(0, s), checkpoint: 1 };
        assert!(m.on_message(ack(0)).is_empty());
        assert_eq!(m.on_message(ack(1)), [ToExecutor::NotifyCheckpointComplete { generation: 1, checkpoint: 1 }]);
    }
}
