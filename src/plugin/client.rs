//! The Kubernetes client, from the kubeconfig the way kubectl reads it, and the scope
//! (`-n` / `-A`) a command looks at.

use super::cli::GlobalArgs;
use super::error::Error;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use std::time::Duration;

/// Bounds on every API request: a CLI must not hang on a dead apiserver.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Which namespaces a command looks at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    All,
    Namespace(String),
}

impl Scope {
    /// The namespace, or `None` for every namespace.
    pub fn namespace(&self) -> Option<&str> {
        match self {
            Scope::All => None,
            Scope::Namespace(ns) => Some(ns),
        }
    }
}

/// A connected client and the namespaces in scope.
pub struct Target {
    pub client: Client,
    pub scope: Scope,
    /// The namespace for a named object (`-n`, else the context's).
    pub namespace: String,
}

/// Connects as the kubeconfig (`--kubeconfig`, else `$KUBECONFIG`, else `~/.kube/config`)
/// and `--context` say.
pub async fn connect(args: &GlobalArgs) -> Result<Target, Error> {
    let options = KubeConfigOptions {
        context: args.context.clone(),
        ..Default::default()
    };
    let mut config = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path).map_err(|source| Error::Kubeconfig {
                path: path.clone(),
                source,
            })?;
            Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(Error::Config)?
        }
        None => Config::from_kubeconfig(&options).await.map_err(Error::Config)?,
    };
    config.connect_timeout = Some(CONNECT_TIMEOUT);
    config.read_timeout = Some(READ_TIMEOUT);
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let scope = if args.all_namespaces {
        Scope::All
    } else {
        Scope::Namespace(namespace.clone())
    };
    let client = Client::try_from(config).map_err(Error::Client)?;
    Ok(Target {
        client,
        scope,
        namespace,
    })
}
