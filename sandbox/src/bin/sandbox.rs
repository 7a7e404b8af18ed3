//! `sandbox` (`make demo`): the operator against a local control plane and the Graph
//! emulator, with the samples applied. See `sandbox::demo`.

use clap::Parser;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "sandbox",
    about = "Run dcr-operator against a real local kube-apiserver and the Microsoft Graph emulator, apply the samples and show the Secret it produces"
)]
struct Args {
    /// The dcr-operator binary. Default: next to this binary.
    #[arg(long, env = "DCR_OPERATOR_BIN")]
    operator_bin: Option<PathBuf>,
    /// The repository root (crds/, config/samples).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/.."))]
    repo: PathBuf,
    /// kubectl to use.
    #[arg(long, env = "KUBECTL", default_value = "kubectl")]
    kubectl: PathBuf,
    /// Exit after showing the result instead of waiting for Ctrl-C.
    #[arg(long)]
    once: bool,
    /// How long the sample Application may take to become Ready.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    timeout: Duration,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let secs = s
        .trim_end_matches('s')
        .parse::<u64>()
        .map_err(|e| format!("{s}: {e} (use e.g. 120s)"))?;
    Ok(Duration::from_secs(secs))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let operator_bin = args.operator_bin.unwrap_or_else(|| {
        let me = std::env::current_exe().unwrap_or_default();
        me.with_file_name("dcr-operator")
    });
    let opts = sandbox::demo::DemoOptions {
        operator_bin,
        repo: args.repo,
        kubectl: args.kubectl,
        once: args.once,
        timeout: args.timeout,
    };
    match sandbox::demo::run(opts).await {
        Ok(_) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sandbox: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
