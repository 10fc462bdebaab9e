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
//!
//! The checkpoint coordinator lives here too: it triggers checkpoints (at most one in flight,
//! a minimum pause between them, a timeout that fails the checkpoint and not the job),
//! collects every running subtask's acknowledgement, and hands the complete set to the
//! controller ([`JobMaster::take_ready`]), which writes the manifest and reports back
//! ([`JobMaster::checkpoint_stored`]); only then are subtasks told it is complete.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use super::OperatorError;
use super::descriptor::{DeploymentDescriptor, SubtaskId};
use super::messages::{OperatorCounters, ToExecutor, ToMaster};
use crate::checkpoint::StateHandle;

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

/// When checkpoints are taken.
#[derive(Debug, Clone)]
pub struct CheckpointSettings {
    /// Time between triggers.
    pub interval: Duration,
    /// A checkpoint not complete after this long fails.
    pub timeout: Duration,
    /// Least time between the end of one checkpoint and the next trigger.
    pub min_pause: Duration,
    /// Consecutive failed checkpoints tolerated before the job fails (`None`: any number).
    pub tolerable_failures: Option<u32>,
    /// The id of the first checkpoint (one past the restored one).
    pub first_id: u64,
}

/// A checkpoint in flight.
#[derive(Debug, Clone)]
pub struct PendingCheckpoint {
    /// Its id.
    pub id: u64,
    /// Whether it is a savepoint.
    pub savepoint: bool,
    /// Whether sources end once it completes.
    pub stop: bool,
    /// When it was triggered.
    pub started: Instant,
    /// State handles per acknowledging subtask.
    pub acks: BTreeMap<SubtaskId, Vec<StateHandle>>,
    /// Every running subtask acknowledged; handed to the controller.
    handed_over: bool,
}

/// The checkpoint coordinator's state.
#[derive(Debug)]
struct Coordinator {
    settings: Option<CheckpointSettings>,
    next_id: u64,
    pending: Option<PendingCheckpoint>,
    last_trigger: Instant,
    last_end: Option<Instant>,
    failures: u32,
    /// A source read all its input: the next checkpoint comes without waiting for the interval.
    want_soon: bool,
    /// A stop with savepoint was asked for.
    stop: bool,
    /// The stop's savepoint completed: the sources end, and nothing more is taken.
    stopped: bool,
    /// Some source has read all its input (and waits for a checkpoint to end).
    input_ended: bool,
    /// The newest complete checkpoint.
    completed: Option<u64>,
    /// Each subtask's state in the newest complete checkpoint it took part in: a subtask that
    /// has finished since is in later checkpoints with it (it ended after that checkpoint,
    /// with nothing new to keep).
    last_states: BTreeMap<SubtaskId, Vec<StateHandle>>,
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
    coordinator: Coordinator,
    /// Messages for the log (checkpoint failures and such).
    log: Vec<String>,
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
            coordinator: Coordinator {
                settings: None,
                next_id: 1,
                pending: None,
                last_trigger: Instant::now(),
                last_end: None,
                failures: 0,
                want_soon: false,
                stop: false,
                stopped: false,
                input_ended: false,
                completed: None,
                last_states: BTreeMap::new(),
            },
            log: Vec::new(),
        }
    }

    /// Takes checkpoints with these settings.
    pub fn with_checkpoints(mut self, settings: CheckpointSettings) -> JobMaster {
        self.coordinator.next_id = settings.first_id;
        self.coordinator.settings = Some(settings);
        self
    }

    /// The id the next checkpoint would get.
    pub fn next_checkpoint_id(&self) -> u64 {
        self.coordinator.next_id
    }

    /// The newest checkpoint completed in this attempt.
    pub fn completed_checkpoint(&self) -> Option<u64> {
        self.coordinator.completed
    }

    /// Messages for the log since the last call.
    pub fn take_log(&mut self) -> Vec<String> {
        std::mem::take(&mut self.log)
    }

    /// Asks for a savepoint after which the sources end (SIGTERM); the job then finishes.
    pub fn stop_with_savepoint(&mut self) -> Vec<ToExecutor> {
        if self.coordinator.settings.is_none() {
            return self.cancel(true);
        }
        self.coordinator.stop = true;
        self.tick(Instant::now())
    }

    /// Time-driven work: fails a checkpoint past its timeout, triggers the next one when due.
    pub fn tick(&mut self, now: Instant) -> Vec<ToExecutor> {
        let Some(settings) = self.coordinator.settings.clone() else { return Vec::new() };
        if !matches!(self.state, JobState::Running | JobState::Finishing) || self.coordinator.stopped {
            return Vec::new();
        }
        if let Some(p) = &self.coordinator.pending {
            if now.duration_since(p.started) >= settings.timeout && !p.handed_over {
                let id = p.id;
                return self.checkpoint_failed(id, format!("it did not complete within {:?}", settings.timeout));
            }
            return Vec::new();
        }
        let c = &self.coordinator;
        let paused = c.last_end.is_none_or(|e| now.duration_since(e) >= settings.min_pause);
        let due = now.duration_since(c.last_trigger) >= settings.interval || c.want_soon || c.stop;
        if !(paused && due) {
            return Vec::new();
        }
        let (savepoint, stop) = (self.coordinator.stop, self.coordinator.stop);
        self.trigger(savepoint, stop)
    }

    fn trigger(&mut self, savepoint: bool, stop: bool) -> Vec<ToExecutor> {
        let c = &mut self.coordinator;
        let id = c.next_id;
        c.next_id += 1;
        c.want_soon = false;
        c.last_trigger = Instant::now();
        c.pending = Some(PendingCheckpoint {
            id,
            savepoint,
            stop,
            started: Instant::now(),
            acks: BTreeMap::new(),
            handed_over: false,
        });
        vec![ToExecutor::TriggerCheckpoint { generation: self.generation, checkpoint: id, savepoint, stop }]
    }

    /// A checkpoint every running subtask acknowledged, for the controller to store (once).
    pub fn take_ready(&mut self) -> Option<PendingCheckpoint> {
        let p = self.coordinator.pending.as_mut()?;
        if p.handed_over {
            return None;
        }
        if self.failure.is_some() {
            return None;
        }
        let last = &self.coordinator.last_states;
        let mut ready = p.clone();
        for (id, s) in &self.subtasks {
            if ready.acks.contains_key(id) {
                continue;
            }
            match s {
                SubtaskState::Finished => {
                    ready.acks.insert(*id, last.get(id).cloned().unwrap_or_default());
                }
                _ => return None,
            }
        }
        p.handed_over = true;
        Some(ready)
    }

    /// The controller stored checkpoint `id`'s manifest (or could not): on success every
    /// subtask is told it is complete.
    pub fn checkpoint_stored(&mut self, id: u64, result: Result<(), String>) -> Vec<ToExecutor> {
        if self.coordinator.pending.as_ref().is_none_or(|p| p.id != id) {
            return Vec::new();
        }
        match result {
            Ok(()) => {
                let c = &mut self.coordinator;
                if let Some(p) = c.pending.take() {
                    c.stopped |= p.stop;
                    c.last_states.extend(p.acks);
                }
                c.last_end = Some(Instant::now());
                c.failures = 0;
                c.completed = Some(id);
                vec![ToExecutor::NotifyCheckpointComplete { generation: self.generation, checkpoint: id }]
            }
            Err(why) => self.checkpoint_failed(id, why),
        }
    }

    fn checkpoint_failed(&mut self, id: u64, why: String) -> Vec<ToExecutor> {
        let c = &mut self.coordinator;
        // A late decline of an earlier checkpoint leaves the one in flight alone.
        if c.pending.as_ref().is_none_or(|p| p.id != id) {
            return Vec::new();
        }
        let p = c.pending.take().expect("checked");
        c.last_end = Some(Instant::now());
        c.failures += 1;
        // Sources that have read everything (or stop) need a checkpoint to end: retry soon.
        c.want_soon |= p.stop || c.input_ended;
        let failures = c.failures;
        let what = if p.savepoint { "savepoint" } else { "checkpoint" };
        self.log.push(format!("{what} {id} failed: {why}"));
        let tolerable = c.settings.as_ref().and_then(|s| s.tolerable_failures);
        if tolerable.is_some_and(|t| failures > t) {
            let error = OperatorError::external(
                format!(
                    "{failures} checkpoints in a row failed, more than `tolerable_failures` allows; the last: {why}"
                ),
                true,
            );
            let subtask = self.subtasks.keys().next().copied().unwrap_or(SubtaskId { task: 0, subtask: 0 });
            return self.fail(subtask, error);
        }
        Vec::new()
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

    /// Triggers a checkpoint now, whatever the settings (for tests); nothing while one is in
    /// flight.
    pub fn trigger_checkpoint(&mut self) -> Vec<ToExecutor> {
        if self.state != JobState::Running || self.coordinator.pending.is_some() {
            return Vec::new();
        }
        self.trigger(false, false)
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
            ToMaster::CheckpointAcknowledged { checkpoint, subtask, states, .. } => {
                *self.acknowledged.entry(checkpoint).or_default() += 1;
                // Counts of a few recent checkpoints are enough (tests read them).
                while self.acknowledged.len() > 16 {
                    self.acknowledged.pop_first();
                }
                if let Some(p) = self.coordinator.pending.as_mut().filter(|p| p.id == checkpoint) {
                    p.acks.insert(subtask, states);
                }
            }
            ToMaster::CheckpointDeclined { checkpoint, subtask, reason, .. } => {
                let why = format!("subtask {} of task {}: {reason}", subtask.subtask, subtask.task);
                out.extend(self.checkpoint_failed(checkpoint, why));
            }
            ToMaster::InputEnded { .. } => {
                self.coordinator.want_soon = true;
                self.coordinator.input_ended = true;
                out.extend(self.tick(Instant::now()));
            }
            ToMaster::Metrics { operators, .. } => self.counters.extend(operators),
        }
        if self.subtasks.values().all(|s| matches!(s, SubtaskState::Finished | SubtaskState::Failed)) {
            self.state = if self.failure.is_some() { JobState::Failed } else { JobState::Finished };
        }
        out
    }

    /// Fails the job with `error` (such as a lost storage lease): every subtask is stopped.
    pub fn fail_now(&mut self, error: OperatorError) -> Vec<ToExecutor> {
        let subtask = self.subtasks.keys().next().copied().unwrap_or(SubtaskId { task: 0, subtask: 0 });
        self.fail(subtask, error)
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
    fn checkpoints_complete_once_every_subtask_acknowledged_and_the_manifest_is_stored() {
        let mut m = JobMaster::new(1, vec![descriptor(0, 0), descriptor(0, 1)]);
        m.start();
        let trigger = ToExecutor::TriggerCheckpoint { generation: 1, checkpoint: 1, savepoint: false, stop: false };
        assert_eq!(m.trigger_checkpoint(), [trigger]);
        assert!(m.trigger_checkpoint().is_empty(), "one checkpoint in flight at most");
        let ack =
            |s| ToMaster::CheckpointAcknowledged { generation: 1, subtask: id(0, s), checkpoint: 1, states: vec![] };
        assert!(m.on_message(ack(0)).is_empty());
        assert!(m.take_ready().is_none(), "subtask 1 has not acknowledged");
        assert!(m.on_message(ack(1)).is_empty(), "complete only once the manifest is stored");
        let ready = m.take_ready().unwrap();
        assert_eq!((ready.id, ready.acks.len()), (1, 2));
        assert!(m.take_ready().is_none(), "handed over once");
        assert_eq!(
            m.checkpoint_stored(1, Ok(())),
            [ToExecutor::NotifyCheckpointComplete { generation: 1, checkpoint: 1 }]
        );
        assert_eq!(m.completed_checkpoint(), Some(1));
    }

    fn settings(tolerable: Option<u32>) -> CheckpointSettings {
        CheckpointSettings {
            interval: Duration::from_millis(10),
            timeout: Duration::from_millis(50),
            min_pause: Duration::ZERO,
            tolerable_failures: tolerable,
            first_id: 7,
        }
    }

    #[test]
    fn a_failed_checkpoint_fails_the_job_only_past_tolerable_failures() {
        let mut m = JobMaster::new(1, vec![descriptor(0, 0)]).with_checkpoints(settings(Some(1)));
        m.start();
        let later = Instant::now() + Duration::from_millis(20);
        let trigger = m.tick(later);
        assert!(matches!(&trigger[..], [ToExecutor::TriggerCheckpoint { checkpoint: 7, .. }]), "{trigger:?}");
        let decline = |c| ToMaster::CheckpointDeclined {
            generation: 1,
            subtask: id(0, 0),
            checkpoint: c,
            reason: "storage is down".into(),
        };
        assert!(m.on_message(decline(7)).is_empty());
        assert_eq!(m.state(), JobState::Running, "one failure is tolerated");
        assert!(m.take_log()[0].contains("checkpoint 7 failed: subtask 0 of task 0: storage is down"));
        // The next one times out.
        let trigger = m.tick(Instant::now() + Duration::from_millis(20));
        assert!(matches!(&trigger[..], [ToExecutor::TriggerCheckpoint { checkpoint: 8, .. }]), "{trigger:?}");
        let cancel = m.tick(Instant::now() + Duration::from_millis(200));
        assert_eq!(cancel, [ToExecutor::Cancel { generation: 1, drain: false }]);
        assert_eq!(m.state(), JobState::Failing);
        assert!(m.failure().unwrap().error.message.contains("did not complete within"));
    }

    #[test]
    fn a_source_at_the_end_of_its_input_brings_the_next_checkpoint_forward() {
        let mut s = settings(None);
        s.interval = Duration::from_secs(3600);
        let mut m = JobMaster::new(1, vec![descriptor(0, 0)]).with_checkpoints(s);
        m.start();
        assert!(m.tick(Instant::now()).is_empty(), "not due yet");
        let out = m.on_message(ToMaster::InputEnded { generation: 1, subtask: id(0, 0) });
        assert!(matches!(&out[..], [ToExecutor::TriggerCheckpoint { checkpoint: 7, stop: false, .. }]), "{out:?}");
    }

    #[test]
    fn nothing_is_taken_after_the_savepoint_of_a_stop() {
        let mut m = JobMaster::new(1, vec![descriptor(0, 0), descriptor(0, 1)]).with_checkpoints(settings(None));
        m.start();
        let out = m.stop_with_savepoint();
        assert!(matches!(&out[..], [ToExecutor::TriggerCheckpoint { checkpoint: 7, savepoint: true, stop: true, .. }]));
        for s in 0..2 {
            m.on_message(ToMaster::CheckpointAcknowledged {
                generation: 1,
                subtask: id(0, s),
                checkpoint: 7,
                states: vec![],
            });
        }
        assert_eq!(m.take_ready().map(|r| r.id), Some(7));
        m.checkpoint_stored(7, Ok(()));
        // Subtask 0 ends on the completion; subtask 1 has not yet: the job is finishing.
        m.on_message(ToMaster::Finished { generation: 1, subtask: id(0, 0) });
        assert!(m.tick(Instant::now() + Duration::from_secs(60)).is_empty(), "no second savepoint");
        assert!(m.stop_with_savepoint().is_empty(), "a second stop takes nothing either");
    }
}
