//! Operator settings: flags with environment fallbacks and production defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// How logs are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// Flags of `dcr-operator run`.
#[derive(Clone, Debug, clap::Args)]
pub struct RunConfig {
    /// Name of this cluster: part of every provider-side object's unique name and tags, so
    /// several clusters can share one tenant. Lowercase letters, digits and '-', at most 40.
    #[arg(long, env = "DCR_CLUSTER_NAME", default_value = "default", value_parser = parse_cluster_name)]
    pub cluster_name: String,

    /// Kubeconfig file; default: in-cluster config, else $KUBECONFIG, else ~/.kube/config.
    #[arg(long, env = "DCR_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// Namespaces whose Applications are reconciled (comma-separated); empty: all.
    #[arg(long = "namespaces", env = "DCR_NAMESPACES", value_delimiter = ',')]
    pub namespaces: Vec<String>,

    /// Objects of one kind reconciled at the same time.
    #[arg(long, env = "DCR_CONCURRENCY", default_value_t = 4)]
    pub concurrency: u16,

    /// Every object is reconciled at least this often, to repair drift at the provider.
    #[arg(long, env = "DCR_RESYNC_PERIOD", default_value = "10m", value_parser = humantime::parse_duration)]
    pub resync_period: Duration,

    /// Address of the Prometheus metrics endpoint (`/metrics`).
    #[arg(long, env = "DCR_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,

    /// Address of the health endpoints (`/healthz`, `/readyz`).
    #[arg(long, env = "DCR_HEALTH_ADDR", default_value = "0.0.0.0:8081")]
    pub health_addr: SocketAddr,

    /// Log format.
    #[arg(long, env = "DCR_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Extra CA certificates (PEM) trusted for the identity providers' endpoints, e.g. a
    /// TLS-inspecting proxy's CA.
    #[arg(long, env = "DCR_EXTRA_CA_FILE")]
    pub extra_ca_file: Option<PathBuf>,

    /// Name of this instance in Events (the pod name in a cluster).
    #[arg(long, env = "POD_NAME")]
    pub instance: Option<String>,

    /// How long a newly issued secret may take to work at the provider before the operator
    /// reports it (Entra takes seconds to activate a secret).
    #[arg(long, env = "DCR_ACTIVATION_TIMEOUT", default_value = "5m", value_parser = humantime::parse_duration)]
    pub activation_timeout: Duration,
}

fn parse_cluster_name(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 40
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok {
        Ok(s.to_string())
    } else {
        Err("a cluster name is 1-40 lowercase letters, digits or '-', not starting or ending with '-'".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_names_are_restricted_to_what_tags_and_unique_names_accept() {
        assert!(parse_cluster_name("prod-eu-1").is_ok());
        for bad in ["", "Prod", "a b", "-x", "x-", &"a".repeat(41), "a_b"] {
            assert!(parse_cluster_name(bad).is_err(), "{bad:?}");
        }
    }
}
