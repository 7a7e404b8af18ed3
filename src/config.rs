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

    /// Namespaces a DcrProvider's admin Secret may be in (comma-separated); default: the
    /// operator's own ($POD_NAMESPACE, else dcr-system). A provider whose
    /// `spec.initialClient.clientSecretRef.namespace` is another is refused and its Secret
    /// never read. Install-time: the RBAC grants Secret reads in exactly these.
    #[arg(
        long = "provider-secret-namespaces",
        env = "DCR_PROVIDER_SECRET_NAMESPACES",
        value_delimiter = ','
    )]
    pub provider_secret_namespaces: Vec<String>,

    /// The federated token for DcrProviders with `spec.initialClient.federatedToken`
    /// (workload identity): a projected ServiceAccount token with audience
    /// `api://AzureADTokenExchange`, re-read at every token request as the kubelet rotates
    /// it. Defaults to azure-workload-identity's `AZURE_FEDERATED_TOKEN_FILE` and path.
    #[arg(
        long,
        env = "AZURE_FEDERATED_TOKEN_FILE",
        default_value = "/var/run/secrets/azure/tokens/azure-identity-token"
    )]
    pub federated_token_file: PathBuf,

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

    /// `/healthz` fails once a controller's watch has kept failing this long without an
    /// event (or at once when a controller stream ended), so that the kubelet restarts a
    /// stuck process. 1s to 1h.
    #[arg(long, env = "DCR_UNHEALTHY_AFTER", default_value = "2m", value_parser = parse_unhealthy_after)]
    pub unhealthy_after: Duration,

    /// Secret in the operator's namespace holding the key that signs the credential record
    /// of every credential Secret; created with a random key if missing.
    #[arg(
        long,
        env = "DCR_RECORD_KEY_SECRET",
        default_value = "dcr-operator-record-key"
    )]
    pub record_key_secret: String,

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

    /// Reconcile only while holding a Lease (coordination.k8s.io/v1), so that of several
    /// replicas one reconciles and the others stand by. Off by default for local runs; the
    /// Deployment and the Helm chart turn it on.
    #[arg(long, env = "DCR_LEADER_ELECT")]
    pub leader_elect: bool,

    /// The operator's own namespace (leader-election Lease, record key Secret); default:
    /// $POD_NAMESPACE, else dcr-system.
    #[arg(long, env = "DCR_LEADER_ELECTION_NAMESPACE")]
    pub leader_election_namespace: Option<String>,

    /// Name of the leader-election Lease.
    #[arg(long, env = "DCR_LEADER_ELECTION_LEASE_NAME", default_value = "dcr-operator")]
    pub leader_election_lease_name: String,

    /// How long a Lease stays valid after its last renewal: a standby takes over this long
    /// after a leader died without releasing it.
    #[arg(long, env = "DCR_LEADER_ELECTION_LEASE_DURATION", default_value = "15s", value_parser = humantime::parse_duration)]
    pub leader_election_lease_duration: Duration,

    /// A leader that could not renew its Lease for this long stops (exits with status 1).
    /// Shorter than the lease duration.
    #[arg(long, env = "DCR_LEADER_ELECTION_RENEW_DEADLINE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub leader_election_renew_deadline: Duration,

    /// How often the leader renews and a standby retries. Shorter than the renew deadline.
    #[arg(long, env = "DCR_LEADER_ELECTION_RETRY_PERIOD", default_value = "2s", value_parser = humantime::parse_duration)]
    pub leader_election_retry_period: Duration,
}

/// Namespace the operator runs in when `POD_NAMESPACE` does not say.
pub const DEFAULT_NAMESPACE: &str = "dcr-system";

/// Most namespaces `--provider-secret-namespaces` may list (one watch each).
pub const MAX_PROVIDER_SECRET_NAMESPACES: usize = 32;

impl RunConfig {
    /// The namespace of the Lease and the record key: the flag, else `POD_NAMESPACE`, else
    /// `dcr-system`.
    pub fn operator_namespace(&self) -> String {
        self.leader_election_namespace
            .clone()
            .or_else(|| std::env::var("POD_NAMESPACE").ok().filter(|s| !s.is_empty()))
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string())
    }

    /// The namespaces provider admin Secrets may be read from: the flag's, else the
    /// operator's own.
    pub fn provider_secret_namespaces(&self) -> Vec<String> {
        if !self.provider_secret_namespaces.is_empty() {
            return self.provider_secret_namespaces.clone();
        }
        let own = std::env::var("POD_NAMESPACE")
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
        vec![own]
    }

    /// Checks what single flags cannot: the leader-election timing must leave a leader time
    /// to stop before anybody else may take its Lease over.
    pub fn validate(&self) -> Result<(), String> {
        self.validate_provider_secret_namespaces()?;
        let (lease, renew, retry) = (
            self.leader_election_lease_duration,
            self.leader_election_renew_deadline,
            self.leader_election_retry_period,
        );
        if lease < Duration::from_secs(1) || lease.subsec_nanos() != 0 {
            return Err(format!(
                "--leader-election-lease-duration must be whole seconds, at least 1s (got {lease:?})"
            ));
        }
        if !(retry > Duration::ZERO && retry < renew && renew < lease) {
            return Err(format!(
                "leader election needs retry period < renew deadline < lease duration (got {retry:?}, {renew:?}, {lease:?})"
            ));
        }
        Ok(())
    }
}

fn parse_unhealthy_after(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if (Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&d) {
        Ok(d)
    } else {
        Err("--unhealthy-after must be between 1s and 1h".into())
    }
}

impl RunConfig {
    fn validate_provider_secret_namespaces(&self) -> Result<(), String> {
        let listed = &self.provider_secret_namespaces;
        if listed.len() > MAX_PROVIDER_SECRET_NAMESPACES {
            return Err(format!(
                "--provider-secret-namespaces lists {} namespaces; at most {MAX_PROVIDER_SECRET_NAMESPACES} are allowed",
                listed.len()
            ));
        }
        match listed.iter().find(|ns| !is_dns_label(ns)) {
            Some(bad) => Err(format!(
                "--provider-secret-namespaces: {bad:?} is not a namespace name (1-63 of a-z, 0-9, '-')"
            )),
            None => Ok(()),
        }
    }
}

/// An RFC 1123 label, as namespace names are.
fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
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

    fn run_config(args: &[&str]) -> RunConfig {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            run: RunConfig,
        }
        let argv = std::iter::once("dcr-operator").chain(args.iter().copied());
        <Cli as clap::Parser>::try_parse_from(argv).unwrap().run
    }

    #[test]
    fn leader_election_is_off_by_default_with_client_go_timing() {
        let c = run_config(&[]);
        assert!(!c.leader_elect);
        assert_eq!(c.leader_election_lease_name, "dcr-operator");
        assert_eq!(c.leader_election_lease_duration, Duration::from_secs(15));
        assert_eq!(c.leader_election_renew_deadline, Duration::from_secs(10));
        assert_eq!(c.leader_election_retry_period, Duration::from_secs(2));
        assert!(c.validate().is_ok());
        assert!(run_config(&["--leader-elect"]).leader_elect);
    }

    #[test]
    fn leader_election_timing_must_let_a_leader_stop_before_its_lease_expires() {
        for bad in [
            ["--leader-election-renew-deadline", "15s"],
            ["--leader-election-retry-period", "10s"],
            ["--leader-election-lease-duration", "1500ms"],
            ["--leader-election-retry-period", "0s"],
        ] {
            assert!(run_config(&bad).validate().is_err(), "{bad:?}");
        }
        let ok = run_config(&[
            "--leader-election-lease-duration",
            "4s",
            "--leader-election-renew-deadline",
            "3s",
            "--leader-election-retry-period",
            "500ms",
        ]);
        assert!(ok.validate().is_ok());
    }

    #[test]
    fn provider_secret_namespaces_default_to_the_operators_own_and_are_checked() {
        let own = run_config(&[]).provider_secret_namespaces();
        assert_eq!(own.len(), 1);
        let listed = run_config(&["--provider-secret-namespaces", "dcr-system,idp-admin"]);
        assert_eq!(listed.provider_secret_namespaces(), ["dcr-system", "idp-admin"]);
        assert!(listed.validate().is_ok());
        for bad in ["Upper", "a_b", "-x", "a.b"] {
            let c = run_config(&[&format!("--provider-secret-namespaces={bad}")]);
            assert!(c.validate().is_err(), "{bad:?}");
        }
        let many = vec!["ns"; MAX_PROVIDER_SECRET_NAMESPACES + 1].join(",");
        assert!(run_config(&["--provider-secret-namespaces", &many])
            .validate()
            .is_err());
    }

    #[test]
    fn cluster_names_are_restricted_to_what_tags_and_unique_names_accept() {
        assert!(parse_cluster_name("prod-eu-1").is_ok());
        for bad in ["", "Prod", "a b", "-x", "x-", &"a".repeat(41), "a_b"] {
            assert!(parse_cluster_name(bad).is_err(), "{bad:?}");
        }
    }
}
