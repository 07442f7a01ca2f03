//! Configuration drover generates from the spec, so that the topology in the
//! spec and the components that serve it never disagree.
//!
//! *Invariant: pure.* Functions here take the resolved `model::Fleet` and
//! return text or a typed error; they read no file and no clock. Writing the
//! result somewhere is the CLI's job (`drover render`).

pub mod haproxy;

pub use haproxy::{RenderError, haproxy_config};
