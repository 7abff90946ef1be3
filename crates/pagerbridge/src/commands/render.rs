//! `pagerbridge render`: print the exact PagerDuty bodies an input would become, sending
//! nothing. Routing and formatting are the ones `serve` uses ([`Planner`]); keys are masked.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, ValueEnum};
use pagerbridge::alert::GroupContext;
use pagerbridge::config;
use pagerbridge::format::Outbound;
use pagerbridge::ingest;
use pagerbridge::keyring::Keyring;
use pagerbridge::pipeline::Planner;
use pagerduty_events::masked_body;
use serde_json::{Value, json};

#[derive(Debug, Args)]
pub struct RenderArgs {
    /// YAML configuration file (targets, severity maps, templates), as for `serve`.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// What the input is; `auto` tells an Alertmanager webhook (it has `version` or
    /// `groupKey`) from a native request.
    #[arg(long, value_enum, default_value_t = InputKind::Auto)]
    pub input: InputKind,

    /// Send everything to this target instead of routing by labels.
    #[arg(long)]
    pub target: Option<String>,

    /// The request body: a file, or `-` for stdin.
    pub file: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum InputKind {
    Auto,
    Alertmanager,
    Native,
}

pub async fn run(args: RenderArgs) -> ExitCode {
    match render(&args) {
        Ok(output) => {
            super::print_line(&output);
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn render(args: &RenderArgs) -> anyhow::Result<String> {
    let body = read_input(&args.file)?;
    let config = config::load(args.config.as_deref())?;
    let targets = config.targets()?;
    let keyring = Keyring::load(&targets)?;
    let planner = Planner::new(targets)?;
    let kind = match args.input {
        InputKind::Auto => detect(&body),
        other => other,
    };
    let (alerts, group, explicit) = match kind {
        InputKind::Native => {
            let request = ingest::native::parse(&body)?;
            (request.alerts, GroupContext::default(), request.target)
        }
        _ => {
            let webhook = ingest::alertmanager::parse(&body)?;
            (webhook.alerts, webhook.group, None)
        }
    };
    let explicit = args.target.clone().or(explicit);
    let planned = planner.plan(alerts, &group, explicit.as_deref())?;
    let rendered: Vec<Value> = planned
        .iter()
        .map(|plan| {
            let key = keyring
                .get(&plan.target)
                .with_context(|| format!("no routing key for target {}", plan.target))?;
            let (endpoint, (body, shrunk)) = match &plan.formatted.event {
                Outbound::Alert(event) => ("/v2/enqueue", masked_body(&key, event)),
                Outbound::Change(event) => ("/v2/change/enqueue", masked_body(&key, event)),
            };
            Ok(json!({
                "target": plan.target,
                "endpoint": endpoint,
                "body": body,
                "body_shrunk": shrunk,
                "notes": plan.formatted.notes,
            }))
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(serde_json::to_string_pretty(&rendered)?)
}

fn read_input(path: &PathBuf) -> anyhow::Result<Vec<u8>> {
    if path.as_os_str() == "-" {
        let mut body = Vec::new();
        std::io::stdin()
            .read_to_end(&mut body)
            .context("could not read stdin")?;
        return Ok(body);
    }
    std::fs::read(path).with_context(|| format!("could not read {}", path.display()))
}

fn detect(body: &[u8]) -> InputKind {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) if map.contains_key("version") || map.contains_key("groupKey") => {
            InputKind::Alertmanager
        }
        Ok(_) => InputKind::Native,
        Err(_) => InputKind::Alertmanager,
    }
}
