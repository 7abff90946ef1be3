//! `pagerbridge check-config`: loads the configuration and every routing key exactly as
//! `serve` would, and prints what it found, so a mistake shows up before a deploy rather than
//! at the first page.
//!
//! Exit 0 with a summary on stdout when everything is valid (and a PostgreSQL store answers);
//! exit 1 with `error: …` on stderr otherwise. Keys are only ever shown masked (`…3f9a`), and
//! a database URL with its password as `***`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};

use pagerbridge::config::{self, Config, SecretUrl, Storage, Target};
use pagerbridge::format::DedupMode;
use pagerbridge::keyring::Keyring;

/// How long the database may take to answer before it counts as unreachable.
const REACHABLE_WITHIN: Duration = Duration::from_secs(10);

#[derive(Debug, Args)]
pub struct CheckConfigArgs {
    /// Config file. Without it: $PAGERBRIDGE_CONFIG, else ./pagerbridge.yaml if it exists,
    /// else the defaults. PAGERBRIDGE_* variables override it (`__` nests, e.g.
    /// PAGERBRIDGE_PAGERDUTY__URL).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

pub async fn run(args: CheckConfigArgs) -> ExitCode {
    match check(args.config.as_deref()).await {
        Ok(summary) => {
            super::print_line(summary.trim_end_matches('\n'));
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn check(path: Option<&Path>) -> anyhow::Result<String> {
    let file = config::config_file(path);
    let config = config::load(path)?;
    let storage = config.storage.resolve()?;
    if let Storage::Postgres { url } = &storage {
        check_reachable(url)
            .await
            .with_context(|| format!("storage: PostgreSQL at {url} is not reachable"))?;
    }
    let targets = config.targets()?;
    let keyring = Keyring::load(&targets)?;
    let tokens = match &config.ingest.bearer_token_file {
        Some(path) => Some(count_tokens(path)?),
        None => None,
    };
    Ok(summary(
        file.as_deref(),
        &config,
        &storage,
        &targets,
        &keyring,
        tokens,
    ))
}

/// Ingest owns the tokens; this only checks that `serve` will be able to read some.
fn count_tokens(path: &Path) -> anyhow::Result<usize> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "ingest.bearer_token_file: could not read {}",
            path.display()
        )
    })?;
    let count = text.lines().filter(|line| !line.trim().is_empty()).count();
    anyhow::ensure!(
        count > 0,
        "ingest.bearer_token_file: {} holds no tokens",
        path.display()
    );
    Ok(count)
}

/// Connects and runs a trivial query, without migrating: checking must not change the
/// database. `url` shows masked, and sqlx's errors do not repeat it.
async fn check_reachable(url: &SecretUrl) -> anyhow::Result<()> {
    let attempt = async {
        let options = PgConnectOptions::from_str(url.expose())?;
        let mut conn = PgConnection::connect_with(&options).await?;
        sqlx::query("SELECT 1").execute(&mut conn).await?;
        conn.close().await
    };
    match tokio::time::timeout(REACHABLE_WITHIN, attempt).await {
        Ok(result) => result.map_err(anyhow::Error::from),
        Err(_) => anyhow::bail!(
            "no answer within {}",
            humantime::format_duration(REACHABLE_WITHIN)
        ),
    }
}

fn summary(
    file: Option<&Path>,
    config: &Config,
    storage: &Storage,
    targets: &[Target],
    keyring: &Keyring,
    tokens: Option<usize>,
) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail; `let _` keeps the layout readable.
    let mut line = |text: String| {
        let _ = writeln!(out, "{text}");
    };
    let source = match file {
        Some(path) => path.display().to_string(),
        None => "none (defaults)".to_owned(),
    };
    line(format!("config file:  {source}"));
    let overrides = config::env_overrides();
    if !overrides.is_empty() {
        line(format!("overridden:   {}", overrides.join(", ")));
    }
    line(format!("listen:       {}", config.listen));
    let reached = match storage {
        Storage::Sqlite { .. } => "",
        Storage::Postgres { .. } => ", reachable",
    };
    line(format!("storage:      {storage}{reached}"));
    let pagerduty = &config.pagerduty;
    line(format!(
        "pagerduty:    {} (timeout {})",
        pagerduty.url,
        humantime::format_duration(pagerduty.timeout)
    ));
    line(format!(
        "budget:       {} per routing key",
        pagerduty.rate_limit
    ));
    let auth = match (&config.ingest.bearer_token_file, tokens) {
        (Some(path), Some(count)) => format!("bearer tokens from {} ({count})", path.display()),
        _ => "none".to_owned(),
    };
    line(format!(
        "ingest:       max body {} bytes, authentication: {auth}",
        config.ingest.max_body_bytes
    ));
    if let Some(secrets) = &config.kubernetes.secrets {
        // Not contacted here: the watch is `serve`'s; this only says where it will look.
        let namespace = secrets
            .namespace
            .as_deref()
            .unwrap_or("the pod's own namespace");
        line(format!(
            "kubernetes:   targets from Secrets in {namespace} matching {:?} (not contacted)",
            secrets.label_selector
        ));
    }
    line(format!("targets:      {}", targets.len()));

    let masked = keyring.masked();
    for (index, target) in targets.iter().enumerate() {
        let key = masked
            .iter()
            .find(|(name, _)| *name == target.name)
            .map_or("?", |(_, key)| key.as_str());
        let role = if index == 0 {
            " (default: also gets alerts no target matches)"
        } else {
            ""
        };
        line(format!("- {}{role}", target.name));
        line(format!("    key:      {key} ({})", target.key_source));
        let matchers = if target.matchers.is_empty() {
            "everything".to_owned()
        } else {
            let each: Vec<String> = target.matchers.iter().map(ToString::to_string).collect();
            each.join(", ")
        };
        line(format!("    match:    {matchers}"));
        let format = &target.format;
        let dedup = match format.dedup {
            DedupMode::Alert => "alert (per alert label set)",
            DedupMode::Group => "group (Alertmanager's groupKey)",
        };
        line(format!("    dedup:    {dedup}"));
        let mut severity = format!("default {}", format.default_severity);
        if !format.severity_map.is_empty() {
            let map: Vec<String> = format
                .severity_map
                .iter()
                .map(|(from, to)| format!("{from}→{to}"))
                .collect();
            let _ = write!(severity, ", map {}", map.join(", "));
        }
        line(format!("    severity: {severity}"));
        line(format!("    budget:   {}", target.rate_limit));
        if let Some(url) = &target.url {
            line(format!("    url:      {url}"));
        }
        let fields = &format.fields;
        let templated: Vec<&str> = [
            ("summary", &fields.summary),
            ("source", &fields.source),
            ("component", &fields.component),
            ("group", &fields.group),
            ("class", &fields.class),
        ]
        .into_iter()
        .filter_map(|(name, template)| template.as_ref().map(|_| name))
        .collect();
        if !templated.is_empty() {
            line(format!(
                "    fields:   {} (templated)",
                templated.join(", ")
            ));
        }
    }
    line("configuration OK".to_owned());
    out
}
