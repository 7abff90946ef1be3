//! `pagerbridge admin`: the operator's view of a running bridge through its admin API — lanes,
//! leases, queue, dead letters, incidents — and the two things to do about dead letters: replay and drop.
//!
//! It talks HTTP to the server (`--url`, `$PAGERBRIDGE_URL`; https anywhere, plain http only to
//! loopback) with a token from a file (`--token-file`, `$PAGERBRIDGE_ADMIN_TOKEN_FILE`; never a
//! flag taking the token itself, which would show in `ps`). Tables for people by default,
//! `--json` for machines. Long replays and drops go in batches with a progress bar on stderr
//! (only on a terminal).
//!
//! The requests and answers are [`pagerbridge::admin_api`]'s, the very types the server uses.
//!
//! Exit codes: 0 done; 1 error (the server refused, could not be reached, …; the message is on
//! stderr); 2 usage (bad flags, a bad URL, or a bulk operation without `--yes` and without a
//! terminal to confirm on).

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, anyhow};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use pagerduty_events::BaseUrl;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::print_line;
use pagerbridge::admin_api::{
    self, DeadLetterQuery, DeadLettersResponse, DropRequest, DropResponse, IncidentCursor,
    IncidentQuery, IncidentsResponse, LanesResponse, LeasesResponse, QueueQuery, QueueResponse,
    ReplayRequest, ReplayResponse,
};
use pagerbridge::store::{DeadLetterFilter, StatusFilter};

/// Dead letters per replay or drop request. An incident's dead letters always go in the same
/// request (its replay needs them together, see `DeadLetters::replay`), so a batch may be larger.
const BATCH: usize = 100;
/// Dead letters per listing page when collecting what to replay or drop.
const PAGE: u32 = admin_api::MAX_LIMIT;

#[derive(Debug, Args)]
pub struct AdminArgs {
    /// Base URL of the running bridge. https anywhere; plain http only to a loopback address.
    #[arg(
        long,
        env = "PAGERBRIDGE_URL",
        default_value = "http://127.0.0.1:9095",
        value_name = "URL",
        value_parser = BaseUrl::parse,
        global = true
    )]
    url: BaseUrl,

    /// File holding an admin token (the first non-blank, non-`#` line), as listed in the
    /// server's admin.bearer_token_file. There is deliberately no flag taking the token itself.
    #[arg(
        long,
        env = "PAGERBRIDGE_ADMIN_TOKEN_FILE",
        value_name = "FILE",
        global = true
    )]
    token_file: Option<PathBuf>,

    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,

    /// Timeout of each request to the bridge.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration, global = true)]
    timeout: Duration,

    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Per target: events pending, dead letters, age of the oldest pending event, the lane's
    /// state (healthy, rate_limited, backing_off, misconfigured) and its routing key's budget
    /// use in the current window.
    Lanes,
    /// Every lease: which replica drives each lane and runs each singleton (housekeeping,
    /// silence, fallback), and until when.
    Leases,
    /// Pending events, oldest first.
    Queue {
        /// Only this target's.
        #[arg(long)]
        target: Option<String>,
        /// At most this many (1-1000).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
    },
    /// Dead letters, oldest first, with the reason each died.
    DeadLetters {
        /// Only this target's.
        #[arg(long)]
        target: Option<String>,
        /// Only this incident's.
        #[arg(long)]
        dedup_key: Option<String>,
        /// At most this many (1-1000).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
        /// Also list dropped ones, with why they were dropped.
        #[arg(long)]
        include_dropped: bool,
    },
    /// Incidents as the bridge last told PagerDuty of them, by target and dedup key: state,
    /// fingerprint, source, first and last event, last send.
    Incidents {
        /// Only this target's.
        #[arg(long)]
        target: Option<String>,
        /// Only those in this state: triggered, acknowledged, resolved, or open (triggered or
        /// acknowledged).
        #[arg(long, value_parser = parse_state)]
        state: Option<StatusFilter>,
        /// Only this incident (in each target).
        #[arg(long)]
        dedup_key: Option<String>,
        /// At most this many (1-1000).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
        /// Start after this incident: the `next` cursor (<target>:<dedup_key>) of the page
        /// before.
        #[arg(long, value_name = "CURSOR", value_parser = parse_cursor)]
        after: Option<IncidentCursor>,
    },
    /// Put dead letters back in the queue under their original ids, so each goes before any
    /// newer event of its incident. One that a newer event of its incident has superseded
    /// (e.g. a trigger whose resolve PagerDuty already has) stays dead and is reported.
    Replay {
        #[command(flatten)]
        selection: Selection,
        /// Do not ask for confirmation of --target or --all.
        #[arg(long)]
        yes: bool,
    },
    /// Give up on dead letters: they are kept as a record with the reason, no longer listed
    /// (unless --include-dropped) and never replayed. Pending events are never dropped.
    Drop {
        #[command(flatten)]
        selection: Selection,
        /// Why, for the record (required).
        #[arg(long)]
        reason: String,
        /// Do not ask for confirmation of --target or --all.
        #[arg(long)]
        yes: bool,
    },
}

fn parse_state(text: &str) -> Result<StatusFilter, String> {
    StatusFilter::parse(text)
        .ok_or_else(|| "expected triggered, acknowledged, resolved or open".to_owned())
}

fn parse_cursor(text: &str) -> Result<IncidentCursor, String> {
    IncidentCursor::parse(text).ok_or_else(|| "expected <target>:<dedup_key>".to_owned())
}

/// Which dead letters: exactly one of these.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
struct Selection {
    /// These dead letters (ids as listed by `dead-letters`); repeatable, or several after one --id.
    #[arg(long = "id", value_name = "ID", num_args = 1..)]
    ids: Vec<i64>,
    /// Every dead letter of this target.
    #[arg(long)]
    target: Option<String>,
    /// Every dead letter.
    #[arg(long)]
    all: bool,
}

/// Why the command failed, and so its exit code.
enum Failure {
    Usage(String),
    Error(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        Failure::Error(error)
    }
}

pub async fn run(args: AdminArgs) -> ExitCode {
    match admin(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
        Err(Failure::Error(error)) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn admin(args: AdminArgs) -> Result<(), Failure> {
    let api = Api::new(&args)?;
    match &args.command {
        AdminCommand::Lanes => lanes(&api, args.json).await,
        AdminCommand::Leases => leases(&api, args.json).await,
        AdminCommand::Queue { target, limit } => {
            let query = QueueQuery {
                target: target.clone(),
                limit: *limit,
            };
            queue(&api, &query, args.json).await
        }
        AdminCommand::DeadLetters {
            target,
            dedup_key,
            limit,
            include_dropped,
        } => {
            let query = DeadLetterQuery {
                target: target.clone(),
                dedup_key: dedup_key.clone(),
                limit: *limit,
                include_dropped: *include_dropped,
                ..DeadLetterQuery::default()
            };
            dead_letters(&api, &query, args.json).await
        }
        AdminCommand::Incidents {
            target,
            state,
            dedup_key,
            limit,
            after,
        } => {
            let query = IncidentQuery {
                target: target.clone(),
                state: *state,
                dedup_key: dedup_key.clone(),
                after: after.clone(),
                limit: *limit,
            };
            incidents(&api, &query, args.json).await
        }
        AdminCommand::Replay { selection, yes } => {
            bulk(&api, Operation::Replay, selection, *yes, args.json).await
        }
        AdminCommand::Drop {
            selection,
            reason,
            yes,
        } => {
            if reason.trim().is_empty() {
                return Err(Failure::Usage("--reason must not be empty".to_owned()));
            }
            bulk(&api, Operation::Drop(reason), selection, *yes, args.json).await
        }
    }
}

/// The admin API of one bridge.
struct Api {
    base: BaseUrl,
    token: Option<String>,
    http: reqwest::Client,
}

impl Api {
    fn new(args: &AdminArgs) -> Result<Self, Failure> {
        let token = args.token_file.as_deref().map(read_token).transpose()?;
        let http = reqwest::Client::builder()
            .timeout(args.timeout)
            .tls_version_min(reqwest::tls::Version::TLS_1_2)
            // A redirect could carry the token elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("pagerbridge-admin/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("cannot set up the HTTP client")?;
        Ok(Self {
            base: args.url.clone(),
            token,
            http,
        })
    }

    async fn get(&self, path: &str, query: &[(&str, String)]) -> anyhow::Result<Value> {
        let mut url = self.base.join(path);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        self.send(self.http.get(url), path).await
    }

    async fn post(&self, path: &str, body: &impl Serialize) -> anyhow::Result<Value> {
        let body = serde_json::to_vec(body).context("encoding the request")?;
        let request = self
            .http
            .post(self.base.join(path))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        self.send(request, path).await
    }

    async fn send(&self, request: reqwest::RequestBuilder, path: &str) -> anyhow::Result<Value> {
        let request = match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        let response = request
            .send()
            .await
            .map_err(|e| anyhow!("cannot reach the bridge at {}: {e}", self.base))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| anyhow!("reading the answer to {path}: {e}"))?;
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(body);
        }
        let code = body["error"].as_str().unwrap_or("error");
        let detail = body["detail"].as_str().unwrap_or("");
        let hint = match status.as_u16() {
            401 if self.token.is_none() => {
                " (pass --token-file or set PAGERBRIDGE_ADMIN_TOKEN_FILE)"
            }
            _ => "",
        };
        Err(anyhow!(
            "{path}: the bridge answered {status}: {code}: {detail}{hint}"
        ))
    }
}

/// The first token in a token file (blank lines and `#` comments skipped), as the server reads
/// its `admin.bearer_token_file`.
fn read_token(path: &Path) -> Result<String, Failure> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read token file {}", path.display()))?;
    text.lines()
        .map(str::trim)
        .find(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_owned)
        .ok_or_else(|| Failure::Error(anyhow!("token file {} holds no token", path.display())))
}

fn print_json(value: &Value) {
    print_line(&serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string()));
}

/// Prints an answer the CLI put together, as the server would have sent it (keys sorted).
fn print_serialized(answer: &impl Serialize) {
    match serde_json::to_value(answer) {
        Ok(value) => print_json(&value),
        Err(error) => eprintln!("error: cannot print the answer as JSON: {error}"),
    }
}

/// The bridge's answer as the type the server sent it as.
fn typed<T: DeserializeOwned>(answer: &Value, path: &str) -> anyhow::Result<T> {
    T::deserialize(answer).with_context(|| format!("the bridge's answer to {path} is not valid"))
}

/// Text columns, padded to the widest cell; the last column is not padded.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut out = String::new();
        for (i, cell) in cells.into_iter().enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                let pad = widths[i].saturating_sub(cell.chars().count());
                out.push_str(cell);
                out.push_str(&" ".repeat(pad + 2));
            }
        }
        out.trim_end().to_owned()
    };
    let mut lines = vec![line(headers.to_vec())];
    lines.extend(
        rows.iter()
            .map(|row| line(row.iter().map(String::as_str).collect())),
    );
    lines.join("\n")
}

/// At most `max` characters, ending in `…` when cut.
fn cut(text: &str, max: usize) -> String {
    let text = text.replace(['\n', '\r', '\t'], " ");
    if text.chars().count() <= max {
        text
    } else {
        let kept: String = text.chars().take(max.saturating_sub(1)).collect();
        format!("{kept}…")
    }
}

/// `text` as one shell word, quoted when it needs to be (dedup keys can hold anything).
fn shell_word(text: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_.:/=@%+,".contains(c);
    if !text.is_empty() && text.chars().all(plain) {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}

fn or_dash(text: Option<&str>) -> String {
    text.filter(|t| !t.is_empty()).unwrap_or("-").to_owned()
}

fn age(seconds: f64) -> String {
    let whole = Duration::from_secs(seconds.max(0.0) as u64);
    humantime::format_duration(whole).to_string()
}

/// A budget window, to the millisecond (windows under a second exist).
fn window(seconds: f64) -> String {
    Duration::try_from_secs_f64(seconds).map_or_else(
        |_| format!("{seconds}s"),
        |window| {
            let millis = Duration::from_millis(window.as_millis() as u64);
            humantime::format_duration(millis).to_string()
        },
    )
}

async fn lanes(api: &Api, json: bool) -> Result<(), Failure> {
    let answer = api.get(admin_api::LANES, &[]).await?;
    if json {
        print_json(&answer);
        return Ok(());
    }
    let LanesResponse { lanes } = typed(&answer, admin_api::LANES)?;
    let rows: Vec<Vec<String>> = lanes
        .iter()
        .map(|lane| {
            let target = if lane.configured {
                lane.target.clone()
            } else {
                format!("{} (not configured)", lane.target)
            };
            vec![
                target,
                lane.pending.to_string(),
                lane.dead.to_string(),
                lane.oldest_pending_age_seconds.map_or("-".to_owned(), age),
                or_dash(lane.state.map(|s| s.as_str())),
                lane.budget.as_ref().map_or("-".to_owned(), |b| {
                    format!("{}/{} per {}", b.used, b.limit, window(b.window_seconds))
                }),
                lane.lease.as_ref().map_or("-".to_owned(), |lease| {
                    format!("{} until {}", lease.owner, lease.expires_at)
                }),
            ]
        })
        .collect();
    print_line(&table(
        &[
            "TARGET",
            "PENDING",
            "DEAD",
            "OLDEST PENDING",
            "STATE",
            "BUDGET",
            "LEASE",
        ],
        &rows,
    ));
    Ok(())
}

async fn leases(api: &Api, json: bool) -> Result<(), Failure> {
    let answer = api.get(admin_api::LEASES, &[]).await?;
    if json {
        print_json(&answer);
        return Ok(());
    }
    let LeasesResponse { leases } = typed(&answer, admin_api::LEASES)?;
    let now = jiff::Timestamp::now();
    let rows: Vec<Vec<String>> = leases
        .iter()
        .map(|lease| {
            // Said outright: a released lease's expiry is 1970, which reads like a bug.
            let expires = if lease.expires_at > now {
                lease.expires_at.to_string()
            } else {
                format!("{} (expired)", lease.expires_at)
            };
            vec![
                lease.name.clone(),
                lease.owner.clone(),
                lease.epoch.to_string(),
                expires,
            ]
        })
        .collect();
    print_line(&table(&["NAME", "OWNER", "EPOCH", "EXPIRES"], &rows));
    Ok(())
}

async fn queue(api: &Api, query: &QueueQuery, json: bool) -> Result<(), Failure> {
    let answer = api.get(admin_api::QUEUE, &query.pairs()).await?;
    if json {
        print_json(&answer);
        return Ok(());
    }
    let QueueResponse { events } = typed(&answer, admin_api::QUEUE)?;
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| {
            vec![
                e.id.to_string(),
                e.target.clone(),
                e.action.as_str().to_owned(),
                or_dash(e.severity.map(|s| s.as_str())),
                e.accepted_at.to_string(),
                e.attempts.to_string(),
                cut(&or_dash(e.dedup_key.as_deref()), 16),
                cut(&or_dash(e.summary.as_deref()), 50),
                cut(&or_dash(e.last_error.as_deref()), 80),
            ]
        })
        .collect();
    print_line(&table(
        &[
            "ID",
            "TARGET",
            "ACTION",
            "SEVERITY",
            "ACCEPTED",
            "ATTEMPTS",
            "DEDUP KEY",
            "SUMMARY",
            "LAST ERROR",
        ],
        &rows,
    ));
    Ok(())
}

async fn dead_letters(api: &Api, query: &DeadLetterQuery, json: bool) -> Result<(), Failure> {
    let answer = api.get(admin_api::DEAD_LETTERS, &query.pairs()).await?;
    if json {
        print_json(&answer);
        return Ok(());
    }
    let DeadLettersResponse {
        dead_letters: dead,
        next_after_id,
    } = typed(&answer, admin_api::DEAD_LETTERS)?;
    let rows: Vec<Vec<String>> = dead
        .iter()
        .map(|d| {
            let mut status = match (&d.drop_reason, d.superseded_by) {
                (Some(why), _) => format!("dropped: {why}"),
                (None, Some(by)) => format!("superseded by {by}"),
                (None, None) => "dead".to_owned(),
            };
            status = cut(&status, 40);
            vec![
                d.id.to_string(),
                d.target.clone(),
                d.action.as_str().to_owned(),
                d.dead_at.to_string(),
                status,
                cut(&or_dash(d.dedup_key.as_deref()), 16),
                cut(&or_dash(d.summary.as_deref()), 50),
                cut(&d.reason, 100),
            ]
        })
        .collect();
    print_line(&table(
        &[
            "ID",
            "TARGET",
            "ACTION",
            "DEAD AT",
            "STATUS",
            "DEDUP KEY",
            "SUMMARY",
            "REASON",
        ],
        &rows,
    ));
    if next_after_id.is_some() {
        eprintln!(
            "(more than {}; raise --limit or narrow with --target/--dedup-key)",
            query.limit
        );
    }
    Ok(())
}

async fn incidents(api: &Api, query: &IncidentQuery, json: bool) -> Result<(), Failure> {
    let answer = api.get(admin_api::INCIDENTS, &query.pairs()).await?;
    if json {
        print_json(&answer);
        return Ok(());
    }
    let IncidentsResponse { incidents, next } = typed(&answer, admin_api::INCIDENTS)?;
    let when = |at: Option<jiff::Timestamp>| at.map_or("-".to_owned(), |at| at.to_string());
    let rows: Vec<Vec<String>> = incidents
        .iter()
        .map(|i| {
            vec![
                i.target.clone(),
                i.dedup_key.clone(),
                i.state.as_str().to_owned(),
                or_dash(i.source.map(|s| s.as_str())),
                when(i.first_event_at),
                i.last_event_at.to_string(),
                when(i.last_sent_at),
                cut(&or_dash(i.fingerprint.as_deref()), 24),
            ]
        })
        .collect();
    print_line(&table(
        &[
            "TARGET",
            "DEDUP KEY",
            "STATE",
            "SOURCE",
            "FIRST EVENT",
            "LAST EVENT",
            "LAST SENT",
            "FINGERPRINT",
        ],
        &rows,
    ));
    if let Some(next) = next {
        eprintln!(
            "(more: add --after {} for the next page)",
            shell_word(&next.to_string())
        );
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Operation<'a> {
    Replay,
    Drop(&'a str),
}

impl Operation<'_> {
    fn verb(self) -> &'static str {
        match self {
            Operation::Replay => "replay",
            Operation::Drop(_) => "drop",
        }
    }
}

/// Replays or drops the selection in batches, with a progress bar, and reports the total.
async fn bulk(
    api: &Api,
    operation: Operation<'_>,
    selection: &Selection,
    yes: bool,
    json: bool,
) -> Result<(), Failure> {
    let batches = if selection.ids.is_empty() {
        let query = DeadLetterQuery {
            target: selection.target.clone(),
            limit: PAGE,
            ..DeadLetterQuery::default()
        };
        let batches = collect_batches(api, query).await?;
        let count: usize = batches.iter().map(Vec::len).sum();
        let scope = match &selection.target {
            Some(target) => format!("of target {target:?}"),
            None => "of every target".to_owned(),
        };
        if count > 0 && !yes {
            confirm(&format!(
                "{} {count} dead letter(s) {scope}?",
                capitalised(operation.verb())
            ))?;
        }
        batches
    } else {
        // Named one by one: the operator chose them, and an incident's ids must travel
        // together, so they go in as few requests as the server allows.
        selection
            .ids
            .chunks(admin_api::MAX_IDS)
            .map(<[i64]>::to_vec)
            .collect()
    };
    let total: usize = batches.iter().map(Vec::len).sum();
    let bar = progress_bar(total as u64, operation.verb(), json);
    let mut replayed = ReplayResponse::default();
    let mut dropped = DropResponse::default();
    for batch in &batches {
        let sent = match operation {
            Operation::Replay => replay_batch(api, batch, &mut replayed).await,
            Operation::Drop(reason) => drop_batch(api, batch, reason, &mut dropped).await,
        };
        if let Err(error) = sent {
            bar.abandon();
            let done = match operation {
                Operation::Replay => replayed.replayed_ids.len() as u64,
                Operation::Drop(_) => dropped.dropped,
            };
            return Err(Failure::Error(error.context(format!(
                "stopped after {done} of {total} ({}ed so far)",
                operation.verb()
            ))));
        }
        bar.inc(batch.len() as u64);
    }
    bar.finish_and_clear();
    let requested = total;
    match operation {
        Operation::Replay => {
            let replayed = ReplayResponse::new(replayed.replayed_ids, replayed.superseded);
            if json {
                print_serialized(&replayed);
                return Ok(());
            }
            print_line(&format!(
                "replayed {} of {requested} dead letter(s); {} superseded (left dead)",
                replayed.replayed,
                replayed.superseded.len()
            ));
            for s in &replayed.superseded {
                print_line(&format!(
                    "  {} superseded by {}: a newer event of its incident reached PagerDuty or is not being replayed",
                    s.id, s.by
                ));
            }
            let missing = requested.saturating_sub(replayed.replayed + replayed.superseded.len());
            if missing > 0 {
                print_line(&format!(
                    "  {missing} were not dead letters (unknown, pending, dropped or replayed meanwhile)"
                ));
            }
        }
        Operation::Drop(_) => {
            if json {
                print_serialized(&dropped);
                return Ok(());
            }
            print_line(&format!(
                "dropped {} of {requested} dead letter(s)",
                dropped.dropped
            ));
        }
    }
    Ok(())
}

/// Replays one batch, adding what the bridge did to `so_far`.
async fn replay_batch(api: &Api, ids: &[i64], so_far: &mut ReplayResponse) -> anyhow::Result<()> {
    let request = ReplayRequest {
        filter: DeadLetterFilter::ids(ids.iter().copied()),
    };
    let answer = api.post(admin_api::REPLAY, &request).await?;
    let done: ReplayResponse = typed(&answer, admin_api::REPLAY)?;
    so_far.replayed_ids.extend(done.replayed_ids);
    so_far.superseded.extend(done.superseded);
    Ok(())
}

/// Drops one batch, adding what the bridge did to `so_far`.
async fn drop_batch(
    api: &Api,
    ids: &[i64],
    reason: &str,
    so_far: &mut DropResponse,
) -> anyhow::Result<()> {
    let request = DropRequest {
        filter: DeadLetterFilter::ids(ids.iter().copied()),
        reason: reason.to_owned(),
    };
    let answer = api.post(admin_api::DROP, &request).await?;
    let done: DropResponse = typed(&answer, admin_api::DROP)?;
    so_far.dropped += done.dropped;
    Ok(())
}

fn capitalised(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// Lists the dead letters matching `query`, page by page, and packs them into batches of about
/// [`BATCH`], keeping each incident's dead letters in one batch (oldest incidents first).
async fn collect_batches(api: &Api, mut query: DeadLetterQuery) -> Result<Vec<Vec<i64>>, Failure> {
    let mut incidents: BTreeMap<(String, String), Vec<i64>> = BTreeMap::new();
    let mut singles: Vec<Vec<i64>> = Vec::new();
    loop {
        let answer = api.get(admin_api::DEAD_LETTERS, &query.pairs()).await?;
        let DeadLettersResponse {
            dead_letters: page,
            next_after_id,
        } = typed(&answer, admin_api::DEAD_LETTERS)?;
        for dead in &page {
            match &dead.dedup_key {
                Some(key) => incidents
                    .entry((dead.target.clone(), key.clone()))
                    .or_default()
                    .push(dead.id),
                None => singles.push(vec![dead.id]),
            }
        }
        match next_after_id {
            Some(next) if !page.is_empty() => query.after_id = Some(next),
            _ => break,
        }
    }
    let mut groups: Vec<Vec<i64>> = incidents.into_values().chain(singles).collect();
    groups.sort_by_key(|ids| ids.first().copied().unwrap_or(i64::MAX));
    let mut batches: Vec<Vec<i64>> = Vec::new();
    for group in groups {
        match batches.last_mut() {
            Some(batch) if batch.len() + group.len() <= BATCH => batch.extend(group),
            _ => batches.push(group),
        }
    }
    Ok(batches)
}

/// Asks on the terminal; without one, refuses (exit 2) rather than act unconfirmed.
fn confirm(question: &str) -> Result<(), Failure> {
    if !std::io::stdin().is_terminal() {
        return Err(Failure::Usage(format!(
            "{question} Refusing without --yes: stdin is not a terminal to confirm on"
        )));
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .context("reading the confirmation")?;
    if matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
        Ok(())
    } else {
        Err(Failure::Error(anyhow!(
            "not confirmed; nothing was changed"
        )))
    }
}

/// A bar on stderr when it is a terminal and the output is for people; hidden otherwise.
fn progress_bar(total: u64, verb: &str, json: bool) -> ProgressBar {
    if json || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    let template = format!("{verb}ing {{bar:40}} {{pos}}/{{len}} dead letters ({{eta}} left)");
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_line_up() {
        let rows = vec![
            vec!["1".to_owned(), "default".to_owned(), "x".to_owned()],
            vec!["1234".to_owned(), "b".to_owned(), "last".to_owned()],
        ];
        assert_eq!(
            table(&["ID", "TARGET", "NOTE"], &rows),
            "ID    TARGET   NOTE\n1     default  x\n1234  b        last"
        );
    }

    #[test]
    fn cursors_are_shown_as_one_shell_word() {
        assert_eq!(shell_word("db:abc-1"), "db:abc-1");
        assert_eq!(shell_word("db:a b"), "'db:a b'");
        assert_eq!(shell_word("db:it's"), r"'db:it'\''s'");
    }

    #[test]
    fn windows_show_to_the_millisecond() {
        assert_eq!(window(60.0), "1m");
        assert_eq!(window(0.5), "500ms");
        assert_eq!(window(-1.0), "-1s");
    }

    #[test]
    fn cells_are_cut_on_char_boundaries() {
        assert_eq!(cut("héllo wörld", 6), "héllo…");
        assert_eq!(cut("short", 6), "short");
        assert_eq!(cut("two\nlines", 20), "two lines");
    }
}
