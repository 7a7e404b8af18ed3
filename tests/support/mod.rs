//! Shared support for the integration tests in `tests/`. Each test binary includes it with
//! `mod support;` and uses what it needs.

pub mod cluster;
pub mod operator;
pub mod scenario;
