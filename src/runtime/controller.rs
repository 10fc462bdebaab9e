//! Running a job on this machine: the job master and a task executor, joined by messages.
//!
//! [`run_job`] plans the job, turns the plan into deployment descriptors, and then only
//! carries [`messages`](super::messages) between the [`JobMaster`] and the [`TaskExecutor`]
//! (through a serialization round trip in debug builds), until the master reaches a final
//! state. A failure anywhere cancels the job without drain: every gate is closed (which wakes
//! blocked senders and receivers), and the first failure is reported with the operator and
//! the record at fault. A [`CancelHandle`] (Ctrl-C) cancels with drain: sources stop
//! reading, end-of-stream flows down, and sinks flush and close; with checkpoints it stops
//! with a savepoint instead.
//!
//! With `checkpoints:` in the spec, the controller also holds the storage's lease, restores
//! the latest complete checkpoint (or the one asked for), writes each checkpoint's manifest
//! when the master has every acknowledgement, applies retention, and restarts a failed job
//! from its latest checkpoint as the spec's `restart:` strategy allows.

use std::collections::{HashMap, VecDeque};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use indexmap::IndexMap;

use super::OperatorError;
use super::descriptor;
pub use super::executor::TestInput;
use super::executor::{ExecutorOptions, TaskExecutor};
use super::master::JobMaster;
use super::master::{CheckpointSettings, JobState, PendingCheckpoint};
use super::messages::{OperatorCounters, ToExecutor, transport};
use crate::checkpoint::{self, Lease, MANIFEST, Restored, Storage, StorageError};
use crate::plan::{self, PhysicalPlan};
use crate::spec::Validated;
use std::sync::Arc;

/// Asks a running job to stop cleanly (sources end, sinks flush); usable from any thread.
#[derive(Debug, Clone)]
pub struct CancelHandle(mpsc::Sender<()>);

impl CancelHandle {
    /// Cancels the job with drain (once is enough; later calls do nothing more).
    pub fn cancel(&self) {
        let _ = self.0.send(());
    }
}

/// The receiving end of a [`CancelHandle`], given to [`run_job`] in [`JobOptions::cancel`].
#[derive(Debug)]
pub struct CancelRequests(mpsc::Receiver<()>);

/// A handle to cancel a job and what to pass in [`JobOptions::cancel`].
pub fn cancel_channel() -> (CancelHandle, CancelRequests) {
    let (tx, rx) = mpsc::channel();
    (CancelHandle(tx), CancelRequests(rx))
}

/// A callback receiving live counters.
pub type ProgressFn = Box<dyn FnMut(&[OperatorStats]) + Send>;

/// A callback receiving log lines.
pub type LogFn = Box<dyn FnMut(&str) + Send>;

/// How to run a job.
pub struct JobOptions {
    /// Bytes each subtask's input gate may hold (shared among its channels).
    pub channel_capacity: usize,
    /// Replace every sink by a capture returned in [`JobResult::captured`].
    pub capture_sinks: bool,
    /// Replace these sources by the given rows (read by subtask 0, in order).
    pub test_inputs: Option<HashMap<String, Vec<TestInput>>>,
    /// Cancel requests (Ctrl-C): the job stops cleanly.
    pub cancel: Option<CancelRequests>,
    /// Called about five times a second with live counters.
    pub on_progress: Option<ProgressFn>,
    /// Ignore existing checkpoints: start from the beginning of the input.
    pub fresh: bool,
    /// Restore from this checkpoint or savepoint (its folder or manifest, inside the spec's
    /// storage or given as a full `file://`/`s3://` location) instead of the latest.
    pub from: Option<String>,
    /// Where log lines go (checkpoints taken, restores, restarts); stderr by default.
    pub log: Option<LogFn>,
    /// Restore even when some operator's state cannot be (it starts empty instead).
    pub allow_state_loss: bool,
}

impl Default for JobOptions {
    fn default() -> Self {
        JobOptions {
            channel_capacity: 8 << 20,
            capture_sinks: false,
            test_inputs: None,
            cancel: None,
            on_progress: None,
            fresh: false,
            from: None,
            log: None,
            allow_state_loss: false,
        }
    }
}

/// Counters of one operator.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OperatorStats {
    /// Operator id.
    pub id: String,
    /// `source`, `transform` or `sink`.
    pub role: &'static str,
    /// Its counters.
    #[serde(flatten)]
    pub counters: OperatorCounters,
}

impl std::ops::Deref for OperatorStats {
    type Target = OperatorCounters;
    fn deref(&self) -> &OperatorCounters {
        &self.counters
    }
}

/// The outcome of a run.
#[derive(Debug)]
pub struct JobResult {
    /// Counters per operator, in plan order.
    pub stats: Vec<OperatorStats>,
    /// Captured rows per sink, when sinks were captured.
    pub captured: IndexMap<String, Vec<RecordBatch>>,
    /// Wall time.
    pub elapsed: Duration,
    /// Whether the run was stopped before its inputs ended.
    pub stopped: bool,
    /// The newest checkpoint or savepoint this run completed.
    pub last_checkpoint: Option<u64>,
    /// How many times the job restarted after a failure.
    pub restarts: u32,
}

/// Why a job failed.
#[derive(Debug, thiserror::Error)]
#[error("operator `{operator}` (subtask {subtask}) failed: {error}")]
pub struct JobError {
    /// The operator at fault.
    pub operator: String,
    /// Its subtask.
    pub subtask: usize,
    /// What happened.
    pub error: OperatorError,
}

fn stats(plan: &PhysicalPlan, counters: &HashMap<String, OperatorCounters>) -> Vec<OperatorStats> {
    plan.operators
        .iter()
        .map(|o| OperatorStats {
            id: o.id.clone(),
            role: o.role,
            counters: counters.get(&o.id).cloned().unwrap_or_default(),
        })
        .collect()
}

/// How long the executor is polled for news before the master looks at cancel requests.
const POLL: Duration = Duration::from_millis(100);

/// How often `on_progress` is called.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);

fn job_error(operator: &str, error: OperatorError) -> JobError {
    JobError { operator: operator.to_string(), subtask: 0, error }
}

/// The checkpoint state of one run: storage, lease and what to restore.
struct Checkpointing {
    storage: Storage,
    keeper: checkpoint::LeaseKeeper,
    retain: usize,
    settings: CheckpointSettings,
    /// Log every checkpoint (`SLUICE_LOG=checkpoints`).
    verbose: bool,
    /// How a restart fetches the checkpoint it restores.
    fetch: checkpoint::Fetch,
}

/// Restart decisions by the spec's `restart:` strategy.
struct Restarts {
    strategy: Option<crate::spec::Restart>,
    failures: VecDeque<Instant>,
    attempts: u32,
    last_start: Instant,
}

impl Restarts {
    /// The delay before the next restart, or `None` to give up.
    fn next(&mut self) -> Option<Duration> {
        use crate::spec::Restart as R;
        let now = Instant::now();
        self.attempts += 1;
        match self.strategy.as_ref()? {
            R::None => None,
            R::FixedDelay { attempts, delay } => (self.attempts <= *attempts).then_some(delay.0),
            R::FailureRate { max_failures, interval, delay } => {
                self.failures.push_back(now);
                while self.failures.front().is_some_and(|t| now.duration_since(*t) > interval.0) {
                    self.failures.pop_front();
                }
                (self.failures.len() <= *max_failures as usize).then_some(delay.0)
            }
            R::ExponentialBackoff { initial_delay, max_delay, multiplier, reset_after } => {
                let reset = reset_after.map_or(Duration::from_secs(3600), |d| d.0);
                if now.duration_since(self.last_start) >= reset {
                    self.attempts = 1;
                }
                let factor = multiplier.unwrap_or(2.0).max(1.0).powi(self.attempts.saturating_sub(1).min(60) as i32);
                Some(initial_delay.0.mul_f64(factor).min(max_delay.0))
            }
        }
    }
}

/// Runs a validated spec to completion (or until cancelled) on this machine.
pub fn run_job(v: &Validated, options: JobOptions) -> Result<JobResult, JobError> {
    let started = Instant::now();
    let JobOptions {
        channel_capacity,
        capture_sinks,
        test_inputs,
        cancel,
        mut on_progress,
        fresh,
        from,
        log,
        allow_state_loss,
    } = options;
    let mut log = log.unwrap_or_else(|| Box::new(|line: &str| eprintln!("{line}")));
    let plan = plan::build_with(v, test_inputs.is_some());
    let p = &v.pipeline;

    // Checkpoints: not for dry runs and tests, whose sinks are captures.
    let mut checkpointing = None;
    let mut restored: Option<Restored> = None;
    let mut next_id = 1;
    let mut generation = 1;
    if let Some(c) = p.checkpoints.as_ref().filter(|_| !capture_sinks && test_inputs.is_none()) {
        let fail = |e: StorageError| job_error("checkpoints", OperatorError::external(e.0, false));
        let storage = Storage::open(&c.storage, c.s3.as_ref()).map_err(fail)?;
        let lease = Lease::acquire(&storage, &p.name).map_err(fail)?;
        // Renewed from now on, through however long restoring takes.
        let keeper = checkpoint::LeaseKeeper::start(lease, storage.clone(), LEASE_RENEWAL).map_err(|e| {
            job_error("checkpoints", OperatorError::new(format!("cannot start renewing the lease: {e}")))
        })?;
        // Restored state files are fetched next to where the job's state goes, to be linked in.
        let fetch = checkpoint::Fetch::Files(crate::state::StateEnv::base(p.state.as_ref()));
        // Ids and generations go on from everything the storage holds, complete or not.
        let inventory = checkpoint::inventory(&storage).map_err(fail)?;
        let too_many = || {
            job_error(
                "checkpoints",
                OperatorError::new(format!("storage `{}` holds a checkpoint id too large to go on from", c.storage)),
            )
        };
        next_id = inventory.max_id.unwrap_or(0).checked_add(1).ok_or_else(too_many)?;
        let mut skipped = Vec::new();
        let mut newest = match (&from, fresh) {
            (Some(from), _) => {
                let inside = (!from.contains("://") && !from.starts_with('/')).then_some(&storage);
                let r = checkpoint::open_location(from, inside, c.s3.as_ref(), &p.name, &fetch)
                    .map_err(|e| job_error("checkpoints", OperatorError::new(e)))?;
                Some(r.ok_or_else(|| {
                    job_error("checkpoints", OperatorError::new(format!("`{from}` holds no complete checkpoint")))
                })?)
            }
            (None, true) => None,
            (None, false) => checkpoint::latest_of(&storage, &inventory.manifests, &p.name, &fetch, &mut skipped)
                .map_err(|e| job_error("checkpoints", OperatorError::external(e.to_string(), false)))?,
        };
        for s in skipped {
            log(&format!("skipping a checkpoint: {s}"));
        }
        // The newest manifest's generation (read again only when that is not the one restored).
        let newest_generation = match (inventory.manifests.first(), &newest) {
            (Some((id, _)), Some(r)) if *id == r.manifest.id => Some(r.manifest.generation),
            (Some((_, name)), _) => storage
                .get(name)
                .ok()
                .flatten()
                .and_then(|b| serde_json::from_slice::<checkpoint::Manifest>(&b).ok())
                .map(|m| m.generation),
            (None, _) => None,
        };
        let restored_generation = newest.as_ref().map(|r| r.manifest.generation);
        generation = newest_generation.max(restored_generation).map_or(1, |g| g.saturating_add(1));
        if let Some(r) = newest.as_mut() {
            let changes = checkpoint::compat::compare(v, &plan, &r.manifest);
            let lost: Vec<&checkpoint::compat::StateChange> = changes.iter().filter(|c| c.loses_state()).collect();
            if !lost.is_empty() && !allow_state_loss {
                let list: Vec<String> = lost.iter().map(|c| format!("`{}`: {}", c.operator, c.reason)).collect();
                return Err(job_error(
                    "checkpoints",
                    OperatorError::new(format!(
                        "restoring {} would lose state: {}; see `sluice plan SPEC --against {}`, or run with \
                         `--allow-state-loss` to start those operators empty (or `--fresh`)",
                        r.location,
                        list.join("; "),
                        r.location
                    )),
                ));
            }
            for c in lost {
                log(&format!("state of `{}` not restored: {}", c.operator, c.reason));
                r.manifest.operators.retain(|o| o.id != c.operator);
            }
        }
        restored = newest;
        checkpointing = Some(Checkpointing {
            storage,
            keeper,
            retain: c.retain.map_or(1, |r| r as usize),
            fetch,
            verbose: std::env::var("SLUICE_LOG").is_ok_and(|l| l.split(',').any(|x| x == "checkpoints")),
            settings: CheckpointSettings {
                interval: c.interval.0,
                timeout: c.timeout.map_or(Duration::from_secs(600), |d| d.0),
                min_pause: c.min_pause.map_or(Duration::ZERO, |d| d.0),
                tolerable_failures: c.tolerable_failures,
                first_id: next_id,
            },
        });
    }
    let result = run_attempts(
        v,
        &plan,
        AttemptOptions {
            channel_capacity,
            capture_sinks,
            test_inputs,
            cancel,
            on_progress: &mut on_progress,
            log: &mut log,
            checkpointing: checkpointing.as_mut(),
            restored,
            generation,
            next_id,
            started,
        },
    );
    // The lease is given up.
    drop(checkpointing);
    result
}

struct AttemptOptions<'a> {
    channel_capacity: usize,
    capture_sinks: bool,
    test_inputs: Option<HashMap<String, Vec<TestInput>>>,
    cancel: Option<CancelRequests>,
    on_progress: &'a mut Option<ProgressFn>,
    log: &'a mut LogFn,
    checkpointing: Option<&'a mut Checkpointing>,
    restored: Option<Restored>,
    generation: u64,
    next_id: u64,
    started: Instant,
}

/// Runs attempts of the job until one ends without a failure a restart may cure.
fn run_attempts(v: &Validated, plan: &PhysicalPlan, o: AttemptOptions<'_>) -> Result<JobResult, JobError> {
    let AttemptOptions {
        channel_capacity,
        capture_sinks,
        mut test_inputs,
        cancel,
        on_progress,
        log,
        mut checkpointing,
        mut restored,
        mut generation,
        mut next_id,
        started,
    } = o;
    let p = &v.pipeline;
    let mut restarts =
        Restarts { strategy: p.restart.clone(), failures: VecDeque::new(), attempts: 0, last_start: Instant::now() };
    let mut stop_asked = false;
    // Until this run completes a checkpoint of its own, a restart restores what the first
    // attempt did (the one `--from` named, none with `--fresh`, with state `--allow-state-loss`
    // dropped), not whatever is latest in the storage.
    // (Kept in memory only while a restart may need it.)
    let mut first_restore =
        restored.clone().filter(|_| p.restart.as_ref().is_some_and(|r| !matches!(r, crate::spec::Restart::None)));
    let mut completed_any = false;
    loop {
        // Logged once per attempt; the job fails on it however often it is seen.
        let mut lease_lost = false;
        if let Some(r) = &restored {
            let positions: Vec<String> = r
                .manifest
                .splits
                .keys()
                .filter_map(|s| r.manifest.operator(s))
                .flat_map(|o| o.subtasks.iter().map(move |st| format!("{}#{}: {}", o.id, st.subtask, st.meta)))
                .collect();
            log(&format!(
                "restoring checkpoint {} ({}, generation {}) from {}{}",
                r.manifest.id,
                r.manifest.time,
                r.manifest.generation,
                r.location,
                if positions.is_empty() {
                    String::new()
                } else {
                    format!("; source positions: {}", positions.join("; "))
                }
            ));
        }
        // Sinks finish what the restored checkpoint committed, and drop what it does not know.
        if checkpointing.is_some() {
            for (name, sink) in &p.sinks {
                let metas: Vec<&serde_json::Value> = restored
                    .as_ref()
                    .and_then(|r| r.manifest.operator(name))
                    .map(|o| o.subtasks.iter().map(|s| &s.meta).collect())
                    .unwrap_or_default();
                sink.get().recover(name, &metas).map_err(|e| job_error(name, e))?;
            }
        }
        // Splits (such as files) are enumerated once per source and dealt round-robin, so every
        // subtask works from the same list; a restored job gets the checkpoint's list back.
        let mut splits: HashMap<String, Vec<String>> = HashMap::new();
        if test_inputs.is_none() {
            for (name, src) in &p.sources {
                let list = match restored.as_ref().and_then(|r| r.manifest.splits.get(name)) {
                    Some(list) => list.clone(),
                    None => src.get().splits().map_err(|e| job_error(name, e))?,
                };
                splits.insert(name.clone(), list);
            }
        }
        let descriptors = descriptor::build(v, plan, &splits)?;
        let mut master = JobMaster::new(generation, descriptors);
        if let Some(c) = &checkpointing {
            master = master.with_checkpoints(CheckpointSettings { first_id: next_id, ..c.settings.clone() });
        }
        let storage = checkpointing.as_ref().map(|c| c.storage.clone());
        // The restored state is held only until the subtasks have taken theirs (deployment).
        let restored_arc = restored.take().map(Arc::new);
        let mut running_logged = restored_arc.is_none();
        let mut executor = TaskExecutor::new(
            v,
            ExecutorOptions {
                channel_capacity,
                capture_sinks,
                test_inputs: test_inputs.take(),
                storage,
                restored: restored_arc,
            },
        );
        let mut to_executor: VecDeque<ToExecutor> = master.start().into();
        let mut last_progress = Instant::now();
        let attempt_started = Instant::now();
        restarts.last_start = Instant::now();
        loop {
            while let Some(m) = to_executor.pop_front() {
                for reply in executor.handle(transport(m)) {
                    to_executor.extend(master.on_message(transport(reply)));
                }
            }
            if let Some(ready) = master.take_ready() {
                let result = match checkpointing.as_deref_mut() {
                    Some(c) => store_checkpoint(v, plan, c, &ready, generation, &splits, log),
                    None => Ok(()),
                };
                to_executor.extend(master.checkpoint_stored(ready.id, result));
                continue;
            }
            for line in master.take_log() {
                log(&line);
            }
            if !running_logged && master.state() == JobState::Running {
                running_logged = true;
                log(&format!("restored and running in {} ms", attempt_started.elapsed().as_millis()));
            }
            if master.is_terminal() {
                break;
            }
            if cancel.as_ref().is_some_and(|c| c.0.try_recv().is_ok()) {
                stop_asked = true;
                to_executor.extend(master.stop_with_savepoint());
                continue;
            }
            to_executor.extend(master.tick(Instant::now()));
            if let Some(c) = checkpointing.as_deref() {
                for problem in c.keeper.take_problems() {
                    log(&format!("cannot renew the lease of the checkpoint storage: {problem}"));
                }
                // Another run holds the storage now: stop before writing anything more.
                if let Some(why) = c.keeper.lost() {
                    if !lease_lost {
                        lease_lost = true;
                        log(&why);
                    }
                    to_executor.extend(master.fail_now(OperatorError::new(why)));
                }
                // `sluice run --stop-with-savepoint` asks through the storage.
                if c.keeper.take_stop_request() && !stop_asked {
                    log("stopping with a savepoint, as requested");
                    stop_asked = true;
                    to_executor.extend(master.stop_with_savepoint());
                }
            }
            for report in executor.poll(POLL) {
                to_executor.extend(master.on_message(transport(report)));
            }
            if let Some(cb) = on_progress.as_mut().filter(|_| last_progress.elapsed() >= PROGRESS_EVERY) {
                last_progress = Instant::now();
                cb(&stats(plan, master.counters()));
            }
        }
        let captured = executor.shutdown();
        completed_any |= master.completed_checkpoint().is_some();
        if completed_any {
            first_restore = None;
        }
        next_id = next_id.max(master.completed_checkpoint().map_or(0, |c| c + 1)).max(master.next_checkpoint_id());
        if let Some(f) = master.failure() {
            let mut error = f.error.clone();
            let operator = error.operator.take().unwrap_or_default();
            let failure = JobError { operator, subtask: f.subtask.subtask, error };
            let retryable = failure.error.retryable && failure.error.domain != super::ErrorDomain::BadData;
            let delay = if retryable && !stop_asked { restarts.next() } else { None };
            let Some(delay) = delay else { return Err(failure) };
            log(&format!("{failure}; restarting in {delay:?} (restart {})", restarts.attempts));
            // The lease is kept through the wait (its keeper renews it).
            let until = Instant::now() + delay;
            loop {
                if let Some(why) = checkpointing.as_deref().and_then(|c| c.keeper.lost()) {
                    return Err(job_error("checkpoints", OperatorError::new(why)));
                }
                if Instant::now() >= until {
                    break;
                }
                std::thread::sleep((until - Instant::now()).min(Duration::from_millis(100)));
            }
            generation += 1;
            restored = match &checkpointing {
                Some(c) if completed_any => {
                    let mut skipped = Vec::new();
                    let latest = checkpoint::latest(&c.storage, &p.name, &c.fetch, &mut skipped)
                        .map_err(|e| job_error("checkpoints", OperatorError::external(e.to_string(), false)))?;
                    for s in skipped {
                        log(&format!("skipping a checkpoint: {s}"));
                    }
                    latest
                }
                _ => first_restore.clone(),
            };
            continue;
        }
        return Ok(JobResult {
            stats: stats(plan, master.counters()),
            captured,
            elapsed: started.elapsed(),
            stopped: master.cancelled() || stop_asked,
            last_checkpoint: master.completed_checkpoint(),
            restarts: restarts.attempts,
        });
    }
}

/// How often the storage lease is renewed.
const LEASE_RENEWAL: Duration = Duration::from_secs(3);

/// Writes checkpoint `ready`'s manifest (the commit point) and applies retention.
fn store_checkpoint(
    v: &Validated,
    plan: &PhysicalPlan,
    c: &mut Checkpointing,
    ready: &PendingCheckpoint,
    generation: u64,
    splits: &HashMap<String, Vec<String>>,
    log: &mut LogFn,
) -> Result<(), String> {
    let mut by_operator: IndexMap<String, Vec<checkpoint::StateHandle>> = IndexMap::new();
    for handles in ready.acks.values() {
        for h in handles {
            by_operator.entry(h.operator.clone()).or_default().push(h.clone());
        }
    }
    let operators = plan
        .operators
        .iter()
        .filter_map(|o| {
            let mut subtasks = by_operator.shift_remove(&o.id)?;
            subtasks.sort_by_key(|s| s.subtask);
            Some(checkpoint::OperatorEntry {
                id: o.id.clone(),
                parallelism: o.parallelism as usize,
                fingerprint: checkpoint::compat::fingerprint(v, o),
                subtasks,
            })
        })
        .collect();
    let manifest = checkpoint::Manifest {
        format: checkpoint::MANIFEST_FORMAT,
        pipeline: v.pipeline.name.clone(),
        id: ready.id,
        savepoint: ready.savepoint,
        generation,
        time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        duration_ms: ready.started.elapsed().as_millis() as u64,
        max_parallelism: v.pipeline.key_groups(),
        key_hash_version: crate::state::key_hash::KEY_HASH_VERSION,
        operators,
        splits: splits.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    };
    let name = format!("{}/{MANIFEST}", manifest.dir());
    let bytes = serde_json::to_vec_pretty(&manifest).map_err(|e| e.to_string())?;
    match c.storage.put_if_absent(&name, bytes) {
        Ok(true) => checkpoint::crash_point("manifest"),
        Ok(false) => return Err(format!("`{name}` already exists in `{}`", c.storage.url())),
        Err(e) => return Err(e.0),
    }
    if ready.savepoint {
        log(&format!("savepoint {} written to {}/{}", ready.id, c.storage.url().trim_end_matches('/'), manifest.dir()));
    } else if c.verbose {
        log(&format!(
            "checkpoint {} complete: {} bytes of state ({} uploaded) in {} ms",
            ready.id,
            manifest.state_bytes(),
            manifest.new_bytes(),
            manifest.duration_ms
        ));
    }
    if let Err(e) = checkpoint::retain(&c.storage, c.retain, ready.id) {
        log(&format!("cannot remove old checkpoints: {e}"));
    }
    Ok(())
}
