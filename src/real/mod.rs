//! The real fleet: the adapters that connect the pure planner to machines.
//!
//! - `ssh`: one multiplexed OpenSSH master per node, strict host keys, timeouts, bounded concurrency.
//! - `probe`: a node's whole state in one round trip (`probe.sh`).
//! - `haproxy`: a site LB's runtime API (state, weight, load).
//! - `cache`: memcached `flush_all`.
//! - `health`: HTTP health check against the node itself.
//! - `hooks`: a release's migration hooks and a switched node's warm-up (README, "Release hooks: the contract").
//! - `fleet`: `RealFleet`, observation of the whole fleet and execution of each `Action`.
//! - `snapshot`: root filesystem snapshots before disruptive upgrades (LVM, Btrfs, a hook) and the operator's rollback.
//!
//! The loop that drives them is `crate::control` (its journal and lease too).

pub mod cache;
pub mod fleet;
pub mod haproxy;
pub mod health;
pub mod hooks;
pub mod probe;
pub mod snapshot;
pub mod ssh;
