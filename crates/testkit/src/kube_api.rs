//! A fake Kubernetes API server for Secrets, on loopback: enough of `list` and `watch` for a
//! real `kube` client (and its runtime watcher) to run against, with the failures a real one
//! has.
//!
//! It serves `GET /api/v1/namespaces/{ns}/secrets`, as a list or, with `watch=true`, as a
//! stream of `ADDED` / `MODIFIED` / `DELETED` / `BOOKMARK` events from the asked resource
//! version on; equality label selectors (`a=b,c=d`) are honoured. A test changes Secrets with
//! [`FakeKubeApi::put_secret`] and [`FakeKubeApi::delete_secret`], and breaks things with
//! [`FakeKubeApi::expire`] (410 Gone: an `ERROR` event on the open watches, and any watch from
//! an older resource version is answered the same), [`FakeKubeApi::drop_watches`] (watch
//! connections cut mid-stream) and [`FakeKubeApi::stop`] / [`FakeKubeApi::restart`] (the
//! server goes away and comes back on the same port). [`FakeKubeApi::kubeconfig`] writes the
//! kubeconfig a client reads (`KUBECONFIG`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;

/// What open watch streams are told.
#[derive(Clone, Debug)]
enum Broadcast {
    /// `ADDED`/`MODIFIED`/`DELETED` of an object, at its resource version.
    Event(Change),
    Bookmark(u64),
    /// 410 Gone, then the stream ends.
    Expired,
    /// The connection is cut without a clean end.
    Drop,
}

#[derive(Clone, Debug)]
struct Change {
    kind: &'static str,
    version: u64,
    namespace: String,
    object: Value,
}

struct Inner {
    /// `(namespace, name)` → the Secret as served.
    secrets: BTreeMap<(String, String), Value>,
    version: u64,
    /// Every change, for watches that start from an older version.
    history: Vec<Change>,
    /// Watches from before this version get 410 Gone.
    oldest_watchable: u64,
    /// Requests served, as `list` or `watch` (what a test can wait on).
    requests: Vec<String>,
}

#[derive(Clone)]
struct Shared {
    inner: Arc<Mutex<Inner>>,
    events: broadcast::Sender<Broadcast>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The fake API server; stops when dropped.
pub struct FakeKubeApi {
    addr: SocketAddr,
    shared: Shared,
    server: Option<JoinHandle<()>>,
}

impl FakeKubeApi {
    /// Starts on a free loopback port.
    pub async fn start() -> Self {
        let (events, _) = broadcast::channel(1024);
        let shared = Shared {
            inner: Arc::new(Mutex::new(Inner {
                secrets: BTreeMap::new(),
                version: 1,
                history: Vec::new(),
                oldest_watchable: 0,
                requests: Vec::new(),
            })),
            events,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake API server");
        let addr = listener.local_addr().expect("local addr");
        let mut api = Self {
            addr,
            shared,
            server: None,
        };
        api.serve(listener);
        api
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let app = Router::new()
            .route("/api/v1/namespaces/{namespace}/secrets", get(secrets))
            .with_state(self.shared.clone());
        self.server = Some(tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        }));
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Writes a kubeconfig for this server whose context's namespace is `namespace`; point
    /// `KUBECONFIG` at it.
    pub fn kubeconfig(&self, dir: &Path, namespace: &str) -> PathBuf {
        let path = dir.join("kubeconfig");
        let yaml = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {url}\n\
             users:\n- name: fake\n  user: {{}}\ncontexts:\n- name: fake\n  context:\n    \
             cluster: fake\n    user: fake\n    namespace: {namespace}\ncurrent-context: fake\n",
            url = self.url()
        );
        std::fs::write(&path, yaml).expect("write kubeconfig");
        path
    }

    /// Creates or replaces a Secret with `labels` and `data` (stored base64, as the API does).
    pub fn put_secret(
        &self,
        namespace: &str,
        name: &str,
        labels: &[(&str, &str)],
        data: &[(&str, &[u8])],
    ) {
        let mut inner = self.shared.lock();
        inner.version += 1;
        let version = inner.version;
        let labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
        let data: BTreeMap<&str, String> = data
            .iter()
            .map(|(k, v)| (*k, base64::engine::general_purpose::STANDARD.encode(v)))
            .collect();
        let object = json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "uid": format!("uid-{namespace}-{name}"),
                "resourceVersion": version.to_string(),
                "labels": labels,
            },
            "type": "Opaque",
            "data": data,
        });
        let key = (namespace.to_owned(), name.to_owned());
        let kind = if inner.secrets.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        inner.secrets.insert(key, object.clone());
        self.record(&mut inner, kind, version, namespace, object);
    }

    /// Deletes a Secret; false if there was none.
    pub fn delete_secret(&self, namespace: &str, name: &str) -> bool {
        let mut inner = self.shared.lock();
        let Some(mut object) = inner
            .secrets
            .remove(&(namespace.to_owned(), name.to_owned()))
        else {
            return false;
        };
        inner.version += 1;
        let version = inner.version;
        object["metadata"]["resourceVersion"] = json!(version.to_string());
        self.record(&mut inner, "DELETED", version, namespace, object);
        true
    }

    fn record(&self, inner: &mut Inner, kind: &'static str, version: u64, ns: &str, obj: Value) {
        let change = Change {
            kind,
            version,
            namespace: ns.to_owned(),
            object: obj,
        };
        inner.history.push(change.clone());
        // Sent under the lock, so a watch starting now sees it either in the history or live.
        let _ = self.shared.events.send(Broadcast::Event(change));
    }

    /// Sends a `BOOKMARK` at the current resource version to the open watches.
    pub fn bookmark(&self) {
        let inner = self.shared.lock();
        let _ = self.shared.events.send(Broadcast::Bookmark(inner.version));
    }

    /// Expires every resource version up to now (etcd compaction): open watches get an
    /// `ERROR` event with 410 Gone and end, and a watch from an older version gets the same,
    /// so clients must list again.
    pub fn expire(&self) {
        let mut inner = self.shared.lock();
        inner.version += 1;
        inner.oldest_watchable = inner.version;
        let _ = self.shared.events.send(Broadcast::Expired);
    }

    /// Cuts every open watch connection mid-stream.
    pub fn drop_watches(&self) {
        let _ = self.shared.events.send(Broadcast::Drop);
    }

    /// The server goes away: nothing listens on its port, and open watches are cut.
    pub fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
        self.drop_watches();
    }

    /// The server comes back on the same port, with the same Secrets.
    pub async fn restart(&mut self) {
        let listener = tokio::net::TcpListener::bind(self.addr)
            .await
            .expect("rebind the fake API server's port");
        self.serve(listener);
    }

    /// The requests served so far, each `list` or `watch`.
    pub fn requests(&self) -> Vec<String> {
        self.shared.lock().requests.clone()
    }
}

impl Drop for FakeKubeApi {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `a=b,c=d` against a Secret's labels (equality selectors only).
fn selected(selector: Option<&str>, object: &Value) -> bool {
    let Some(selector) = selector.filter(|s| !s.is_empty()) else {
        return true;
    };
    selector.split(',').all(|term| {
        let (label, value) = term.split_once('=').unwrap_or((term, ""));
        object["metadata"]["labels"][label.trim()].as_str() == Some(value.trim())
    })
}

async fn secrets(
    State(shared): State<Shared>,
    UrlPath(namespace): UrlPath<String>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    let selector = query.get("labelSelector").cloned();
    if query.get("watch").is_some_and(|w| w == "true" || w == "1") {
        let from = query
            .get("resourceVersion")
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        return watch(shared, namespace, selector, from);
    }
    let mut inner = shared.lock();
    inner.requests.push("list".to_owned());
    let items: Vec<Value> = inner
        .secrets
        .iter()
        .filter(|((ns, _), object)| *ns == namespace && selected(selector.as_deref(), object))
        .map(|(_, object)| object.clone())
        .collect();
    let list = json!({
        "apiVersion": "v1",
        "kind": "SecretList",
        "metadata": { "resourceVersion": inner.version.to_string() },
        "items": items,
    });
    (StatusCode::OK, axum::Json(list)).into_response()
}

fn watch(shared: Shared, namespace: String, selector: Option<String>, from: u64) -> Response {
    let (tx, rx) = mpsc::unbounded_channel::<Result<Bytes, std::io::Error>>();
    let line = |value: Value| Ok(Bytes::from(format!("{value}\n")));
    let mut live = {
        let mut inner = shared.lock();
        inner.requests.push("watch".to_owned());
        if from < inner.oldest_watchable {
            let _ = tx.send(line(gone()));
            drop(tx);
            return stream_response(rx);
        }
        for change in inner.history.iter().filter(|c| c.version > from) {
            if change.namespace == namespace && selected(selector.as_deref(), &change.object) {
                let _ = tx.send(line(json!({"type": change.kind, "object": change.object})));
            }
        }
        shared.events.subscribe()
    };
    tokio::spawn(async move {
        loop {
            let message = tokio::select! {
                message = live.recv() => message,
                () = tx.closed() => return,
            };
            let sent = match message {
                Ok(Broadcast::Event(change)) => {
                    if change.version <= from
                        || change.namespace != namespace
                        || !selected(selector.as_deref(), &change.object)
                    {
                        continue;
                    }
                    tx.send(line(json!({"type": change.kind, "object": change.object})))
                }
                Ok(Broadcast::Bookmark(version)) => tx.send(line(json!({
                    "type": "BOOKMARK",
                    "object": {
                        "apiVersion": "v1",
                        "kind": "Secret",
                        "metadata": { "resourceVersion": version.to_string() },
                    },
                }))),
                Ok(Broadcast::Expired) => {
                    let _ = tx.send(line(gone()));
                    return;
                }
                Ok(Broadcast::Drop) | Err(_) => {
                    let _ = tx.send(Err(std::io::Error::other("connection cut by the test")));
                    return;
                }
            };
            if sent.is_err() {
                return;
            }
        }
    });
    stream_response(rx)
}

fn gone() -> Value {
    json!({
        "type": "ERROR",
        "object": {
            "apiVersion": "v1",
            "kind": "Status",
            "metadata": {},
            "status": "Failure",
            "message": "too old resource version",
            "reason": "Expired",
            "code": 410,
        },
    })
}

/// A streamed body; an `Err` in it (a cut watch) makes hyper abort the connection instead of
/// ending the response cleanly.
fn stream_response(rx: mpsc::UnboundedReceiver<Result<Bytes, std::io::Error>>) -> Response {
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
