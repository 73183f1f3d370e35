//! Integration tests: each runs the real `isco-dag` binary in a temporary project.

mod api;
mod architecture;
mod browser;
mod corrections;
mod encoder;
mod ensemble;
mod errors;
mod freshness;
mod http;
mod interfaces;
mod model;
mod remote;
mod reranker;
mod safety;
mod store;
mod support;
