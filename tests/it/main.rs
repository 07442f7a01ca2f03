//! One integration-test binary (links once): CLI, spec corpus, schema.

mod cli;
mod render;
mod schema;
