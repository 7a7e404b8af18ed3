//! `make demo` works: the sandbox starts its own control plane and emulator, applies the
//! samples, and the operator binary delivers a Secret whose credentials obtain a token.

use std::path::PathBuf;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_delivers_working_credentials_from_the_samples() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let kubectl = std::env::var_os("KUBECTL")
        .map(PathBuf::from)
        .unwrap_or_else(|| "kubectl".into());
    let result = sandbox::demo::run(sandbox::demo::DemoOptions {
        operator_bin: PathBuf::from(env!("CARGO_BIN_EXE_dcr-operator")),
        repo,
        kubectl,
        once: true,
        timeout: Duration::from_secs(120),
    })
    .await
    .expect("the sandbox runs");
    assert!(result.token_obtained);
    assert!(!result.client_id.is_empty());
    for key in [
        "client_id",
        "client_secret",
        "tenant_id",
        "issuer",
        "token_url",
        "token_url_v1",
        "scope",
    ] {
        assert!(
            result.secret_keys.iter().any(|k| k == key),
            "{key} in {:?}",
            result.secret_keys
        );
    }
}
