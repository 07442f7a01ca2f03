//! drover: a declarative, stickiness-safe desired-state reconciler for PHP
//! web clusters. The binary (`main.rs`) is a thin shell over this library.

pub mod cli;
pub mod control;
pub mod daemon;
pub mod diff;
pub mod invariants;
pub mod model;
pub mod observe;
pub mod plan;
pub mod real;
pub mod render;
pub mod sim;
pub mod spec;
pub mod status;
