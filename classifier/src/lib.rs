//! # classifier — ISCO-08 taxonomy, text features, burn networks, inference with fallback
//!
//! | module | job |
//! |---|---|
//! | [`rng`] | seedable SplitMix64 for reproducible shuffles and splits |
//! | [`taxonomy`] | ISCO-08 codes, titles and parent links at 1/2/3/4 digits, read from the ILO, ESCO or isco-dag reference CSV layouts (or codes only, without a file) |
#![warn(missing_docs)]
#![warn(clippy::print_stdout, clippy::print_stderr)]

mod error;
pub mod rng;
pub mod taxonomy;

pub use error::Error;
pub use rng::Rng;
pub use taxonomy::Taxonomy;
