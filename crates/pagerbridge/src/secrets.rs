//! Loading routing keys from where operators keep them: files and environment variables.
//!
//! Errors name the file or variable, never the key. A key file that others can read is
//! accepted with a warning, since refusing it would stop paging over a permission mistake.

use std::path::Path;

use anyhow::{Context, bail};
use pagerduty_events::RoutingKey;

/// Reads a key file: the whole file, surrounding whitespace trimmed.
pub fn routing_key_from_file(path: &Path) -> anyhow::Result<RoutingKey> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("could not read routing key file {}", path.display()))?;
    warn_if_readable_by_others(path);
    RoutingKey::new(&text).with_context(|| format!("invalid routing key in {}", path.display()))
}

/// Reads a key from an environment variable.
pub fn routing_key_from_env(variable: &str) -> anyhow::Result<RoutingKey> {
    match std::env::var(variable) {
        Ok(text) => {
            RoutingKey::new(&text).with_context(|| format!("invalid routing key in ${variable}"))
        }
        Err(std::env::VarError::NotPresent) => bail!("${variable} is not set"),
        Err(std::env::VarError::NotUnicode(_)) => bail!("${variable} is not valid UTF-8"),
    }
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            file = %path.display(),
            mode = format!("{:o}", meta.permissions().mode() & 0o777),
            "routing key file is readable by group or others; chmod 600 it"
        );
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path) {}
