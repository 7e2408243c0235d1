//! The Gateway's upstream side: how it calls nodes — deadlines ([`deadline`]) and retry
//! profiles with a retry throttle and server pushback ([`retry`]).

pub mod deadline;
pub mod retry;
