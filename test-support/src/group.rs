//! Child processes that start processes of their own: `cloudlysis dev` runs its own
//! nats-server, and a test that kills only `dev` (tokio's `kill_on_drop` at the end of the test)
//! would leave that server running after the test. Spawn such a child in a process group of its
//! own (`.process_group(0)`) and hold a [`KillGroupOnDrop`] beside it.

use rustix::process::{Pid, Signal, kill_process_group};

/// Kills the process group led by a child (the child and everything it started) when dropped.
#[derive(Debug)]
pub struct KillGroupOnDrop(Option<Pid>);

impl KillGroupOnDrop {
    /// Guards the group of `child`, which must have been spawned with `.process_group(0)`.
    pub fn of(child: &tokio::process::Child) -> Self {
        Self(child.id().and_then(|id| Pid::from_raw(id as i32)))
    }
}

impl Drop for KillGroupOnDrop {
    fn drop(&mut self) {
        if let Some(group) = self.0 {
            // Gone already (the test stopped it cleanly): nothing to do.
            let _ = kill_process_group(group, Signal::KILL);
        }
    }
}
