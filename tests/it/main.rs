//! One integration-test binary (links once): CLI, spec corpus, schema, and
//! the real test fleet (`fleet`: sshd, HAProxy, memcached, rsync on loopback).

mod cli;
mod conventions;
mod corpus;
mod daemon_proc;
mod daemon_sim;
mod dist;
mod examples;
mod fleet;
mod fuzz;
mod hooks_sim;
mod layering;
mod props;
mod render;
mod scenarios;
mod schema;
