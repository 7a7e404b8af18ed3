//! Printing a report as text, JSON or YAML.

use super::cli::Format;
use super::error::Error;
use serde::Serialize;
use std::io::Write;

/// `report` in `format`; `text` renders it for people.
pub fn render<R: Serialize>(
    report: &R,
    format: Format,
    text: impl FnOnce(&R) -> String,
) -> Result<String, Error> {
    match format {
        Format::Text => Ok(text(report)),
        Format::Json => serde_json::to_string_pretty(report)
            .map(|s| s + "\n")
            .map_err(|e| Error::Render(e.to_string())),
        Format::Yaml => serde_yaml::to_string(report).map_err(|e| Error::Render(e.to_string())),
    }
}

/// Writes `rendered` to stdout.
pub fn print(rendered: &str) -> Result<(), Error> {
    let mut out = std::io::stdout().lock();
    out.write_all(rendered.as_bytes()).map_err(Error::Write)?;
    out.flush().map_err(Error::Write)
}
