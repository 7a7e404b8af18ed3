//! Shared support for the integration tests in `tests/`. Each test binary includes it with
//! `mod support;` and uses what it needs.

/// Runs an end-to-end scenario `async fn name(test: &str, profile: Profile)` as two tests:
/// against a well-behaved Graph and with lag and throttling (see `scenario::Profile`).
#[allow(unused_macros)]
macro_rules! both_profiles {
    ($scenario:ident) => {
        mod $scenario {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn ideal() {
                super::$scenario(stringify!($scenario), Profile::Ideal).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn lag_and_throttling() {
                super::$scenario(stringify!($scenario), Profile::LagAndThrottling).await
            }
        }
    };
}

pub mod cluster;
pub mod operator;
pub mod prover;
pub mod scenario;
