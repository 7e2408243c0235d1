//! The Gateway's upstream side: how it calls nodes — deadlines ([`deadline`]), retry profiles
//! with a retry throttle and server pushback ([`retry`]), the node registry's live view and
//! placement ([`placement`], its watcher an actor) and the channel-pool actor ([`pool`]).

pub mod deadline;
pub mod placement;
pub mod pool;
pub mod retry;

/// Aborts a task (an actor's feeder or ticker) when dropped with the actor's state.
#[derive(Debug)]
pub struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
