//! `graph-emulator`: the Microsoft Graph / Entra ID emulator as a standalone server, for
//! local use and for other projects' CI. See `graph-emulator --help`.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use sandbox::graph::{
    AppSpec, EmulatorConfig, FaultScope, GraphEmulator, GraphPermission, InactiveSecretError, TenantSize,
    TenantSpec,
};
use serde_json::json;

const AFTER_HELP: &str = "\
DURATIONS are a number of seconds (\"1.5\") or a number with a unit: ms, s, m, h, d (\"500ms\", \"2s\", \"365d\").
Flags that take \"none\" can switch a default off.

On start the emulator prints one JSON line on stdout with baseUrl, authorityHost, graphEndpoint,
caPath, tenantId, tenantDomain, clientId, objectId and servicePrincipalId (the secret only goes to
--ready-file). Point a client's authority host and Graph endpoint at baseUrl and trust caPath.

Control endpoints (no auth; keep the emulator on a private network):
  GET /_emulator/health | /info | /ca.pem | /state | /requests | /clock
  GET, PUT, PATCH /_emulator/config      PUT, PATCH /_emulator/faults
  POST /_emulator/tenants                POST /_emulator/tenants/{tenant}/apps
  PUT /_emulator/tenants/{tenant}/policy POST /_emulator/clock/advance {\"seconds\": n}
  POST /_emulator/tokens/expire          POST /_emulator/throttling/reset
  DELETE /_emulator/requests

Example (CI):
  graph-emulator --listen 127.0.0.1:8443 --ca-out ./graph-ca.pem --ready-file ./graph.json \\
      --tenant-id 11111111-1111-1111-1111-111111111111 --admin-client-secret \"$SECRET\" \\
      --replication-lag 2s --throttle-rate 0.05 &
  curl --cacert ./graph-ca.pem --retry 20 --retry-connrefused https://127.0.0.1:8443/_emulator/health
";

/// A stateful Microsoft Graph v1.0 + Entra ID token endpoint emulator (applications, service
/// principals, passwords, federated credentials, deleted items), served over https with a
/// generated test CA, with switches for replication lag, throttling and injected faults.
#[derive(Parser, Debug)]
#[command(name = "graph-emulator", version, after_help = AFTER_HELP)]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(
        long,
        env = "GRAPH_EMULATOR_LISTEN",
        default_value = "127.0.0.1:8443",
        help_heading = "Network"
    )]
    listen: SocketAddr,

    /// Serve plain http instead of https (quick manual use; Azure SDKs refuse http authorities).
    #[arg(long, help_heading = "Network")]
    plain_http: bool,

    /// Write the test CA certificate (PEM) to this file, for clients to trust. Without it the CA is
    /// only in a temporary file (its path is printed as caPath).
    #[arg(long, env = "GRAPH_EMULATOR_CA_OUT", help_heading = "Network")]
    ca_out: Option<PathBuf>,

    /// Extra DNS name or IP for the server certificate, besides 127.0.0.1, ::1 and localhost
    /// (repeatable), e.g. a docker service name.
    #[arg(long = "tls-name", value_name = "NAME", help_heading = "Network")]
    tls_names: Vec<String>,

    /// Base URL to advertise (e.g. https://graph-emulator:8443) instead of the bound address.
    #[arg(long, value_name = "URL", help_heading = "Network")]
    public_url: Option<String>,

    /// Write the ready JSON (including the admin client secret) to this file once serving.
    #[arg(long, value_name = "PATH", help_heading = "Network")]
    ready_file: Option<PathBuf>,

    /// Load an EmulatorConfig JSON file (field names as in GET /_emulator/config, durations in
    /// seconds); flags given on the command line override it.
    #[arg(long, value_name = "PATH", help_heading = "Network")]
    config: Option<PathBuf>,

    /// Do not seed a tenant and an admin app (use POST /_emulator/tenants and .../apps instead).
    #[arg(long, help_heading = "Seeding")]
    no_seed: bool,

    /// Seeded tenant id (GUID) [default: random].
    #[arg(long, env = "GRAPH_EMULATOR_TENANT_ID", help_heading = "Seeding")]
    tenant_id: Option<String>,

    /// Seeded tenant's initial domain; token URLs accept it in place of the GUID.
    #[arg(long, default_value = "emulator.onmicrosoft.com", help_heading = "Seeding")]
    tenant_domain: String,

    /// Seeded tenant size (picks the resource-unit throttling quota).
    #[arg(long, value_enum, default_value = "small", help_heading = "Seeding")]
    tenant_size: Size,

    /// Seeded admin app's client id (GUID) [default: random].
    #[arg(long, env = "GRAPH_EMULATOR_ADMIN_CLIENT_ID", help_heading = "Seeding")]
    admin_client_id: Option<String>,

    /// Seeded admin app's client secret [default: random, written to --ready-file].
    #[arg(
        long,
        env = "GRAPH_EMULATOR_ADMIN_CLIENT_SECRET",
        hide_env_values = true,
        help_heading = "Seeding"
    )]
    admin_client_secret: Option<String>,

    /// Microsoft Graph application permission granted to the admin app.
    #[arg(long, value_enum, default_value = "owned-by", help_heading = "Seeding")]
    admin_permission: Permission,

    /// Replication lag for new applications and service principals: reads, PATCH and addPassword
    /// answer 404 and service principal creation 400 NoBackingApplicationObject for this long
    /// [default: 0].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, help_heading = "Realism")]
    replication_lag: Option<Duration>,

    /// A new secret works at the token endpoint only this long after addPassword [default: 0].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, help_heading = "Realism")]
    secret_activation_delay: Option<Duration>,

    /// Token-endpoint error while a secret is not active yet.
    #[arg(long, value_enum, help_heading = "Realism")]
    activation_error: Option<ActivationError>,

    /// Tenant policy: maximum password lifetime; addPassword beyond it answers 400
    /// CredentialInvalidLifetimeAsPerAppPolicy [default: none].
    #[arg(long, value_name = "DURATION|none", value_parser = parse_opt_duration, help_heading = "Realism")]
    password_max_lifetime: Option<MaybeDuration>,

    /// Access token lifetime (expires_in) [default: 3599s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, help_heading = "Realism")]
    token_lifetime: Option<Duration>,

    /// Emulated seconds per real second (token expiry, lag, throttling windows); 0 freezes the
    /// clock (move it with POST /_emulator/clock/advance) [default: 1].
    #[arg(long, value_name = "FACTOR", help_heading = "Realism")]
    clock_speed: Option<f64>,

    /// Enforce the documented throttling buckets (3,000 writes / 150 s per app+tenant, 18,000
    /// writes / 5 min per tenant, resource units per 10 s...) [default: on].
    #[arg(long, value_enum, help_heading = "Throttling")]
    throttling: Option<OnOff>,

    /// Divide every bucket's capacity and window by this factor (same rate, tiny bursts)
    /// [default: 1].
    #[arg(long, value_name = "FACTOR", help_heading = "Throttling")]
    throttle_scale: Option<f64>,

    /// Fraction (0..1) of Graph requests answered 429 TooManyRequests [default: 0].
    #[arg(long, value_name = "RATE", help_heading = "Throttling")]
    throttle_rate: Option<f64>,

    /// Retry-After sent with injected 429s, or "none" to omit it [default: 2.128s].
    #[arg(long, value_name = "DURATION|none", value_parser = parse_opt_duration, help_heading = "Throttling")]
    throttle_retry_after: Option<MaybeDuration>,

    /// Fraction (0..1) of requests answered with --error-status [default: 0].
    #[arg(long, value_name = "RATE", help_heading = "Faults")]
    error_rate: Option<f64>,

    /// Status of injected errors: 503 or 504 [default: 503].
    #[arg(long, value_name = "STATUS", help_heading = "Faults")]
    error_status: Option<u16>,

    /// Retry-After sent with injected 503/504s, or "none" [default: none].
    #[arg(long, value_name = "DURATION|none", value_parser = parse_opt_duration, help_heading = "Faults")]
    error_retry_after: Option<MaybeDuration>,

    /// Fraction (0..1) of requests whose connection is dropped without a response [default: 0].
    #[arg(long, value_name = "RATE", help_heading = "Faults")]
    drop_rate: Option<f64>,

    /// Latency added to requests [default: 0].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, help_heading = "Faults")]
    latency: Option<Duration>,

    /// Fraction (0..1) of requests that get --latency [default: 1].
    #[arg(long, value_name = "RATE", help_heading = "Faults")]
    latency_rate: Option<f64>,

    /// Which endpoints 503s, drops and latency apply to (429s apply to Graph only) [default: graph].
    #[arg(long, value_enum, help_heading = "Faults")]
    fault_scope: Option<Scope>,

    /// Only fault this operation (repeatable), e.g. application.create, application.addPassword,
    /// servicePrincipal.create, token.v2 [default: all].
    #[arg(long = "fault-operation", value_name = "OPERATION", help_heading = "Faults")]
    fault_operations: Vec<String>,

    /// Seed for the fault dice, for reproducible runs [default: random].
    #[arg(long, value_name = "N", help_heading = "Faults")]
    fault_seed: Option<u64>,

    /// An app created by an Application.ReadWrite.OwnedBy caller gets the caller as owner
    /// automatically (UNVERIFIED in the contract; default: the caller must bind itself with
    /// owners@odata.bind).
    #[arg(long, help_heading = "Assumptions")]
    owned_by_auto_owner: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Size {
    Small,
    Medium,
    Large,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Permission {
    /// Application.ReadWrite.OwnedBy
    OwnedBy,
    /// Application.ReadWrite.All
    All,
    /// Application.Read.All
    Read,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ActivationError {
    /// AADSTS7000215 invalid client secret
    InvalidSecret,
    /// AADSTS7000222 client secret keys expired
    KeysExpired,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum OnOff {
    On,
    Off,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Scope {
    Graph,
    Token,
    All,
}

/// "1.5", "500ms", "2s", "5m", "2h", "365d".
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("invalid duration '{s}'"))?;
    let factor = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        _ => return Err(format!("invalid duration unit in '{s}' (use ms, s, m, h or d)")),
    };
    Duration::try_from_secs_f64(n * factor).map_err(|e| format!("invalid duration '{s}': {e}"))
}

/// A duration or "none" (clap treats `Option<Option<T>>` as an optional value, so wrap it).
#[derive(Clone, Copy, Debug, PartialEq)]
struct MaybeDuration(Option<Duration>);

fn parse_opt_duration(s: &str) -> Result<MaybeDuration, String> {
    if s.eq_ignore_ascii_case("none") {
        Ok(MaybeDuration(None))
    } else {
        parse_duration(s).map(|d| MaybeDuration(Some(d)))
    }
}

fn build_config(args: &Args) -> anyhow::Result<EmulatorConfig> {
    let mut cfg = match &args.config {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?
        }
        None => EmulatorConfig::default(),
    };
    cfg.listen = args.listen;
    cfg.tls = !args.plain_http;
    cfg.tls_extra_names.extend(args.tls_names.iter().cloned());
    if args.ca_out.is_some() {
        cfg.ca_out = args.ca_out.clone();
    }
    if let Some(v) = args.replication_lag {
        cfg.replication_lag = v;
    }
    if let Some(v) = args.secret_activation_delay {
        cfg.secret_activation_delay = v;
    }
    if let Some(v) = args.activation_error {
        cfg.assumptions.inactive_secret_error = match v {
            ActivationError::InvalidSecret => InactiveSecretError::InvalidSecret,
            ActivationError::KeysExpired => InactiveSecretError::KeysExpired,
        };
    }
    if let Some(MaybeDuration(v)) = args.password_max_lifetime {
        cfg.password_max_lifetime = v;
    }
    if let Some(v) = args.token_lifetime {
        cfg.token_lifetime = v;
    }
    if let Some(v) = args.clock_speed {
        cfg.clock_speed = v;
    }
    if let Some(v) = args.throttling {
        cfg.throttling.enabled = matches!(v, OnOff::On);
    }
    if let Some(v) = args.throttle_scale {
        cfg.throttling.scale = v;
    }
    let f = &mut cfg.faults;
    if let Some(v) = args.throttle_rate {
        f.throttle_rate = v;
    }
    if let Some(MaybeDuration(v)) = args.throttle_retry_after {
        f.throttle_retry_after = v;
    }
    if let Some(v) = args.error_rate {
        f.error_rate = v;
    }
    if let Some(v) = args.error_status {
        f.error_status = v;
    }
    if let Some(MaybeDuration(v)) = args.error_retry_after {
        f.error_retry_after = v;
    }
    if let Some(v) = args.drop_rate {
        f.drop_rate = v;
    }
    if let Some(v) = args.latency {
        f.latency = v;
        f.latency_rate = args.latency_rate.unwrap_or(1.0);
    } else if let Some(v) = args.latency_rate {
        f.latency_rate = v;
    }
    if let Some(v) = args.fault_scope {
        f.scope = match v {
            Scope::Graph => FaultScope::Graph,
            Scope::Token => FaultScope::Token,
            Scope::All => FaultScope::All,
        };
    }
    if !args.fault_operations.is_empty() {
        f.operations = args.fault_operations.clone();
    }
    if args.fault_seed.is_some() {
        f.seed = args.fault_seed;
    }
    if args.owned_by_auto_owner {
        cfg.assumptions.owned_by_auto_owner = true;
    }
    cfg.validate().map_err(anyhow::Error::msg)?;
    Ok(cfg)
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let cfg = build_config(&args)?;
    let emu = GraphEmulator::start_with_public_url(cfg, args.public_url.clone()).await?;
    let ca_path = match &args.ca_out {
        Some(p) => p.display().to_string(),
        None => emu.ca_path().display().to_string(),
    };
    let mut ready = json!({
        "baseUrl": emu.base_url(),
        "authorityHost": emu.authority_host(),
        "graphEndpoint": emu.graph_endpoint(),
        "caPath": ca_path,
    });
    let mut secret = None;
    if !args.no_seed {
        let tenant = emu.seed_tenant(TenantSpec {
            id: args.tenant_id.clone(),
            domain: Some(args.tenant_domain.clone()),
            size: match args.tenant_size {
                Size::Small => TenantSize::Small,
                Size::Medium => TenantSize::Medium,
                Size::Large => TenantSize::Large,
            },
            ..TenantSpec::default()
        });
        let permission = match args.admin_permission {
            Permission::OwnedBy => GraphPermission::ApplicationReadWriteOwnedBy,
            Permission::All => GraphPermission::ApplicationReadWriteAll,
            Permission::Read => GraphPermission::ApplicationReadAll,
        };
        let admin = emu.seed_app(
            &tenant.id,
            AppSpec {
                client_id: args.admin_client_id.clone(),
                client_secret: args.admin_client_secret.clone(),
                ..AppSpec::admin(permission)
            },
        );
        ready["tenantId"] = tenant.id.into();
        ready["tenantDomain"] = tenant.domain.into();
        ready["clientId"] = admin.client_id.clone().into();
        ready["objectId"] = admin.object_id.clone().into();
        ready["servicePrincipalId"] = admin.sp_id.clone().into();
        ready["permission"] = permission.as_str().into();
        secret = Some(admin.client_secret);
    }
    if let Some(path) = &args.ready_file {
        let mut full = ready.clone();
        if let Some(s) = &secret {
            full["clientSecret"] = s.clone().into();
        }
        std::fs::write(path, serde_json::to_string_pretty(&full)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    println!("{ready}");
    tracing::info!(base_url = %emu.base_url(), ca = %ca_path, "graph-emulator listening");
    shutdown_signal().await;
    tracing::info!("shutting down");
    emu.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_duration("365d").unwrap(), Duration::from_secs(365 * 86_400));
        assert!(parse_duration("5y").is_err());
        assert_eq!(parse_opt_duration("none").unwrap(), MaybeDuration(None));
    }

    #[test]
    fn flags_reach_the_config() {
        let args = Args::parse_from([
            "graph-emulator",
            "--replication-lag",
            "2s",
            "--throttle-rate",
            "0.25",
            "--throttle-retry-after",
            "none",
            "--throttling",
            "off",
            "--latency",
            "10ms",
            "--password-max-lifetime",
            "30d",
        ]);
        let cfg = build_config(&args).unwrap();
        assert_eq!(cfg.replication_lag, Duration::from_secs(2));
        assert_eq!(cfg.faults.throttle_rate, 0.25);
        assert_eq!(cfg.faults.throttle_retry_after, None);
        assert!(!cfg.throttling.enabled);
        assert_eq!(cfg.faults.latency_rate, 1.0);
        assert_eq!(cfg.password_max_lifetime, Some(Duration::from_secs(30 * 86_400)));
    }
}
