//! Background reconcilers: each `activate()` re-reads the state it acts on from the database
//! and is idempotent, so any replica may run it at any time, as often as it likes.

pub mod agent_channels;
pub mod disaster_recovery;
pub mod host_liveness;
pub mod snapshot_policies;
pub mod store_gc;
