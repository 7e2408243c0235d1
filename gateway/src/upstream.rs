//! The Gateway's upstream side: how it calls nodes — deadlines ([`deadline`]), retry profiles
//! with a retry throttle and server pushback ([`retry`]), the node registry's live view and
//! placement ([`placement`]) and the channel pool ([`pool`]).

pub mod deadline;
pub mod placement;
pub mod pool;
pub mod retry;
