//! What a test needs from the machine, decided in one place.
//!
//! Some tests need something a plain `git clone` on a laptop may lack: a PostgreSQL server, a
//! PostgreSQL installation to run a private server of their own, a real Alertmanager,
//! `promtool`, a Prometheus server, `openssl`, root (to mount a tmpfs), PagerDuty's OpenAPI file,
//! `kubectl` and `kubernetes-validate` (for the Kubernetes manifests).
//! Such a test is marked `#[ignore = "needs …"]`, so that the runner counts it as skipped
//! instead of reporting a pass that tested nothing, and it asks for what it needs through one
//! of the functions below, which **panic** with a message saying what is missing and how to get
//! it. A test that needs something therefore either runs for real or fails; it never passes
//! without running.
//!
//! Who runs the ignored tests:
//! - `scripts/test` asks this module (through the `needs` binary of this crate) what the machine
//!   has, runs the ignored tests whose needs are met, and ends with one line naming what it
//!   skipped and why;
//! - `.ci/run` runs every ignored test (`scripts/test --require-all`), so CI fails if a single
//!   one cannot run.
//!
//! Which ignored test needs what is told by its name: an ignored test that needs a [`Need`]
//! has the need's [`Need::tag`] in its name (`metrics_pass_promtool`), or is in a test binary
//! given over to that need (`tests/store_postgres.rs`, `tests/alertmanager.rs`,
//! `tests/alertmanager_sync.rs`).
//! [`Need::filter`] is the nextest filter that picks those tests out among the ignored ones.

use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The PostgreSQL server the tests use when `PAGERBRIDGE_TEST_POSTGRES_URL` is not set.
pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Something a test needs from the machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// A PostgreSQL server (`PAGERBRIDGE_TEST_POSTGRES_URL`, else 127.0.0.1:5432).
    Postgres,
    /// A real Alertmanager binary (Debian's `prometheus-alertmanager`) on `PATH`.
    Alertmanager,
    /// `promtool` (Debian's `prometheus`) on `PATH`.
    Promtool,
    /// The Prometheus server (`prometheus`, Debian's `prometheus`) on `PATH`. Its tag is not
    /// "prometheus": that word is in the names of tests that need nothing
    /// (`prometheus_text_is_sorted_and_escaped`).
    PrometheusServer,
    /// The `openssl` command line.
    Openssl,
    /// Root, to mount a small tmpfs and fill it (the full-disk chaos test).
    Tmpfs,
    /// PagerDuty's published OpenAPI file for Events API v2, for the schema cross-check.
    PagerdutyOpenapi,
    /// A private PostgreSQL server the test can stop and start
    /// ([`crate::pg_server::PrivatePostgres`]): `initdb` and `pg_ctl`, and, as root, `runuser`
    /// and the `postgres` user to run them as (PostgreSQL refuses to run as root). Its tag is
    /// not "postgres": the tests that need it must not be taken for tests of the shared server.
    Initdb,
    /// `kubectl` on `PATH`, to render the kustomize overlays (`kubectl kustomize`).
    Kubectl,
    /// `kubernetes-validate` (PyPI) on `PATH`: the Kubernetes schemas, offline.
    KubernetesValidate,
}

impl Need {
    pub const ALL: [Need; 10] = [
        Need::Postgres,
        Need::Alertmanager,
        Need::Promtool,
        Need::PrometheusServer,
        Need::Openssl,
        Need::Tmpfs,
        Need::PagerdutyOpenapi,
        Need::Initdb,
        Need::Kubectl,
        Need::KubernetesValidate,
    ];

    /// The word the names of the tests that need it carry.
    pub fn tag(self) -> &'static str {
        match self {
            Need::Postgres => "postgres",
            Need::Alertmanager => "alertmanager",
            Need::Promtool => "promtool",
            Need::PrometheusServer => "prometheus_server",
            Need::Openssl => "openssl",
            Need::Tmpfs => "tmpfs",
            Need::PagerdutyOpenapi => "pagerduty_openapi",
            Need::Initdb => "initdb",
            Need::Kubectl => "kubectl",
            Need::KubernetesValidate => "kubernetes_validate",
        }
    }

    /// What it is, for people.
    pub fn description(self) -> &'static str {
        match self {
            Need::Postgres => "PostgreSQL",
            Need::Alertmanager => "Alertmanager 0.25",
            Need::Promtool => "promtool",
            Need::PrometheusServer => "a Prometheus server",
            Need::Openssl => "openssl",
            Need::Tmpfs => "root (to mount a tmpfs)",
            Need::PagerdutyOpenapi => "PagerDuty's OpenAPI file",
            Need::Initdb => "a private PostgreSQL server (initdb, pg_ctl)",
            Need::Kubectl => "kubectl",
            Need::KubernetesValidate => "kubernetes-validate",
        }
    }

    /// How to provide it.
    pub fn hint(self) -> &'static str {
        match self {
            Need::Postgres => {
                "start PostgreSQL on 127.0.0.1:5432 (trust auth, database `test`) or set \
                 PAGERBRIDGE_TEST_POSTGRES_URL"
            }
            Need::Alertmanager => "apt-get install prometheus-alertmanager",
            Need::Promtool | Need::PrometheusServer => "apt-get install prometheus",
            Need::Openssl => "apt-get install openssl",
            Need::Tmpfs => "run the tests as root",
            Need::PagerdutyOpenapi => {
                "set PAGERBRIDGE_PAGERDUTY_OPENAPI to PagerDuty's events-v2 openapiv3.json"
            }
            Need::Initdb => {
                "apt-get install postgresql (or set PAGERBRIDGE_TEST_PG_BIN to the directory of \
                 initdb and pg_ctl); as root, the `postgres` user and `runuser` are needed too"
            }
            Need::Kubectl => "install kubectl (any version with `kubectl kustomize`)",
            Need::KubernetesValidate => "python3 -m pip install kubernetes-validate==1.37.0",
        }
    }

    /// The nextest filter that selects, among the ignored tests, those that need it.
    pub fn filter(self) -> String {
        let tag = self.tag();
        self.binaries()
            .iter()
            .map(|binary| format!("binary(={binary}) | "))
            .chain([format!("test(/{tag}/)")])
            .collect()
    }

    /// The test binaries all of whose tests need it. Named exactly: nextest refuses a
    /// `binary()` filter that matches no binary, so a renamed file fails loudly.
    fn binaries(self) -> &'static [&'static str] {
        match self {
            Need::Postgres => &["store_postgres"],
            Need::Alertmanager => &["alertmanager", "alertmanager_sync"],
            _ => &[],
        }
    }

    /// Whether the machine has it: `Ok` with what was found (a path, an address), or `Err`
    /// with what is missing.
    pub fn probe(self) -> Result<String, String> {
        match self {
            Need::Postgres => probe_postgres(&postgres_url_setting()),
            Need::Alertmanager => on_path(&["prometheus-alertmanager", "alertmanager"]),
            Need::Promtool => on_path(&["promtool"]),
            Need::PrometheusServer => on_path(&["prometheus"]),
            Need::Openssl => on_path(&["openssl"]),
            Need::Tmpfs => probe_root(),
            Need::PagerdutyOpenapi => pagerduty_openapi_setting()
                .map(|path| path.display().to_string())
                .ok_or_else(|| {
                    "PAGERBRIDGE_PAGERDUTY_OPENAPI is not set and \
                     ../shared/pagerduty/events-v2/openapiv3.json is not beside the repository"
                        .to_owned()
                }),
            Need::Initdb => probe_initdb(),
            Need::Kubectl => on_path(&["kubectl"]),
            Need::KubernetesValidate => on_path(&["kubernetes-validate"]),
        }
    }

    /// What [`Need::probe`] found; panics, saying what is missing and how to get it, when the
    /// machine lacks it. Tests call this (through the functions below) first thing.
    pub fn require(self) -> String {
        self.found_or_panic(self.probe())
    }

    fn found_or_panic(self, probed: Result<String, String>) -> String {
        match probed {
            Ok(found) => found,
            Err(missing) => panic!(
                "this test needs {}: {missing} ({})",
                self.description(),
                self.hint()
            ),
        }
    }
}

/// The PostgreSQL server URL for tests; panics when nothing answers there.
pub fn postgres_url() -> String {
    Need::Postgres.require();
    postgres_url_setting()
}

/// The Alertmanager binary; panics when there is none on `PATH`.
pub fn alertmanager() -> PathBuf {
    PathBuf::from(Need::Alertmanager.require())
}

/// The `promtool` binary; panics when there is none on `PATH`.
pub fn promtool() -> PathBuf {
    PathBuf::from(Need::Promtool.require())
}

/// The `prometheus` server binary; panics when there is none on `PATH`.
pub fn prometheus_server() -> PathBuf {
    PathBuf::from(Need::PrometheusServer.require())
}

/// The `openssl` binary; panics when there is none on `PATH`.
pub fn openssl() -> PathBuf {
    PathBuf::from(Need::Openssl.require())
}

/// Panics unless the test runs as root (it mounts a tmpfs).
pub fn tmpfs() {
    Need::Tmpfs.require();
}

/// PagerDuty's OpenAPI file; panics when it cannot be found.
pub fn pagerduty_openapi() -> PathBuf {
    PathBuf::from(Need::PagerdutyOpenapi.require())
}

/// The directory of `initdb` and `pg_ctl`, for a private PostgreSQL server; panics when the
/// machine cannot run one.
pub fn initdb() -> PathBuf {
    PathBuf::from(Need::Initdb.require())
}

/// The `kubectl` binary; panics when there is none on `PATH`.
pub fn kubectl() -> PathBuf {
    PathBuf::from(Need::Kubectl.require())
}

/// The `kubernetes-validate` command; panics when there is none on `PATH`.
pub fn kubernetes_validate() -> PathBuf {
    PathBuf::from(Need::KubernetesValidate.require())
}

/// The directory holding `initdb` and `pg_ctl`: `PAGERBRIDGE_TEST_PG_BIN` when set (and then
/// only it), else the highest version under `/usr/lib/postgresql/*/bin` (Debian's layout,
/// where they are not on `PATH`), else the directory `initdb` on `PATH` really lives in.
pub(crate) fn postgres_bin_dir() -> Result<PathBuf, String> {
    let has_both =
        |dir: &Path| is_executable(&dir.join("initdb")) && is_executable(&dir.join("pg_ctl"));
    if let Some(dir) = std::env::var_os("PAGERBRIDGE_TEST_PG_BIN").filter(|dir| !dir.is_empty()) {
        let dir = PathBuf::from(dir);
        return if has_both(&dir) {
            Ok(dir)
        } else {
            Err(format!(
                "PAGERBRIDGE_TEST_PG_BIN={} holds no `initdb` and `pg_ctl`",
                dir.display()
            ))
        };
    }
    let mut versions: Vec<(Vec<u32>, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry
                .file_name()
                .to_str()?
                .split('.')
                .map(|part| part.parse::<u32>().ok())
                .collect::<Option<Vec<u32>>>()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, bin)| has_both(bin))
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    // A symlink on PATH (/usr/local/bin/initdb) is followed to where pg_ctl and postgres are.
    let initdb = on_path(&["initdb"])
        .map_err(|_| "no `initdb` under /usr/lib/postgresql/*/bin or on PATH".to_owned())?;
    let dir = Path::new(&initdb)
        .canonicalize()
        .ok()
        .and_then(|path| path.parent().map(Path::to_path_buf))
        .filter(|dir| has_both(dir))
        .ok_or_else(|| format!("no `pg_ctl` beside {initdb}"))?;
    Ok(dir)
}

/// Binaries found and, as root, able to run as `postgres`: the very command the server is run
/// with is tried (`runuser -u postgres -- pg_ctl --version`), so the probe answers for PAM,
/// the user and the binaries' permissions at once.
fn probe_initdb() -> Result<String, String> {
    let bin = postgres_bin_dir()?;
    if is_root()? {
        on_path(&["runuser"]).map_err(|e| format!("{e} (needed to run PostgreSQL as root)"))?;
        let tried = std::process::Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(bin.join("pg_ctl"))
            .arg("--version")
            .output()
            .map_err(|e| format!("cannot run runuser: {e}"))?;
        if !tried.status.success() {
            return Err(format!(
                "running as root, and `runuser -u postgres -- pg_ctl --version` failed: {}",
                String::from_utf8_lossy(&tried.stderr).trim()
            ));
        }
    }
    Ok(bin.display().to_string())
}

fn postgres_url_setting() -> String {
    std::env::var("PAGERBRIDGE_TEST_POSTGRES_URL")
        .ok()
        .filter(|url| !url.is_empty())
        .unwrap_or_else(|| DEFAULT_POSTGRES_URL.to_owned())
}

/// PagerDuty's file where [`crate::pagerduty_openapi::path`] says, if it is there.
fn pagerduty_openapi_setting() -> Option<PathBuf> {
    crate::pagerduty_openapi::path()
        .and_then(|path| path.canonicalize().ok())
        .filter(|path| path.is_file())
}

/// A TCP connection to the server's address is enough to know it is there; the test itself
/// then connects for real and fails loudly if it cannot.
fn probe_postgres(url: &str) -> Result<String, String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("PostgreSQL URL is not a URL: {e}"))?;
    let host = parsed.host_str().unwrap_or("127.0.0.1");
    let port = parsed.port().unwrap_or(5432);
    let address = format!("{host}:{port}");
    let addresses = address
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {address}: {e}"))?;
    for each in addresses {
        if TcpStream::connect_timeout(&each, Duration::from_secs(2)).is_ok() {
            return Ok(address);
        }
    }
    Err(format!("nothing answers at {address}"))
}

fn on_path(names: &[&str]) -> Result<String, String> {
    let dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect())
        .unwrap_or_default();
    names
        .iter()
        .flat_map(|name| dirs.iter().map(move |dir| dir.join(name)))
        .find(|candidate| is_executable(candidate))
        .map(|path| path.display().to_string())
        .ok_or_else(|| format!("no `{}` on PATH", names.join("` or `")))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The effective user id, as the kernel sees this process (`/proc/self/status`, so no libc
/// binding is needed).
fn effective_uid() -> Result<String, String> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("cannot read /proc/self/status: {e}"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .map(str::to_owned)
        .ok_or_else(|| "no Uid line in /proc/self/status".to_owned())
}

/// Whether this process runs as root.
pub(crate) fn is_root() -> Result<bool, String> {
    effective_uid().map(|uid| uid == "0")
}

fn probe_root() -> Result<String, String> {
    let effective = effective_uid()?;
    if effective == "0" {
        on_path(&["mount"]).map(|_| "root".to_owned())
    } else {
        Err(format!("running as uid {effective}, not root"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_need_has_a_distinct_tag_and_a_filter_on_it() {
        let tags: std::collections::HashSet<&str> = Need::ALL.iter().map(|n| n.tag()).collect();
        assert_eq!(tags.len(), Need::ALL.len());
        assert_eq!(
            Need::Postgres.filter(),
            "binary(=store_postgres) | test(/postgres/)"
        );
        assert_eq!(
            Need::Alertmanager.filter(),
            "binary(=alertmanager) | binary(=alertmanager_sync) | test(/alertmanager/)"
        );
        assert_eq!(Need::Promtool.filter(), "test(/promtool/)");
        assert_eq!(Need::Initdb.filter(), "test(/initdb/)");
        assert_eq!(
            Need::KubernetesValidate.filter(),
            "test(/kubernetes_validate/)"
        );
    }

    /// A test carrying one need's tag must not be selected (or skipped) for another's: no tag
    /// is part of another (`postgres` in `postgres_server`, `kube` in `kubectl`, say).
    #[test]
    fn no_tag_contains_another() {
        for need in Need::ALL {
            for other in Need::ALL.into_iter().filter(|other| *other != need) {
                assert!(
                    !need.tag().contains(other.tag()),
                    "{need:?}'s tag contains {other:?}'s"
                );
            }
        }
        assert_eq!(Need::PrometheusServer.filter(), "test(/prometheus_server/)");
    }

    #[test]
    fn a_missing_binary_is_named() {
        let error = on_path(&["surely-no-such-binary-here"]).unwrap_err();
        assert!(error.contains("surely-no-such-binary-here"), "{error}");
    }

    #[test]
    fn a_closed_port_is_not_postgres() {
        // Port 1 on loopback is never a PostgreSQL server.
        let error = probe_postgres("postgres://x@127.0.0.1:1/test").unwrap_err();
        assert!(error.contains("127.0.0.1:1"), "{error}");
    }

    #[test]
    #[should_panic(expected = "this test needs promtool")]
    fn require_panics_with_what_is_missing() {
        Need::Promtool.found_or_panic(Err("no `promtool` on PATH".to_owned()));
    }
}
