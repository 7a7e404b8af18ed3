//! The plugin's errors and its exit codes.
//!
//! Exit codes (README "The kubectl plugin"): 0 everything asked about is Ready / every check
//! passed; 1 something is not Ready, a check failed, or a rotation failed; 2 usage (bad
//! flags, clap's own code); 3 the cluster could not be asked (kubeconfig, connection, RBAC,
//! an object not found); 4 `--wait` ran out of time.

use std::path::PathBuf;

/// Everything asked about is Ready, every check passed.
pub const EXIT_OK: u8 = 0;
/// Something is not Ready, a check failed or a rotation failed.
pub const EXIT_NOT_OK: u8 = 1;
/// Bad flags or arguments (clap exits with the same code).
pub const EXIT_USAGE: u8 = 2;
/// The cluster could not be asked: kubeconfig, connection, permissions, not found.
pub const EXIT_API: u8 = 3;
/// `--wait` ran out of time.
pub const EXIT_TIMEOUT: u8 = 4;

/// Why a command could not do its job. Never carries a secret value: the only secret the
/// plugin reads (a credential Secret's `client_secret`) stays in a `SecretString`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading kubeconfig {path}: {source}")]
    Kubeconfig {
        path: PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("loading the kubeconfig: {0}")]
    Config(#[source] kube::config::KubeconfigError),
    #[error("building the Kubernetes client: {0}")]
    Client(#[source] kube::Error),
    #[error("{what}: {source}")]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("{kind} {name} not found")]
    NotFound { kind: &'static str, name: String },
    #[error("{0}")]
    Usage(String),
    #[error("rendering the output: {0}")]
    Render(String),
    #[error("reading {path}: {source}")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing the output: {0}")]
    Write(#[source] std::io::Error),
}

impl Error {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) => EXIT_USAGE,
            Error::Render(_) | Error::Write(_) => EXIT_NOT_OK,
            _ => EXIT_API,
        }
    }

    /// An API call's error, naming what was asked.
    pub fn api(what: impl Into<String>, source: kube::Error) -> Self {
        Error::Api {
            what: what.into(),
            source,
        }
    }
}

/// Whether a kube error is the apiserver's 404.
pub fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Whether a kube error is the apiserver's 403.
pub fn is_forbidden(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 403)
}
