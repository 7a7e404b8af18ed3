//! The `dcr-operator` command line. Subcommands only dispatch; the work lives in the library.

// No panics in the operator: one would stop reconciling for every namespace. Tests may.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::unreachable,
    clippy::todo,
    clippy::unimplemented
)]
use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// `--version`: the Cargo version (= image tag = chart appVersion) and the git commit.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("DCR_GIT_COMMIT"),
    ")"
);

#[derive(Parser)]
#[command(
    name = "dcr-operator",
    version = VERSION,
    about = "OAuth clients at an identity provider, delivered as Kubernetes Secrets"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controllers until SIGTERM/SIGINT.
    Run(Box<dcr_operator::config::RunConfig>),
    /// Print every CustomResourceDefinition as a multi-document YAML stream, or write one
    /// file per kind into a directory.
    Crds {
        /// Write `<plural>.yaml` files here instead of printing.
        #[arg(long)]
        out_dir: Option<std::path::PathBuf>,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Run(config) => {
            if let Err(e) = config.validate() {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
            dcr_operator::telemetry::init(config.log_format);
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build();
            let result = match runtime {
                Ok(rt) => rt
                    .block_on(dcr_operator::controller::run(*config))
                    .map_err(|e| e.to_string()),
                Err(e) => Err(format!("cannot start the async runtime: {e}")),
            };
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "dcr-operator failed");
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Crds { out_dir: None } => match dcr_operator::crd::render_crds_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: cannot render the CRDs: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Crds { out_dir: Some(dir) } => match dcr_operator::crd::write_crd_files(&dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: cannot write the CRDs to {}: {e}", dir.display());
                ExitCode::FAILURE
            }
        },
    }
}
