//! Identity-provider backends.

pub mod azure;
