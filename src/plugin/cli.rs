//! Command-line arguments: kubectl's connection flags, `-o`, and one subcommand each.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

/// Longest `--timeout` accepted: a wait is for a person at a terminal or a CI step.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);
/// Most Events `explain` shows per object.
pub const MAX_EVENTS: usize = 50;

/// See, explain, rotate and check dcr-operator credentials (`kubectl dcr`).
#[derive(Parser, Debug)]
#[command(name = "kubectl-dcr", version = super::VERSION)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every subcommand takes, spelled like kubectl's.
#[derive(Args, Debug, Clone)]
pub struct GlobalArgs {
    /// Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long, global = true, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current context).
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    /// Namespace (default: the context's namespace, else `default`).
    #[arg(short = 'n', long, global = true, value_name = "NS")]
    pub namespace: Option<String>,
    /// Every namespace.
    #[arg(
        short = 'A',
        long = "all-namespaces",
        global = true,
        conflicts_with = "namespace"
    )]
    pub all_namespaces: bool,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Format::Text)]
    pub output: Format,
}

/// How results are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
    Yaml,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// A tree provider -> strategies -> applications: Ready and reason, client id, expiry,
    /// orphans, throttling. Exit 1 when anything shown is not Ready.
    Status,
    /// Walk an object's chain (Application -> AuthStrategy -> DcrProvider -> admin Secret)
    /// and say what is wrong and what to do. Exit 1 when it is not Ready.
    Explain {
        #[arg(value_enum)]
        kind: ExplainKind,
        name: String,
        /// Most recent Events shown per object of the chain.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(0..=MAX_EVENTS as i64))]
        events: u16,
    },
    /// Ask for a new secret now (the `dcr-operator.io/rotate` annotation).
    Rotate {
        name: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Compromise response: a new secret, every other one revoked without grace (the
    /// `dcr-operator.io/revoke-all` annotation, set to the reason).
    RevokeAll {
        name: String,
        /// Why (an incident id): the annotation's value. A new value is a new request.
        #[arg(long, value_name = "TEXT")]
        reason: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Read the credential Secret with your own permissions and obtain a token at its
    /// token_url (client_credentials). Exit 1 when a check fails.
    Check {
        /// The Application (or use --all).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        name: Option<String>,
        /// Every Application in the namespace (or every namespace with -A).
        #[arg(long)]
        all: bool,
        /// Extra CA (PEM) to trust for the token endpoint, e.g. a TLS-inspecting proxy's or
        /// a test IdP's.
        #[arg(long, env = "KUBECTL_DCR_CA_FILE", value_name = "PEM")]
        ca_file: Option<PathBuf>,
        /// Scope to ask for (default: the Secret's `scope`).
        #[arg(long)]
        scope: Option<String>,
        /// Time allowed per token request.
        #[arg(long, default_value = "15s", value_parser = parse_request_timeout)]
        request_timeout: Duration,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// What `explain` explains.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ExplainKind {
    #[value(alias = "app", alias = "applications", alias = "dcrapp")]
    Application,
}

/// `--wait` and `--timeout`.
#[derive(Args, Debug, Clone, Copy)]
pub struct WaitArgs {
    /// Wait until the operator completed the request (or it failed).
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits (at most 1h).
    #[arg(long, default_value = "5m", value_parser = parse_timeout)]
    pub timeout: Duration,
}

fn parse_bounded(s: &str, max: Duration) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d.is_zero() || d > max {
        return Err(format!(
            "must be more than 0s and at most {}",
            humantime::format_duration(max)
        ));
    }
    Ok(d)
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    parse_bounded(s, MAX_TIMEOUT)
}

fn parse_request_timeout(s: &str) -> Result<Duration, String> {
    parse_bounded(s, Duration::from_secs(300))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_arguments_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn timeouts_are_bounded() {
        assert!(parse_timeout("0s").is_err());
        assert!(parse_timeout("2h").is_err());
        assert!(parse_timeout("1e9h").is_err());
        assert_eq!(parse_timeout("90s"), Ok(Duration::from_secs(90)));
    }

    #[test]
    fn check_needs_a_name_or_all() {
        assert!(Cli::try_parse_from(["kubectl-dcr", "check"]).is_err());
        assert!(Cli::try_parse_from(["kubectl-dcr", "check", "a", "--all"]).is_err());
        assert!(Cli::try_parse_from(["kubectl-dcr", "check", "--all", "-A"]).is_ok());
        assert!(Cli::try_parse_from(["kubectl-dcr", "-n", "x", "-A", "status"]).is_err());
    }
}
