//! `kubectl dcr`, the kubectl plugin (binary `kubectl-dcr`): see, explain, rotate and check
//! credentials without reading YAML. One module per subcommand; each gathers with the
//! caller's own Kubernetes identity, then builds a plain report and renders it with pure
//! functions (text, JSON or YAML). Exit codes: see [`error`].

pub mod advice;
pub mod check;
pub mod cli;
pub mod client;
pub mod error;
pub mod explain;
pub mod model;
pub mod output;
pub mod rotate;
pub mod status;

use cli::{Cli, Command, Format};
use error::{Error, EXIT_NOT_OK, EXIT_OK};
use k8s_openapi::jiff::Timestamp;
use model::Palette;

/// `--version`: the Cargo version and the git commit, like `dcr-operator --version`.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("DCR_GIT_COMMIT"),
    ")"
);

/// Runs one command; returns the exit code (see [`error`]).
pub async fn run(cli: Cli) -> Result<u8, Error> {
    let format = cli.global.output;
    let palette = match format {
        Format::Text => Palette::detect(),
        _ => Palette::default(),
    };
    if let Command::Completion { shell } = cli.command {
        let mut cmd = <Cli as clap::CommandFactory>::command();
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut cmd, "kubectl-dcr", &mut buf);
        output::print(&String::from_utf8_lossy(&buf))?;
        return Ok(EXIT_OK);
    }
    let target = client::connect(&cli.global).await?;
    let now = Timestamp::now();
    let (text, code) = match cli.command {
        Command::Status => {
            let input = status::gather(&target).await?;
            let report = status::build(&input, now);
            let text = output::render(&report, format, |r| status::render_text(r, palette))?;
            (text, verdict(report.healthy()))
        }
        Command::Explain { name, events, .. } => {
            let input = explain::gather(&target, &name, usize::from(events)).await?;
            let report = explain::diagnose(&input, now);
            let text = output::render(&report, format, |r| explain::render_text(r, palette))?;
            (text, verdict(report.ready))
        }
        Command::Rotate { name, wait } => {
            let report = rotate::run(&target, rotate::RequestKind::Rotate, &name, None, wait).await?;
            let text = output::render(&report, format, |r| rotate::render_text(r, palette))?;
            (text, report.exit_code())
        }
        Command::RevokeAll { name, reason, wait } => {
            let report = rotate::run(
                &target,
                rotate::RequestKind::RevokeAll,
                &name,
                Some(&reason),
                wait,
            )
            .await?;
            let text = output::render(&report, format, |r| rotate::render_text(r, palette))?;
            (text, report.exit_code())
        }
        Command::Check {
            name,
            all,
            ca_file,
            scope,
            request_timeout,
        } => {
            let opts = check::CheckOptions {
                ca_file,
                scope,
                request_timeout,
            };
            let report = check::run(&target, name.as_deref(), &opts).await?;
            let text = output::render(&report, format, |r| check::render_text(r, palette, all))?;
            (text, verdict(report.healthy()))
        }
        Command::Completion { .. } => (String::new(), EXIT_OK),
    };
    output::print(&text)?;
    Ok(code)
}

fn verdict(healthy: bool) -> u8 {
    if healthy {
        EXIT_OK
    } else {
        EXIT_NOT_OK
    }
}
