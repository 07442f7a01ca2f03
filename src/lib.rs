//! drover: a declarative, stickiness-safe desired-state reconciler for PHP
//! web clusters. The binary (`main.rs`) is a thin shell over this library.

pub mod cli;
pub mod model;
pub mod render;
pub mod spec;
