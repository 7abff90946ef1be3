//! `pagerbridge send`: one event straight to PagerDuty, for scripts and CI pipelines.
//!
//! Everything is checked locally before anything is sent (a bad flag costs no request and
//! exits 2), the routing key comes from a file or the environment (never a flag, which would
//! show in `ps` and shell history), and delivery retries with backoff. PagerDuty's answer is
//! printed as JSON on stdout; what went wrong goes to stderr.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use pagerduty_events::{
    AlertEvent, BaseUrl, ChangeEvent, Client, CustomDetails, DedupKey, Endpoint, Image, Link,
    RequestBody, RetryPolicy, RoutingKey, SendError, Severity, Source, Summary, Trigger,
    US_BASE_URL, masked_body,
};
use serde_json::{Value, json};

use pagerbridge::secrets;

/// Environment variable holding the routing key when no key file is given.
const ROUTING_KEY_ENV: &str = "PAGERDUTY_ROUTING_KEY";

/// Exit codes, as documented in `pagerbridge send --help`.
mod exit {
    pub const USAGE: u8 = 2;
    pub const REJECTED: u8 = 3;
    pub const NOT_DELIVERED: u8 = 4;
}

#[derive(Debug, Subcommand)]
pub enum SendArgs {
    /// Open an alert, or add to the open one with the same dedup key.
    Trigger(TriggerArgs),
    /// Acknowledge the open alert with this dedup key (no more notifications).
    Acknowledge(KeyedArgs),
    /// Resolve the open alert with this dedup key.
    Resolve(KeyedArgs),
    /// Record a change event (a deploy, a config change); it pages nobody.
    Change(ChangeArgs),
}

/// Where to send and how hard to try; shared by every `send` command.
#[derive(Debug, Args)]
pub struct Connection {
    /// PagerDuty base URL (EU: https://events.eu.pagerduty.com). Plain http is accepted only
    /// for loopback addresses, such as the simulator.
    #[arg(
        long = "url",
        env = "PAGERDUTY_URL",
        default_value = US_BASE_URL,
        value_name = "BASE",
        value_parser = BaseUrl::parse
    )]
    base_url: BaseUrl,

    /// File holding the integration (routing) key. Without it the key is read from
    /// $PAGERDUTY_ROUTING_KEY. There is deliberately no flag taking the key itself.
    #[arg(long, value_name = "FILE")]
    routing_key_file: Option<PathBuf>,

    /// Attempts in all, the first included; 429, 5xx, timeouts and network errors are retried
    /// with exponential backoff and full jitter, honouring Retry-After. 400 is never retried.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    attempts: u32,

    /// The first retry waits a random time up to this; each later cap doubles (at most 30s).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    retry_base_delay: Duration,

    /// Timeout of each request (e.g. 10s, 500ms).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    timeout: Duration,

    /// User-Agent header.
    #[arg(long, default_value = pagerduty_events::DEFAULT_USER_AGENT)]
    user_agent: String,

    /// Print the request body that would be sent (routing key masked) and send nothing.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Debug, Args)]
pub struct TriggerArgs {
    /// What is wrong, shown as the alert's title. Over 1024 characters it is cut, ending in `…`.
    #[arg(long)]
    summary: String,
    /// The affected system, preferably a hostname or FQDN.
    #[arg(long)]
    source: String,
    /// How bad it is; critical and error page urgently under PagerDuty's default rules.
    #[arg(long, value_enum)]
    severity: SeverityArg,
    /// Correlates later acknowledges and resolves; without it PagerDuty generates one (and a
    /// retried trigger could then open a second alert).
    #[arg(long)]
    dedup_key: Option<String>,
    /// The part of the source that is failing (e.g. mysql).
    #[arg(long)]
    component: Option<String>,
    /// A logical grouping of components (e.g. prod-datapipe).
    #[arg(long)]
    group: Option<String>,
    /// The class or type of the problem (e.g. disk).
    #[arg(long)]
    class: Option<String>,
    /// When the problem was detected, RFC 3339 (e.g. 2026-11-29T08:42:58Z); PagerDuty uses
    /// the time of receipt otherwise.
    #[arg(long)]
    timestamp: Option<pagerduty_events::EventTime>,
    /// A JSON object of extra details.
    #[arg(long, value_name = "JSON")]
    custom_details: Option<String>,
    /// A link, HREF or HREF,TEXT (the text starts after the first comma). Repeatable.
    #[arg(long = "link", value_name = "HREF[,TEXT]")]
    links: Vec<String>,
    /// An image, SRC[,HREF[,ALT]]; SRC must be https. Repeatable.
    #[arg(long = "image", value_name = "SRC[,HREF[,ALT]]")]
    images: Vec<String>,
    /// Name of the monitoring client.
    #[arg(long)]
    client: Option<String>,
    /// URL of the monitoring client.
    #[arg(long)]
    client_url: Option<String>,
    #[command(flatten)]
    connection: Connection,
}

#[derive(Debug, Args)]
pub struct KeyedArgs {
    /// The dedup key of the alert.
    #[arg(long)]
    dedup_key: String,
    #[command(flatten)]
    connection: Connection,
}

#[derive(Debug, Args)]
pub struct ChangeArgs {
    /// What changed. Over 1024 characters it is cut, ending in `…`.
    #[arg(long)]
    summary: String,
    /// Where the change happened (e.g. a build agent or a host).
    #[arg(long)]
    source: Option<String>,
    /// When the change happened, RFC 3339.
    #[arg(long)]
    timestamp: Option<pagerduty_events::EventTime>,
    /// A JSON object of extra details.
    #[arg(long, value_name = "JSON")]
    custom_details: Option<String>,
    /// A link, HREF or HREF,TEXT. Repeatable.
    #[arg(long = "link", value_name = "HREF[,TEXT]")]
    links: Vec<String>,
    #[command(flatten)]
    connection: Connection,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum SeverityArg {
    Critical,
    Error,
    Warning,
    Info,
}

impl From<SeverityArg> for Severity {
    fn from(arg: SeverityArg) -> Self {
        match arg {
            SeverityArg::Critical => Severity::Critical,
            SeverityArg::Error => Severity::Error,
            SeverityArg::Warning => Severity::Warning,
            SeverityArg::Info => Severity::Info,
        }
    }
}

/// A fully checked request, ready to go.
struct Prepared {
    endpoint: Endpoint,
    event: Value,
    body: RequestBody,
    key: RoutingKey,
}

pub async fn run(args: SendArgs) -> ExitCode {
    let (connection, prepared) = match prepare(args) {
        Ok(ready) => ready,
        Err(error) => {
            eprintln!("error: {error:#}");
            return ExitCode::from(exit::USAGE);
        }
    };
    if prepared.body.shrunk() {
        eprintln!("warning: the event exceeded 512,000 bytes; custom_details were cut to fit");
    }
    if connection.dry_run {
        super::print_line(&pretty(&prepared.event));
        return ExitCode::SUCCESS;
    }
    deliver(&connection, prepared).await
}

fn prepare(args: SendArgs) -> anyhow::Result<(Connection, Prepared)> {
    let (connection, endpoint, event): (Connection, Endpoint, Event) = match args {
        SendArgs::Trigger(args) => {
            let event = AlertEvent::Trigger(trigger(&args)?);
            (args.connection, Endpoint::Enqueue, Event::Alert(event))
        }
        SendArgs::Acknowledge(args) => {
            let dedup_key = DedupKey::new(args.dedup_key).context("--dedup-key")?;
            let event = AlertEvent::Acknowledge { dedup_key };
            (args.connection, Endpoint::Enqueue, Event::Alert(event))
        }
        SendArgs::Resolve(args) => {
            let dedup_key = DedupKey::new(args.dedup_key).context("--dedup-key")?;
            let event = AlertEvent::Resolve {
                dedup_key,
                payload: None,
            };
            (args.connection, Endpoint::Enqueue, Event::Alert(event))
        }
        SendArgs::Change(args) => {
            let event = change(&args)?;
            (
                args.connection,
                Endpoint::ChangeEnqueue,
                Event::Change(event),
            )
        }
    };
    let key = routing_key(&connection)?;
    let (body, (masked, _)) = match &event {
        Event::Alert(event) => (RequestBody::alert(&key, event), masked_body(&key, event)),
        Event::Change(event) => (RequestBody::change(&key, event), masked_body(&key, event)),
    };
    Ok((
        connection,
        Prepared {
            endpoint,
            event: masked,
            body,
            key,
        },
    ))
}

#[allow(clippy::large_enum_variant, reason = "one per process")]
enum Event {
    Alert(AlertEvent),
    Change(ChangeEvent),
}

fn trigger(args: &TriggerArgs) -> anyhow::Result<Trigger> {
    let mut trigger = Trigger::new(
        summary(&args.summary)?,
        Source::new(args.source.as_str()).context("--source")?,
        args.severity.into(),
    );
    trigger.dedup_key = args
        .dedup_key
        .clone()
        .map(DedupKey::new)
        .transpose()
        .context("--dedup-key")?;
    let payload = &mut trigger.payload;
    payload.timestamp = args.timestamp;
    payload.component = args.component.clone();
    payload.group = args.group.clone();
    payload.class = args.class.clone();
    payload.custom_details = custom_details(args.custom_details.as_deref())?;
    trigger.links = links(&args.links)?;
    trigger.images = args
        .images
        .iter()
        .map(|spec| {
            let mut parts = spec.splitn(3, ',');
            let src = parts.next().unwrap_or_default();
            let href = parts.next().filter(|href| !href.is_empty());
            let alt = parts.next().map(str::to_owned);
            Image::new(src, href, alt).with_context(|| format!("--image {spec}"))
        })
        .collect::<anyhow::Result<_>>()?;
    trigger.client = args.client.clone();
    trigger.client_url = args
        .client_url
        .as_deref()
        .map(url::Url::parse)
        .transpose()
        .context("--client-url is not a valid URL")?;
    Ok(trigger)
}

fn change(args: &ChangeArgs) -> anyhow::Result<ChangeEvent> {
    let mut event = ChangeEvent::new(summary(&args.summary)?);
    event.payload.source = args.source.clone();
    event.payload.timestamp = args.timestamp;
    event.payload.custom_details = custom_details(args.custom_details.as_deref())?;
    event.links = links(&args.links)?;
    Ok(event)
}

fn summary(text: &str) -> anyhow::Result<Summary> {
    if Summary::was_truncated(text) {
        eprintln!("warning: --summary is over 1024 characters; it was cut to fit");
    }
    Summary::truncating(text).context("--summary")
}

fn custom_details(json_text: Option<&str>) -> anyhow::Result<Option<CustomDetails>> {
    let Some(text) = json_text else {
        return Ok(None);
    };
    match serde_json::from_str::<Value>(text).context("--custom-details is not valid JSON")? {
        Value::Object(map) => Ok(Some(map)),
        _ => bail!("--custom-details must be a JSON object, like {{\"build\": \"220\"}}"),
    }
}

fn links(specs: &[String]) -> anyhow::Result<Vec<Link>> {
    specs
        .iter()
        .map(|spec| {
            let (href, text) = match spec.split_once(',') {
                Some((href, text)) => (href, Some(text.to_owned())),
                None => (spec.as_str(), None),
            };
            Link::new(href, text).with_context(|| format!("--link {spec}"))
        })
        .collect()
}

fn routing_key(connection: &Connection) -> anyhow::Result<RoutingKey> {
    match &connection.routing_key_file {
        Some(path) => secrets::routing_key_from_file(path),
        None => secrets::routing_key_from_env(ROUTING_KEY_ENV)
            .context("no routing key: pass --routing-key-file FILE or set PAGERDUTY_ROUTING_KEY"),
    }
}

async fn deliver(connection: &Connection, prepared: Prepared) -> ExitCode {
    let client = Client::builder()
        .base_url(connection.base_url.as_str())
        .user_agent(connection.user_agent.as_str())
        .timeout(connection.timeout)
        .build();
    let client = match client {
        Ok(client) => client,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(exit::USAGE);
        }
    };
    let policy = RetryPolicy {
        max_attempts: connection.attempts,
        base_delay: connection.retry_base_delay,
        ..RetryPolicy::default()
    };
    let outcome = client
        .send_with_retry(prepared.endpoint, &prepared.key, prepared.body, &policy)
        .await;
    let attempts = outcome.attempts;
    match outcome.result {
        Ok(accepted) => {
            super::print_line(&pretty(&json!(accepted)));
            ExitCode::SUCCESS
        }
        Err(error) => {
            if let SendError::InvalidEvent {
                message, errors, ..
            } = &error
            {
                let answer =
                    json!({"status": "invalid event", "message": message, "errors": errors});
                super::print_line(&pretty(&answer));
                eprintln!("error: {error}");
                return ExitCode::from(exit::REJECTED);
            }
            let plural = if attempts == 1 { "" } else { "s" };
            eprintln!("error: not delivered after {attempts} attempt{plural}: {error}");
            ExitCode::from(exit::NOT_DELIVERED)
        }
    }
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}
