//! Integration tests: each runs the real `isco-dag` binary in a temporary project.

mod corrections;
mod errors;
mod freshness;
mod model;
mod store;
mod support;
