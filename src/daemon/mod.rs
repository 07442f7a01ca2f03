//! `drover reconcile` without `--once`: the daemon. It follows the spec
//! (a watched directory or a Git branch), keeps the fleet converged with the
//! same planner and journal as `--once`, repairs drift, and serves its
//! state over HTTP on localhost.
//!
//! - `state`: the status document and the shared state of loop and endpoints.
//! - `metrics`: Prometheus metrics.
//! - `http`: the endpoints on localhost (`/healthz`, `/readyz`, `/metrics`, `/status`).

pub mod http;
pub mod metrics;
pub mod state;
