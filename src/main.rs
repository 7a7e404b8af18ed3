//! The `dcr-operator` command line. Subcommands only dispatch; the work lives in the library.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "dcr-operator",
    version,
    about = "OAuth clients at an identity provider, delivered as Kubernetes Secrets"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
