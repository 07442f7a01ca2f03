//! One integration-test binary (links once): CLI, spec corpus, schema.

mod cli;
mod props;
mod scenarios;
mod schema;
