//! `kubectl-dcr`: the kubectl plugin (`kubectl dcr ...`). The code is in `dcr_operator::plugin`.

use clap::Parser;
use dcr_operator::plugin::{self, cli::Cli};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kubectl dcr: starting the runtime: {e}");
            return ExitCode::from(plugin::error::EXIT_NOT_OK);
        }
    };
    match runtime.block_on(plugin::run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("kubectl dcr: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
