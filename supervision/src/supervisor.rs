//! The supervisor actor.
//!
//! Children start in order and stop in reverse order, each within its shutdown timeout (then it
//! is killed). A child that stops is handled by its [`Restart`] type and the supervisor's
//! [`Strategy`]; restarts wait for the child's [`Backoff`]; more restarts than the
//! [`Intensity`] allows make the supervisor stop every child and fail, so its own supervisor
//! sees the failure (escalation).
//!
//! Children may be added and removed at run time ([`SupervisorRef::start_child`],
//! [`SupervisorRef::stop_child`]): one per entity, for example.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, SystemTime};

use metrics::counter;
use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent,
};
use tokio::time::Instant;

use cloudlysis_runtime::metrics::names;

use crate::error::SupervisorError;
use crate::policy::{Backoff, Intensity, Restart, Strategy};
use crate::snapshot::{ChildSnapshot, Status, SupervisorSnapshot, rfc3339};
use crate::spec::{ChildSpec, MailboxProbe, Started};

mod children;

use children::{Children, Seq};

/// How long calls on a [`SupervisorRef`] wait for the supervisor by default.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything a supervisor needs to start.
#[derive(Clone, Debug)]
pub struct SupervisorConfig {
    /// Name (snapshot and metric label: keep it a bounded, static-like name).
    pub name: String,
    /// Restart strategy.
    pub strategy: Strategy,
    /// Restart intensity.
    pub intensity: Intensity,
    /// Restart backoff.
    pub backoff: Backoff,
    /// Children, in start order.
    pub children: Vec<ChildSpec>,
}

impl SupervisorConfig {
    /// A one-for-one supervisor with default intensity and backoff and no children.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            strategy: Strategy::default(),
            intensity: Intensity::default(),
            backoff: Backoff::default(),
            children: Vec::new(),
        }
    }

    /// Sets the strategy.
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// Sets the intensity.
    pub fn intensity(mut self, max_restarts: u32, within: Duration) -> Self {
        self.intensity = Intensity {
            max_restarts,
            within,
        };
        self
    }

    /// Sets the backoff.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Adds a child (started after the ones added before).
    pub fn child(mut self, spec: ChildSpec) -> Self {
        self.children.push(spec);
        self
    }
}

/// Messages a supervisor handles.
pub enum SupervisorMsg {
    /// Adds and starts a child.
    StartChild(ChildSpec, RpcReplyPort<Result<(), SupervisorError>>),
    /// Stops and removes a child.
    StopChild(String, RpcReplyPort<Result<(), SupervisorError>>),
    /// Reports the tree.
    Snapshot(RpcReplyPort<SupervisorSnapshot>),
    /// Internal: the backoff of a restart elapsed.
    Restart {
        /// Children to start, in order, with the restart generation that scheduled them; a
        /// child that joined a later restart group since is skipped here.
        children: Vec<(String, u64)>,
    },
}

/// A handle to a running supervisor.
#[derive(Clone, Debug)]
pub struct SupervisorRef {
    name: String,
    actor: ActorRef<SupervisorMsg>,
}

impl SupervisorRef {
    /// Starts a supervisor and its children (in order), linked to `parent` when given. Fails when
    /// a child fails to start; the children started so far are stopped.
    pub async fn start(
        config: SupervisorConfig,
        parent: Option<ActorCell>,
    ) -> Result<Self, SupervisorError> {
        let name = config.name.clone();
        let spawned = match parent {
            Some(p) => Actor::spawn_linked(None, Supervisor, config, p).await,
            None => Actor::spawn(None, Supervisor, config).await,
        };
        match spawned {
            Ok((actor, _)) => Ok(Self { name, actor }),
            Err(e) => Err(SupervisorError::StartFailed {
                supervisor: name.clone(),
                child: name,
                reason: e.to_string(),
            }),
        }
    }

    /// The supervisor's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The supervisor's actor cell.
    pub fn cell(&self) -> ActorCell {
        self.actor.get_cell()
    }

    /// True until the supervisor starts stopping (or has failed).
    pub fn is_running(&self) -> bool {
        use ractor::ActorStatus::*;
        matches!(
            self.actor.get_status(),
            Unstarted | Starting | Running | Upgrading
        )
    }

    /// Adds and starts a child.
    pub async fn start_child(&self, spec: ChildSpec) -> Result<(), SupervisorError> {
        self.call(|r| SupervisorMsg::StartChild(spec, r), CALL_TIMEOUT)
            .await?
    }

    /// Stops (within its shutdown timeout) and removes a child.
    pub async fn stop_child(&self, name: &str) -> Result<(), SupervisorError> {
        let name = name.to_string();
        self.call(|r| SupervisorMsg::StopChild(name, r), CALL_TIMEOUT)
            .await?
    }

    /// The tree below this supervisor.
    pub async fn snapshot(&self, timeout: Duration) -> Result<SupervisorSnapshot, SupervisorError> {
        self.call(SupervisorMsg::Snapshot, timeout).await
    }

    /// Stops the supervisor: children stop in reverse start order, each within its timeout.
    pub async fn shutdown(&self, timeout: Duration) -> Result<(), SupervisorError> {
        self.actor
            .stop_and_wait(Some("shutdown".into()), Some(timeout))
            .await
            .map_err(|_| SupervisorError::Timeout {
                supervisor: self.name.clone(),
                timeout,
            })
    }

    async fn call<R: Send + 'static>(
        &self,
        build: impl FnOnce(RpcReplyPort<R>) -> SupervisorMsg,
        timeout: Duration,
    ) -> Result<R, SupervisorError> {
        let (tx, rx) = ractor::concurrency::oneshot();
        self.actor
            .cast(build(tx.into()))
            .map_err(|_| SupervisorError::NotRunning {
                supervisor: self.name.clone(),
            })?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(_)) => Err(SupervisorError::NotRunning {
                supervisor: self.name.clone(),
            }),
            Err(_) => Err(SupervisorError::Timeout {
                supervisor: self.name.clone(),
                timeout,
            }),
        }
    }
}

/// The supervisor actor (start it with [`SupervisorRef::start`]).
pub struct Supervisor;

/// One child's live state.
struct Child {
    spec: ChildSpec,
    cell: Option<ActorCell>,
    mailbox: Option<MailboxProbe>,
    supervisor: Option<SupervisorRef>,
    status: Status,
    restarts: u64,
    last_failure: Option<(String, SystemTime)>,
    backoff_attempt: u32,
    last_start: Option<Instant>,
    restart_generation: u64,
}

/// The supervisor's state.
pub struct SupervisorState {
    config: SupervisorConfig,
    children: Children,
    restart_times: VecDeque<Instant>,
    restarts: u64,
    /// Children being stopped on purpose; their exit events are not failures.
    stopping: HashSet<ActorId>,
    /// Source of restart generations.
    generations: u64,
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorConfig;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        config: SupervisorConfig,
    ) -> Result<Self::State, ActorProcessingErr> {
        counter!(names::SUPERVISOR_ESCALATIONS, "supervisor" => config.name.clone()).increment(0);
        let specs = config.children.clone();
        let mut state = SupervisorState {
            config,
            children: Children::default(),
            restart_times: VecDeque::new(),
            restarts: 0,
            stopping: HashSet::new(),
            generations: 0,
        };
        for spec in specs {
            let mut child = Child::new(&state.config.name, spec);
            if let Err(e) = start(&myself, &mut child).await {
                // Like OTP: a child that cannot start makes the supervisor's start fail; the
                // children already started are stopped in reverse order.
                stop_all(&mut state).await;
                return Err(e.into());
            }
            state.children.push(child);
        }
        Ok(state)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        stop_all(state).await;
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::StartChild(spec, reply) => {
                let result = if state.children.contains(&spec.name) {
                    Err(SupervisorError::DuplicateChild {
                        supervisor: state.config.name.clone(),
                        child: spec.name,
                    })
                } else {
                    let mut child = Child::new(&state.config.name, spec);
                    let r = start(&myself, &mut child).await.map_err(|reason| {
                        SupervisorError::StartFailed {
                            supervisor: state.config.name.clone(),
                            child: child.spec.name.clone(),
                            reason,
                        }
                    });
                    if r.is_ok() {
                        state.children.push(child);
                    }
                    r
                };
                let _ = reply.send(result);
            }
            SupervisorMsg::StopChild(name, reply) => {
                let result = match state
                    .children
                    .seq_of(&name)
                    .and_then(|seq| state.children.remove(seq))
                {
                    Some(mut child) => {
                        stop_child(&mut state.stopping, &mut child).await;
                        Ok(())
                    }
                    None => Err(SupervisorError::NoSuchChild {
                        supervisor: state.config.name.clone(),
                        child: name,
                    }),
                };
                let _ = reply.send(result);
            }
            SupervisorMsg::Snapshot(reply) => {
                // Nested supervisors are asked concurrently, off this actor, so a slow subtree
                // never holds up restarts here.
                let snapshot = snapshot(state);
                tokio::spawn(async move {
                    let _ = reply.send(snapshot.await);
                });
            }
            SupervisorMsg::Restart { children } => {
                for (name, generation) in children {
                    let Some(seq) = state.children.seq_of(&name) else {
                        continue;
                    };
                    let Some(child) = state.children.get_mut(seq) else {
                        continue;
                    };
                    if child.status != Status::Restarting || child.restart_generation != generation
                    {
                        continue;
                    }
                    let started = start(&myself, child).await;
                    state.children.started(seq);
                    if let Err(reason) = started {
                        // A failed restart counts as another failure of the same child.
                        on_child_down(&myself, state, seq, Down::Failed(reason))?;
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, down) = match event {
            SupervisionEvent::ActorFailed(cell, err) => (cell, Down::Failed(err.to_string())),
            SupervisionEvent::ActorTerminated(cell, _, reason) => (cell, Down::Exited(reason)),
            _ => return Ok(()),
        };
        let seq = state.children.actor_down(&cell.get_id());
        if state.stopping.remove(&cell.get_id()) {
            return Ok(());
        }
        let Some(seq) = seq else {
            return Ok(());
        };
        match state.children.get_mut(seq) {
            Some(c) if c.cell.as_ref().is_some_and(|c| c.get_id() == cell.get_id()) => {
                c.cell = None;
            }
            _ => return Ok(()),
        }
        on_child_down(&myself, state, seq, down)?;
        // The failure may have escalated: children are stopped inside on_child_down; make the
        // ractor-level stop explicit so the parent sees a failure, not a hang.
        Ok(())
    }
}

/// How a child went down.
/// The `reason` labels of `cloudlysis_actor_restarts_total`.
const RESTART_REASONS: [&str; 3] = ["panic", "error", "exit"];

enum Down {
    /// Failed (error or panic), with the reason.
    Failed(String),
    /// Stopped normally, with an optional reason.
    Exited(Option<String>),
}

impl Child {
    /// The restart counters of a child that can be restarted exist (at 0) from its first start.
    /// Temporary children are never restarted (and may be many: entities, instances).
    fn register_restart_series(supervisor: &str, spec: &ChildSpec) {
        if spec.restart == Restart::Temporary {
            return;
        }
        for reason in RESTART_REASONS {
            counter!(names::ACTOR_RESTARTS, "supervisor" => supervisor.to_string(), "child_kind" => spec.kind, "reason" => reason)
                .increment(0);
        }
    }

    fn new(supervisor: &str, spec: ChildSpec) -> Self {
        Self::register_restart_series(supervisor, &spec);
        Self {
            spec,
            cell: None,
            mailbox: None,
            supervisor: None,
            status: Status::Stopped,
            restarts: 0,
            last_failure: None,
            backoff_attempt: 0,
            last_start: None,
            restart_generation: 0,
        }
    }
}

async fn start(myself: &ActorRef<SupervisorMsg>, child: &mut Child) -> Result<(), String> {
    let Started {
        cell,
        mailbox,
        supervisor,
    } = (child.spec.start)(myself.get_cell()).await?;
    child.cell = Some(cell);
    child.mailbox = mailbox;
    child.supervisor = supervisor;
    child.status = Status::Running;
    child.last_start = Some(Instant::now());
    Ok(())
}

/// Decides what happens after child `i` went down (its cell is already cleared).
fn on_child_down(
    myself: &ActorRef<SupervisorMsg>,
    state: &mut SupervisorState,
    i: Seq,
    down: Down,
) -> Result<(), ActorProcessingErr> {
    let sup_name = state.config.name.clone();
    let Some(child) = state.children.get_mut(i) else {
        return Ok(());
    };
    // A failed restart attempt is not a stable run: only a child that was running may reset
    // its backoff.
    let was_running = child.status == Status::Running;
    let (restart, reason_label, reason) = match (&down, child.spec.restart) {
        (_, Restart::Temporary) => (false, "", String::new()),
        (Down::Exited(_), Restart::Transient) => (false, "", String::new()),
        (Down::Failed(r), _) => (
            true,
            if r.starts_with("panicked") {
                "panic"
            } else {
                "error"
            },
            r.clone(),
        ),
        (Down::Exited(r), Restart::Permanent) => (
            true,
            "exit",
            format!("exited: {}", r.as_deref().unwrap_or("normal")),
        ),
    };
    if !restart {
        tracing::debug!(supervisor = %sup_name, child = %child.spec.name, "child stopped, not restarted");
        state.children.remove(i);
        return Ok(());
    }
    tracing::warn!(supervisor = %sup_name, child = %child.spec.name, %reason, "child down, restarting");
    child.last_failure = Some((reason.clone(), SystemTime::now()));

    // Intensity: too many restarts in the window → stop everything and fail.
    let now = Instant::now();
    let window = state.config.intensity.within;
    state.restart_times.push_back(now);
    while state
        .restart_times
        .front()
        .is_some_and(|t| now.duration_since(*t) > window)
    {
        state.restart_times.pop_front();
    }
    if state.restart_times.len() as u64 > u64::from(state.config.intensity.max_restarts) {
        counter!(names::SUPERVISOR_ESCALATIONS, "supervisor" => sup_name.clone()).increment(1);
        let failed = child.spec.name.clone();
        for c in state.children.iter_mut() {
            c.status = Status::Failed;
        }
        // Children stop in reverse order; ractor kills whatever is left when we fail.
        for c in state.children.iter_mut().rev() {
            if let Some(cell) = c.cell.take() {
                state.stopping.insert(cell.get_id());
                cell.kill();
            }
        }
        return Err(format!(
            "supervisor `{sup_name}` exceeded its restart intensity ({} restarts within {:?}); \
             last failure of `{failed}`: {reason}",
            state.config.intensity.max_restarts, state.config.intensity.within
        )
        .into());
    }

    counter!(names::ACTOR_RESTARTS, "supervisor" => sup_name.clone(), "child_kind" => child.spec.kind, "reason" => reason_label)
        .increment(1);

    // Which children restart with it.
    let group: Vec<Seq> = match state.config.strategy {
        Strategy::OneForOne => vec![i],
        Strategy::OneForAll => state.children.seqs(),
        Strategy::RestForOne => state.children.seqs_from(i),
    };
    // Stop the others in reverse start order. We are inside the supervisor's event handler, so
    // the stops are not awaited here; a watchdog kills a sibling that has not stopped within
    // its shutdown timeout. Their exit events are ignored.
    for &j in group.iter().rev() {
        if j == i {
            continue;
        }
        let Some(c) = state.children.get_mut(j) else {
            continue;
        };
        if let Some(cell) = c.cell.take() {
            state.stopping.insert(cell.get_id());
            cell.stop(Some("sibling restart".into()));
            let timeout = c.spec.shutdown;
            tokio::spawn(async move {
                let deadline = Instant::now() + timeout;
                while cell.get_status() != ractor::ActorStatus::Stopped {
                    if Instant::now() >= deadline {
                        cell.kill();
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            });
        }
    }
    state.generations += 1;
    let generation = state.generations;
    let mut names = Vec::new();
    let mut remove = Vec::new();
    for &j in &group {
        let Some(c) = state.children.get_mut(j) else {
            continue;
        };
        if j != i && c.spec.restart == Restart::Temporary {
            remove.push(j);
            continue;
        }
        c.status = Status::Restarting;
        c.restarts += 1;
        c.restart_generation = generation;
        names.push((c.spec.name.clone(), generation));
    }
    state.restarts += 1;
    let Some(child) = state.children.get_mut(i) else {
        return Ok(());
    };
    let backoff = state.config.backoff;
    if was_running
        && child
            .last_start
            .is_some_and(|t| now.duration_since(t) >= backoff.reset_after)
    {
        child.backoff_attempt = 0;
    }
    let delay = backoff.delay(child.backoff_attempt, rand::random::<f64>());
    child.backoff_attempt = child.backoff_attempt.saturating_add(1);
    for j in remove.into_iter().rev() {
        state.children.remove(j);
    }
    if delay.is_zero() {
        myself
            .cast(SupervisorMsg::Restart { children: names })
            .map_err(|_| "supervisor mailbox closed")?;
    } else {
        myself.send_after(delay, move || SupervisorMsg::Restart { children: names });
    }
    Ok(())
}

/// Stops one child within its shutdown timeout, killing it after.
async fn stop_child(stopping: &mut HashSet<ActorId>, child: &mut Child) {
    if let Some(cell) = child.cell.take() {
        stopping.insert(cell.get_id());
        if cell
            .stop_and_wait(Some("shutdown".into()), Some(child.spec.shutdown))
            .await
            .is_err()
        {
            tracing::warn!(child = %child.spec.name, timeout = ?child.spec.shutdown, "child did not stop in time; killing it");
            let _ = cell.kill_and_wait(Some(Duration::from_secs(1))).await;
        }
    }
    child.status = Status::Stopped;
}

/// Stops every child in reverse start order.
async fn stop_all(state: &mut SupervisorState) {
    for child in state.children.iter_mut().rev() {
        stop_child(&mut state.stopping, child).await;
    }
}

fn snapshot(
    state: &SupervisorState,
) -> impl std::future::Future<Output = SupervisorSnapshot> + Send + 'static {
    let mut children = Vec::with_capacity(state.children.len());
    let mut nested = Vec::new();
    for c in state.children.iter() {
        if let (Some(sup), Status::Running) = (&c.supervisor, c.status) {
            nested.push(sup.clone());
        }
        children.push(ChildSnapshot {
            name: c.spec.name.clone(),
            kind: c.spec.kind.to_string(),
            status: c.status,
            restarts: c.restarts,
            last_failure: c.last_failure.as_ref().map(|(r, _)| r.clone()),
            last_failure_at: c.last_failure.as_ref().map(|(_, t)| rfc3339(*t)),
            mailbox: c.mailbox.as_ref().map(|probe| probe()),
        });
    }
    let name = state.config.name.clone();
    let strategy = state.config.strategy.as_str().to_string();
    let restarts = state.restarts;
    async move {
        // A nested supervisor that does not answer within 1 s is left out of the tree.
        let supervisors = futures::future::join_all(
            nested
                .iter()
                .map(|sup| sup.snapshot(Duration::from_secs(1))),
        )
        .await
        .into_iter()
        .filter_map(Result::ok)
        .collect();
        SupervisorSnapshot {
            name,
            strategy,
            status: Status::Running,
            restarts,
            children,
            supervisors,
        }
    }
}
