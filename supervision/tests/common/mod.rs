//! A scriptable worker actor for supervision tests.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cloudlysis_runtime::mailbox::{ActorProcessingErr, BoundedActor, BoundedRef};
use cloudlysis_supervision::{ChildSpec, SupervisorRef, SupervisorSnapshot};

/// Start and stop events, in order: `start:a`, `stop:a`.
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    pub fn push(&self, s: String) {
        self.0.lock().unwrap().push(s);
    }
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
    pub fn count(&self, s: &str) -> usize {
        self.0.lock().unwrap().iter().filter(|e| *e == s).count()
    }
}

pub enum Cmd {
    Fail,
    Panic,
    Exit,
}

pub struct Worker {
    pub name: String,
    pub log: Log,
    /// Fail right after every start (a crash loop).
    pub crash_on_start: bool,
    /// Sleep this long in post_stop (to test shutdown timeouts).
    pub slow_stop: Option<Duration>,
}

impl BoundedActor for Worker {
    type Msg = Cmd;
    type State = ();
    type Arguments = ();
    const KIND: &'static str = "worker";

    async fn pre_start(&self, me: BoundedRef<Cmd>, _: ()) -> Result<(), ActorProcessingErr> {
        self.log.push(format!("start:{}", self.name));
        if self.crash_on_start {
            let _ = me.try_send(Cmd::Fail);
        }
        Ok(())
    }

    async fn handle(
        &self,
        me: &BoundedRef<Cmd>,
        cmd: Cmd,
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        match cmd {
            Cmd::Fail => Err(format!("{} was told to fail", self.name).into()),
            Cmd::Panic => panic!("{} was told to panic", self.name),
            Cmd::Exit => {
                if let Some(a) = me.actor() {
                    a.stop(Some("done".into()));
                }
                Ok(())
            }
        }
    }

    async fn post_stop(&self, _: &mut ()) -> Result<(), ActorProcessingErr> {
        if let Some(d) = self.slow_stop {
            tokio::time::sleep(d).await;
        }
        self.log.push(format!("stop:{}", self.name));
        Ok(())
    }
}

/// A worker child named `name` behind a fresh mailbox; returns the spec and the mailbox.
pub fn worker(name: &str, log: &Log) -> (ChildSpec, BoundedRef<Cmd>) {
    worker_with(name, log, false, None)
}

pub fn worker_with(
    name: &str,
    log: &Log,
    crash_on_start: bool,
    slow_stop: Option<Duration>,
) -> (ChildSpec, BoundedRef<Cmd>) {
    let mailbox = BoundedRef::new(Worker::KIND, 8);
    let (n, l) = (name.to_string(), log.clone());
    let spec = ChildSpec::bounded(name, mailbox.clone(), move || {
        (
            Worker {
                name: n.clone(),
                log: l.clone(),
                crash_on_start,
                slow_stop,
            },
            (),
        )
    });
    (spec, mailbox)
}

/// Polls `cond` on snapshots of `sup` until it holds (10 s of tokio time).
pub async fn until(
    sup: &SupervisorRef,
    cond: impl Fn(&SupervisorSnapshot) -> bool,
) -> SupervisorSnapshot {
    for _ in 0..1000 {
        if let Ok(s) = sup.snapshot(Duration::from_secs(1)).await
            && cond(&s)
        {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "condition not reached; last snapshot: {:?}",
        sup.snapshot(Duration::from_secs(1)).await
    );
}

/// Waits until the log holds `event` `n` times.
pub async fn until_logged(log: &Log, event: &str, n: usize) {
    for _ in 0..1000 {
        if log.count(event) >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("`{event}` not logged {n} times");
}
