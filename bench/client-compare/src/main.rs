//! The Rust side of the client comparison run by `scripts/bench-client` (issue 11): a loopback
//! server that every client is pointed at (a fixed answer, or the project's simulator), a
//! minimal HTTP/1.1 sender that measures that server alone, and the two Rust clients measured
//! the same way as `compare.py` measures the Python one.
//!
//! Every `send` prints one JSON line: events, seconds, events/s, per-event p50/p99 and the CPU
//! the sending process used, so that the driver can put the three clients side by side.

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::{Parser, Subcommand, ValueEnum};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Barrier;

/// A made-up key: every server here is on loopback, none of them is PagerDuty.
const ROUTING_KEY: &str = "0123456789abcdef0123456789abcdef";
// The event every client sends (only the dedup key changes), as `compare.py` builds it too.
const SUMMARY: &str = "Disk full on db-1.prod.example.com (/var/lib/postgresql 99.3%)";
const SOURCE: &str = "db-1.prod.example.com";
const COMPONENT: &str = "postgresql";
const GROUP: &str = "pg-main";
const CLASS: &str = "disk";
/// PagerDuty's answer to an accepted alert event; `pagerduty` (Python) insists on a dedup key.
const ACCEPTED: &str = r#"{"status":"success","message":"Event processed","dedup_key":"bench"}"#;

#[derive(Parser)]
#[command(about = "Client throughput comparison; run it through scripts/bench-client")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serves on 127.0.0.1:0, prints the base URL on stdout, and stops when stdin closes.
    /// `GET /_bench/stats` answers the connections accepted and event requests served.
    Serve {
        #[arg(long, value_enum, default_value = "fixed")]
        server: ServerKind,
    },
    /// Sends trigger events for `--seconds` after `--warmup` untimed ones per sender and prints
    /// one JSON line.
    Send {
        #[arg(long, value_enum)]
        client: ClientKind,
        /// Base URL of the server, e.g. http://127.0.0.1:PORT.
        #[arg(long)]
        url: String,
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
        /// Requests in flight at once (tasks sharing one client).
        #[arg(long, default_value_t = 1)]
        concurrency: usize,
        /// Untimed events per task first (connections opened, caches warm).
        #[arg(long, default_value_t = 100)]
        warmup: u64,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum ServerKind {
    /// 202 with a fixed body after reading the request: as cheap as a server gets.
    Fixed,
    /// The project's PagerDuty simulator, rate limit off: parses, validates, logs, dedups.
    Simulator,
}

#[derive(Clone, Copy, ValueEnum)]
enum ClientKind {
    /// hyper's bare HTTP/1.1 connection with a prebuilt body: the server alone, nearly.
    Raw,
    /// `pagerduty-events`, this project's client.
    Ours,
    /// The `pagerduty-rs` crate (async API).
    PagerdutyRs,
    /// reqwest 0.13 set up as ours sets it up, posting a body built once: what ours costs
    /// beyond its HTTP client (a diagnostic, not in the default table).
    Reqwest,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // A multi-threaded runtime with the default worker count, as `#[tokio::main]` gives a user.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match cli.command {
            Command::Serve { server } => serve(server).await,
            Command::Send {
                client,
                url,
                seconds,
                concurrency,
                warmup,
            } => {
                let settings = Settings {
                    seconds: Duration::from_secs_f64(seconds),
                    concurrency: concurrency.max(1),
                    warmup,
                };
                let report = match client {
                    ClientKind::Raw => measure(&settings, Raw::new(&url)?).await?,
                    ClientKind::Ours => measure(&settings, Ours::new(&url)?).await?,
                    ClientKind::PagerdutyRs => measure(&settings, PagerdutyRs::new(&url)?).await?,
                    ClientKind::Reqwest => measure(&settings, Reqwest::new(&url)?).await?,
                };
                println!("{report}");
                Ok(())
            }
        }
    })
}

// ---------------------------------------------------------------------------------------------
// The server

#[derive(Default)]
struct ServerStats {
    connections: AtomicU64,
    requests: AtomicU64,
}

async fn serve(kind: ServerKind) -> anyhow::Result<()> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    println!("http://{}", listener.local_addr()?);
    let stats = Arc::new(ServerStats::default());
    let router = match kind {
        ServerKind::Fixed => None,
        ServerKind::Simulator => Some(
            pagerduty_simulator::Simulator::new(pagerduty_simulator::Config {
                rate_limit: 0,
                ..Default::default()
            })
            .router(),
        ),
    };
    let accept = async {
        loop {
            let (stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
            stats.connections.fetch_add(1, Ordering::Relaxed);
            let stats = stats.clone();
            let router = router.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    answer(request, stats.clone(), router.clone())
                });
                // A client closing its connection mid-request is not the server's concern.
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    };
    // The driver closes our stdin to stop us, so nothing outlives it.
    let stdin_closed = async {
        let mut sink = Vec::new();
        let _ = tokio::io::stdin().read_to_end(&mut sink).await;
    };
    tokio::select! {
        result = accept => result,
        () = stdin_closed => Ok(()),
    }
}

async fn answer(
    request: Request<Incoming>,
    stats: Arc<ServerStats>,
    router: Option<axum::Router>,
) -> Result<axum::response::Response, Infallible> {
    if request.uri().path() == "/_bench/stats" {
        let body = json!({
            "connections": stats.connections.load(Ordering::Relaxed),
            "requests": stats.requests.load(Ordering::Relaxed),
        });
        return Ok(axum::response::Response::new(body.to_string().into()));
    }
    stats.requests.fetch_add(1, Ordering::Relaxed);
    match router {
        Some(mut router) => tower_service::Service::call(&mut router, request).await,
        None => {
            // Read the whole body, as a real server must before answering on a kept-alive
            // connection.
            let status = match request.into_body().collect().await {
                Ok(_) => StatusCode::ACCEPTED,
                Err(_) => StatusCode::BAD_REQUEST,
            };
            let mut response = axum::response::Response::new(ACCEPTED.into());
            *response.status_mut() = status;
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/json"),
            );
            Ok(response)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The senders

struct Settings {
    seconds: Duration,
    concurrency: usize,
    warmup: u64,
}

/// One way of sending an event; `fork` gives each task its own handle (a clone sharing the
/// client's pool, or a connection of its own for `Raw`).
trait Sender: Send + Sized + 'static {
    const NAME: &'static str;
    fn fork(&self) -> impl Future<Output = anyhow::Result<Self>> + Send;
    /// Builds one event from the constants above, as a caller would, and sends it once.
    fn send(&mut self, dedup_key: String) -> impl Future<Output = anyhow::Result<()>> + Send;
}

#[derive(Clone)]
struct Ours {
    client: pagerduty_events::Client,
    key: pagerduty_events::RoutingKey,
}

impl Ours {
    fn new(url: &str) -> anyhow::Result<Self> {
        Ok(Self {
            client: pagerduty_events::Client::builder().base_url(url).build()?,
            key: pagerduty_events::RoutingKey::new(ROUTING_KEY)?,
        })
    }
}

fn custom_details() -> serde_json::Map<String, serde_json::Value> {
    serde_json::Map::from_iter([
        ("alertname".to_owned(), json!("DiskFull")),
        ("instance".to_owned(), json!("db-1.prod.example.com:9100")),
        ("job".to_owned(), json!("node")),
        ("mountpoint".to_owned(), json!("/var/lib/postgresql")),
        ("free_bytes".to_owned(), json!(1_048_576)),
        ("used_ratio".to_owned(), json!(0.993)),
        ("team".to_owned(), json!("storage")),
    ])
}

impl Sender for Ours {
    const NAME: &'static str = "ours";

    async fn fork(&self) -> anyhow::Result<Self> {
        Ok(self.clone())
    }

    async fn send(&mut self, dedup_key: String) -> anyhow::Result<()> {
        self.client
            .send_alert(&self.key, &our_trigger(dedup_key)?)
            .await?;
        Ok(())
    }
}

/// The benchmark's event, built with our types from the constants above.
fn our_trigger(dedup_key: String) -> anyhow::Result<pagerduty_events::AlertEvent> {
    use pagerduty_events::{AlertEvent, DedupKey, Severity, Source, Summary, Trigger};
    let mut trigger = Trigger::new(
        Summary::new(SUMMARY)?,
        Source::new(SOURCE)?,
        Severity::Critical,
    );
    trigger.dedup_key = Some(DedupKey::new(dedup_key)?);
    trigger.payload.component = Some(COMPONENT.to_owned());
    trigger.payload.group = Some(GROUP.to_owned());
    trigger.payload.class = Some(CLASS.to_owned());
    trigger.payload.custom_details = Some(custom_details());
    Ok(AlertEvent::Trigger(trigger))
}

struct PagerdutyRs {
    events: Arc<pagerduty_rs::eventsv2async::EventsV2>,
}

impl PagerdutyRs {
    fn new(url: &str) -> anyhow::Result<Self> {
        // The patched crate reads its base URL from here (see pagerduty-rs-base-url.patch);
        // set before any task runs, while this process has a single thread sending.
        // SAFETY: no other thread reads or writes the environment at this point.
        unsafe { std::env::set_var("PAGERDUTY_RS_BASE_URL", url) };
        let events = pagerduty_rs::eventsv2async::EventsV2::new(ROUTING_KEY.to_owned(), None)
            .map_err(|e| anyhow::anyhow!("pagerduty-rs: {e}"))?;
        Ok(Self {
            events: Arc::new(events),
        })
    }
}

impl Sender for PagerdutyRs {
    const NAME: &'static str = "pagerduty-rs";

    async fn fork(&self) -> anyhow::Result<Self> {
        Ok(Self {
            events: self.events.clone(),
        })
    }

    async fn send(&mut self, dedup_key: String) -> anyhow::Result<()> {
        use pagerduty_rs::types::{AlertTrigger, AlertTriggerPayload, Event, Severity};
        let trigger = AlertTrigger {
            payload: AlertTriggerPayload {
                severity: Severity::Critical,
                summary: SUMMARY.to_owned(),
                source: SOURCE.to_owned(),
                timestamp: None,
                component: Some(COMPONENT.to_owned()),
                group: Some(GROUP.to_owned()),
                class: Some(CLASS.to_owned()),
                custom_details: Some(custom_details()),
            },
            dedup_key: Some(dedup_key),
            images: None,
            links: None,
            client: None,
            client_url: None,
        };
        self.events
            .event(Event::AlertTrigger(trigger))
            .await
            .map_err(|e| anyhow::anyhow!("pagerduty-rs: {e}"))
    }
}

/// reqwest with the settings `pagerduty_events::ClientBuilder` gives it, and the body built
/// once: everything ours does per event but build the event, its body and classify the answer.
#[derive(Clone)]
struct Reqwest {
    client: reqwest::Client,
    url: reqwest::Url,
    body: Bytes,
}

impl Reqwest {
    fn new(url: &str) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .user_agent(pagerduty_events::DEFAULT_USER_AGENT)
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            client,
            url: format!("{url}/v2/enqueue").parse()?,
            body: prebuilt_body()?,
        })
    }
}

impl Sender for Reqwest {
    const NAME: &'static str = "reqwest";

    async fn fork(&self) -> anyhow::Result<Self> {
        Ok(self.clone())
    }

    async fn send(&mut self, _dedup_key: String) -> anyhow::Result<()> {
        let response = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(self.body.clone())
            .send()
            .await?;
        let status = response.status();
        response.bytes().await?;
        if status != StatusCode::ACCEPTED {
            bail!("reqwest: answered {status}");
        }
        Ok(())
    }
}

/// The same JSON as ours sends, built once: the event's wire form with the routing key.
fn prebuilt_body() -> anyhow::Result<Bytes> {
    let mut body = serde_json::to_value(our_trigger("bench/prebuilt".to_owned())?)?;
    body.as_object_mut()
        .context("an event is a JSON object")?
        .insert("routing_key".to_owned(), json!(ROUTING_KEY));
    Ok(Bytes::from(serde_json::to_vec(&body)?))
}

/// A bare keep-alive HTTP/1.1 connection posting a body built once: what the server costs
/// with next to nothing on the client side.
struct Raw {
    addr: SocketAddr,
    host: String,
    body: Bytes,
    sender: Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>>,
}

impl Raw {
    fn new(url: &str) -> anyhow::Result<Self> {
        let host = url
            .strip_prefix("http://")
            .context("the raw sender speaks plain http only")?
            .trim_end_matches('/')
            .to_owned();
        let addr = host.parse().context("the raw sender needs IP:PORT")?;
        Ok(Self {
            addr,
            host,
            body: prebuilt_body()?,
            sender: None,
        })
    }
}

impl Sender for Raw {
    const NAME: &'static str = "raw";

    async fn fork(&self) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(self.addr).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        Ok(Self {
            addr: self.addr,
            host: self.host.clone(),
            body: self.body.clone(),
            sender: Some(sender),
        })
    }

    async fn send(&mut self, _dedup_key: String) -> anyhow::Result<()> {
        let sender = self.sender.as_mut().context("not connected")?;
        let request = Request::post("/v2/enqueue")
            .header(hyper::header::HOST, &self.host)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(self.body.clone()))?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        response.into_body().collect().await?;
        if status != StatusCode::ACCEPTED {
            bail!("raw: answered {status}");
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Measuring

/// What one task did in the timed phase.
struct Share {
    latencies_ns: Vec<u64>,
    finished: Instant,
}

async fn measure<S: Sender>(settings: &Settings, prototype: S) -> anyhow::Result<String> {
    // Everyone warms up, then the clock and the CPU count start, then the timed phase.
    let ready = Arc::new(Barrier::new(settings.concurrency + 1));
    let go = Arc::new(Barrier::new(settings.concurrency + 1));
    let start = Arc::new(OnceLock::new());
    let mut tasks = Vec::with_capacity(settings.concurrency);
    for task in 0..settings.concurrency {
        let mut sender = prototype.fork().await?;
        let (ready, go, start) = (ready.clone(), go.clone(), start.clone());
        let (seconds, warmup) = (settings.seconds, settings.warmup);
        tasks.push(tokio::spawn(async move {
            let mut seq = 0u64;
            let mut warm = Ok(());
            while seq < warmup && warm.is_ok() {
                warm = sender.send(format!("bench/{task}/{seq}")).await;
                seq += 1;
            }
            // Wait at the barriers even after a failure, so that the others are not stranded.
            ready.wait().await;
            go.wait().await;
            warm?;
            let start: Instant = *start.get().context("start unset")?;
            let mut latencies_ns = Vec::with_capacity(1 << 16);
            while start.elapsed() < seconds {
                let began = Instant::now();
                sender.send(format!("bench/{task}/{seq}")).await?;
                latencies_ns.push(u64::try_from(began.elapsed().as_nanos()).unwrap_or(u64::MAX));
                seq += 1;
            }
            anyhow::Ok(Share {
                latencies_ns,
                finished: Instant::now(),
            })
        }));
    }
    ready.wait().await;
    let cpu_before = process_cpu()?;
    let began = Instant::now();
    start
        .set(began)
        .map_err(|_| anyhow::anyhow!("start set twice"))?;
    go.wait().await;
    let mut latencies_ns = Vec::new();
    let mut finished = began;
    for task in tasks {
        let share = task.await??;
        latencies_ns.extend(share.latencies_ns);
        finished = finished.max(share.finished);
    }
    let cpu = process_cpu()? - cpu_before;
    let seconds = (finished - began).as_secs_f64();
    latencies_ns.sort_unstable();
    let events = latencies_ns.len();
    if events == 0 {
        bail!("{}: no event sent in the timed phase", S::NAME);
    }
    Ok(json!({
        "client": S::NAME,
        "concurrency": settings.concurrency,
        "events": events,
        "warmup_events": settings.warmup * settings.concurrency as u64,
        "seconds": seconds,
        "events_per_s": events as f64 / seconds,
        "p50_us": percentile(&latencies_ns, 0.50) as f64 / 1e3,
        "p99_us": percentile(&latencies_ns, 0.99) as f64 / 1e3,
        "cpu_us_per_event": cpu.as_secs_f64() * 1e6 / events as f64,
    })
    .to_string())
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[u64], p: f64) -> u64 {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// User + system CPU time of this process so far (from /proc, Linux only, as is this bench).
fn process_cpu() -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').context("odd /proc/self/stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks: u64 = fields
        .get(11..13)
        .context("short /proc/self/stat")?
        .iter()
        .map(|f| f.parse::<u64>())
        .sum::<Result<u64, _>>()?;
    // USER_HZ is 100 on every Linux this runs on.
    Ok(Duration::from_millis(ticks * 10))
}
