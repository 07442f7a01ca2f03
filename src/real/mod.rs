//! The real fleet: the adapters that connect the pure planner to machines.
//!
//! - `ssh`: one multiplexed OpenSSH master per node, strict host keys, timeouts, bounded concurrency.
//! - `probe`: a node's whole state in one round trip (`probe.sh`).
//! - `haproxy`: a site LB's runtime API (state, weight, load).
//! - `cache`: memcached `flush_all`.
//! - `health`: HTTP health check against the node itself.
//! - `fleet`: `RealFleet`, observation of the whole fleet and execution of each `Action`.
//! - `journal`: `plan::Memory` persisted write-ahead.
//! - `lease`: one drover per fleet (`flock` on the state directory; a trait for shared stores).
//! - `reconcile`: the `reconcile --once` loop.

pub mod cache;
pub mod fleet;
pub mod haproxy;
pub mod health;
pub mod journal;
pub mod lease;
pub mod probe;
pub mod reconcile;
pub mod ssh;
