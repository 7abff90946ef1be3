//! A throwaway PostgreSQL server of a test's own, which the test may stop and start.
//!
//! The machine's shared server (127.0.0.1:5432) serves tests running in parallel, so a test
//! about PostgreSQL going away ("restarted mid-storm") must not touch it. [`PrivatePostgres`]
//! runs `initdb` in a temporary directory and starts a server there with `pg_ctl`: trust
//! authentication, listening on 127.0.0.1 only, on a port of its own, its unix socket inside
//! the directory, `fsync` left on (the tests using it are about durability).
//!
//! PostgreSQL refuses to run as root, so as root `initdb` and `pg_ctl` are run as the
//! `postgres` user (`runuser -u postgres --`), the directory being handed to that user.
//! Where the binaries are found, and whether the machine can do this at all, is the
//! [`Need::Initdb`](crate::needs::Need::Initdb) need: a test using this module is
//! `#[ignore = "needs initdb"]` with `initdb` in its name.
//!
//! The methods block (they wait for `pg_ctl`, a fraction of a second each, `initdb` about a
//! second): a test that also serves something in-process should run on a multi-threaded
//! runtime, or call them through `tokio::task::spawn_blocking` (every method takes `&self`).
//!
//! The port stays the server's while it is stopped, so that a restart comes back where the
//! clients expect it: it is taken outside the kernel's ephemeral range (which `bind(0)` and
//! outgoing connections draw from), and while the server is down a bound socket that does
//! not listen holds it, so connections are refused and no other private server picks it.
//!
//! A killed test process (Ctrl-C, a timeout) cannot stop its server. Each directory is locked
//! by the process owning it, and the first server a process starts stops and removes the
//! servers of directories whose owners are gone.

use std::fs::File;
use std::hash::{BuildHasher, Hasher};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use tokio::net::TcpSocket;

use crate::needs;

/// What the temporary directories are called, so that leftovers can be recognised.
const DIR_PREFIX: &str = "pagerbridge-pg-";
/// The file in each directory its owning process holds locked.
const OWNER_LOCK: &str = "owner.lock";
/// How long `pg_ctl` may wait for the server to start or stop, in seconds.
const PG_CTL_WAIT_SECS: &str = "60";
/// The lowest port considered: below are the well-known and registered ports services use.
const LOWEST_PORT: u16 = 10_000;

/// A PostgreSQL server in a temporary directory; dropping it stops the server (immediate
/// shutdown) and removes the directory.
pub struct PrivatePostgres {
    /// Removed on drop, after the server is stopped.
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// Run the binaries as `postgres` (we are root).
    as_postgres: bool,
    port: u16,
    /// Holds the port while the server is stopped; `None` while it runs.
    placeholder: Mutex<Option<TcpSocket>>,
    /// Locked while this value lives: the directory is not a leftover.
    _owner: File,
}

impl PrivatePostgres {
    /// Creates a cluster (`initdb`) and starts its server; returns once the server accepts
    /// connections. Panics, with what failed and the server's log, if it cannot (see
    /// [`needs::initdb`] for what the machine needs).
    pub fn start() -> PrivatePostgres {
        let bin = needs::initdb();
        let as_postgres = needs::is_root().unwrap_or_else(|e| panic!("{e}"));
        reap_leftovers(&bin, as_postgres);

        let dir = tempfile::Builder::new()
            .prefix(DIR_PREFIX)
            .tempdir()
            .unwrap_or_else(|e| panic!("creating a directory for PostgreSQL: {e}"));
        let owner = lock_owner_file(dir.path());
        std::fs::create_dir(dir.path().join("socket"))
            .unwrap_or_else(|e| panic!("creating the socket directory: {e}"));
        if as_postgres {
            let chown = Command::new("chown")
                .arg("-R")
                .arg("postgres:")
                .arg(dir.path())
                .output();
            expect_success("chown -R postgres:", chown, None);
        }
        let (port, placeholder) = reserve_port();

        let started = Instant::now();
        let server = PrivatePostgres {
            dir,
            bin,
            as_postgres,
            port,
            placeholder: Mutex::new(Some(placeholder)),
            _owner: owner,
        };
        server.init_cluster();
        let initialised = started.elapsed();
        server.start_again();
        eprintln!(
            "private PostgreSQL on port {port}: initdb {initialised:?}, start {:?}",
            started.elapsed() - initialised
        );
        server
    }

    /// A URL to the server's `postgres` database, as the superuser `postgres` (trust
    /// authentication: no password). [`crate::postgres::TestDatabase::create_on`] makes
    /// fresh databases on it.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The TCP port, the same for the server's whole life.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's log so far, for a test's failure message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_else(|e| format!("(no server log: {e})"))
    }

    /// Stops the server the way an operator would (fast shutdown: sessions are ended,
    /// transactions in flight rolled back, a checkpoint written) and returns once it is down.
    /// Connections to [`PrivatePostgres::url`] are refused until [`PrivatePostgres::start_again`].
    /// Panics if the server is not running or does not stop.
    pub fn stop(&self) {
        self.stop_in_mode("fast");
    }

    /// Stops the server as a crash would (immediate shutdown: no checkpoint; the next start
    /// recovers from the write-ahead log). Panics as [`PrivatePostgres::stop`] does.
    pub fn stop_immediately(&self) {
        self.stop_in_mode("immediate");
    }

    /// Starts the stopped server again, on the same data and port; returns once it accepts
    /// connections. Panics, with the server's log, if it does not start.
    pub fn start_again(&self) {
        // Released only now, an instant before the server binds the port.
        let placeholder = self.placeholder().take();
        drop(placeholder);
        let output = self
            .pg_command("pg_ctl")
            .arg("start")
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.log_path())
            .args(["-w", "-t", PG_CTL_WAIT_SECS])
            .output();
        // With -w, pg_ctl returns once the postmaster reports it accepts connections.
        expect_success("pg_ctl start", output, Some(self));
    }

    /// [`PrivatePostgres::stop`] then [`PrivatePostgres::start_again`].
    pub fn restart(&self) {
        self.stop();
        self.start_again();
    }

    fn init_cluster(&self) {
        let output = self
            .pg_command("initdb")
            .arg("-D")
            .arg(self.data_dir())
            // Setup only: the server itself keeps fsync on.
            .arg("--no-sync")
            .args(["--auth=trust", "--username=postgres"])
            .args(["--encoding=UTF8", "--locale=C"])
            .output();
        expect_success("initdb", output, None);
        let socket_dir = self.dir.path().join("socket");
        let settings = format!(
            "\n# pagerbridge_testkit::pg_server\n\
             listen_addresses = '127.0.0.1'\n\
             port = {}\n\
             unix_socket_directories = '{}'\n\
             fsync = on\n",
            self.port,
            socket_dir.display().to_string().replace('\'', "''"),
        );
        let conf = self.data_dir().join("postgresql.conf");
        let appended = std::fs::read_to_string(&conf)
            .and_then(|existing| std::fs::write(&conf, existing + &settings));
        if let Err(e) = appended {
            panic!("writing {}: {e}", conf.display());
        }
    }

    fn stop_in_mode(&self, mode: &str) {
        let output = stop_server(&self.bin, self.as_postgres, &self.data_dir(), mode);
        expect_success(&format!("pg_ctl stop -m {mode}"), output, Some(self));
        // The server's own connections may linger in TIME_WAIT on the port: the placeholder
        // reuses the address, which binding (unlike listening) allows.
        let placeholder = hold_port(self.port, true).unwrap_or_else(|e| {
            panic!(
                "port {} was taken while PostgreSQL was stopping: {e}",
                self.port
            )
        });
        *self.placeholder() = Some(placeholder);
    }

    fn placeholder(&self) -> std::sync::MutexGuard<'_, Option<TcpSocket>> {
        self.placeholder
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn pg_command(&self, program: &str) -> Command {
        pg_command(&self.bin, self.as_postgres, program, self.dir.path())
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        if is_running(&self.data_dir()) {
            match stop_server(&self.bin, self.as_postgres, &self.data_dir(), "immediate") {
                Ok(output) if output.status.success() => {}
                Ok(output) => eprintln!(
                    "warning: stopping the private PostgreSQL: {}",
                    String::from_utf8_lossy(&output.stderr).trim()
                ),
                Err(e) => eprintln!("warning: stopping the private PostgreSQL: {e}"),
            }
        }
        // The TempDir removes the directory when dropped, next.
    }
}

/// `initdb`, `pg_ctl`: as `postgres` when we are root, in `cwd` (the binaries complain when
/// they cannot read the current directory, as `postgres` may not read the test's).
fn pg_command(bin: &Path, as_postgres: bool, program: &str, cwd: &Path) -> Command {
    let mut command = if as_postgres {
        let mut runuser = Command::new("runuser");
        runuser
            .args(["-u", "postgres", "--"])
            .arg(bin.join(program));
        runuser
    } else {
        Command::new(bin.join(program))
    };
    command.current_dir(cwd);
    command
}

/// Whether a server runs on the data directory (or one crashed without cleaning up, which
/// `pg_ctl stop` then reports).
fn is_running(data_dir: &Path) -> bool {
    data_dir.join("postmaster.pid").exists()
}

fn stop_server(
    bin: &Path,
    as_postgres: bool,
    data_dir: &Path,
    mode: &str,
) -> std::io::Result<Output> {
    let cwd = data_dir.parent().unwrap_or(data_dir);
    pg_command(bin, as_postgres, "pg_ctl", cwd)
        .arg("stop")
        .arg("-D")
        .arg(data_dir)
        .args(["-m", mode, "-w", "-t", PG_CTL_WAIT_SECS])
        .output()
}

/// Panics unless the command ran and succeeded, with its output and, when there is a server,
/// its log.
fn expect_success(what: &str, output: std::io::Result<Output>, server: Option<&PrivatePostgres>) {
    let output = output.unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    if output.status.success() {
        return;
    }
    let log = server.map(PrivatePostgres::log).unwrap_or_default();
    panic!(
        "{what} failed ({}):\n{}{}\n-- server log --\n{log}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
}

/// Creates the owner lock locked: under another name first, so that no other process ever
/// sees it unlocked and takes the directory for a leftover.
fn lock_owner_file(dir: &Path) -> File {
    let fresh = dir.join(format!("{OWNER_LOCK}.new"));
    let file = File::create(&fresh)
        .and_then(|file| {
            file.try_lock()
                .map_err(std::io::Error::other)
                .map(|()| file)
        })
        .and_then(|file| std::fs::rename(&fresh, dir.join(OWNER_LOCK)).map(|()| file));
    file.unwrap_or_else(|e| panic!("locking {}: {e}", dir.display()))
}

/// Stops and removes the servers whose owning processes are gone, once per process.
fn reap_leftovers(bin: &Path, as_postgres: bool) {
    static DONE: AtomicBool = AtomicBool::new(false);
    if !DONE.swap(true, Ordering::Relaxed) {
        reap_leftovers_in(&std::env::temp_dir(), bin, as_postgres);
    }
}

/// Stops and removes the servers, in `parent`, whose owner locks nobody holds. Best effort:
/// what cannot be cleaned (another user's) is left.
fn reap_leftovers_in(parent: &Path, bin: &Path, as_postgres: bool) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let is_ours = entry
            .file_name()
            .to_str()
            .is_some_and(|name| name.starts_with(DIR_PREFIX));
        let dir = entry.path();
        // No lock file: not ours, or being created.
        let Ok(lock) = File::open(dir.join(OWNER_LOCK)) else {
            continue;
        };
        if !is_ours || lock.try_lock().is_err() {
            continue;
        }
        let data_dir = dir.join("data");
        if is_running(&data_dir) {
            let _ = stop_server(bin, as_postgres, &data_dir, "immediate");
        }
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => eprintln!(
                "note: removed a leftover private PostgreSQL in {}",
                dir.display()
            ),
            Err(e) => eprintln!("warning: removing leftover {}: {e}", dir.display()),
        }
    }
}

/// A free port outside the ephemeral range, with a socket holding it.
fn reserve_port() -> (u16, TcpSocket) {
    let (ephemeral_low, ephemeral_high) = ephemeral_range();
    let candidates: Vec<u16> = (LOWEST_PORT..=u16::MAX)
        .filter(|port| !(ephemeral_low..=ephemeral_high).contains(port))
        .collect();
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    let mut seed = hasher.finish();
    for _ in 0..200 {
        if candidates.is_empty() {
            break;
        }
        // A step of a linear congruential generator is plenty to spread the picks.
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let index = usize::try_from(seed >> 33).unwrap_or(0) % candidates.len();
        let port = candidates[index];
        // Without address reuse: a port with connections in TIME_WAIT, or held by another
        // private server's placeholder, is not taken.
        if let Ok(socket) = hold_port(port, false) {
            return (port, socket);
        }
    }
    // No room outside the ephemeral range (an unusual kernel setting): take what the kernel
    // gives, which is still ours while the server is down.
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap_or_else(|e| panic!("no free port on 127.0.0.1: {e}"));
    let port = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("the port of a bound socket: {e}"))
        .port();
    drop(listener);
    let socket = hold_port(port, true).unwrap_or_else(|e| panic!("holding port {port}: {e}"));
    (port, socket)
}

/// A socket bound to the port that does not listen: it keeps the port from other binders,
/// and connections to it are refused, as to a server that is down.
fn hold_port(port: u16, reuse_address: bool) -> std::io::Result<TcpSocket> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(reuse_address)?;
    socket.bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))?;
    Ok(socket)
}

/// The kernel's range for `bind(0)` and outgoing connections; Linux's default if unreadable.
fn ephemeral_range() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| {
            let mut bounds = text.split_whitespace().map(|n| n.parse::<u16>().ok());
            Some((bounds.next()??, bounds.next()??))
        })
        .unwrap_or((32_768, 60_999))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sqlx::Connection;
    use sqlx::postgres::PgConnection;

    use super::*;

    async fn connect(url: &str) -> Result<PgConnection, String> {
        match tokio::time::timeout(Duration::from_secs(10), PgConnection::connect(url)).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("no answer within 10s".to_owned()),
        }
    }

    async fn kept_rows(url: &str) -> Vec<i32> {
        let mut conn = connect(url).await.expect("connect");
        let kept = sqlx::query_scalar("SELECT n FROM kept ORDER BY n")
            .fetch_all(&mut conn)
            .await
            .expect("read");
        conn.close().await.expect("close");
        kept
    }

    fn listens(port: u16) -> bool {
        std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok()
    }

    #[test]
    fn a_port_is_held_outside_the_ephemeral_range_and_refuses_connections() {
        let (port, _held) = reserve_port();
        let (low, high) = ephemeral_range();
        assert!(!(low..=high).contains(&port), "{port} in {low}-{high}");
        // Held: no other private server takes it, and nothing listens on it.
        assert!(hold_port(port, false).is_err());
        assert!(!listens(port));
    }

    #[test]
    fn only_directories_whose_owner_is_gone_are_reaped() {
        let parent = tempfile::tempdir().expect("tempdir");
        let dead = parent.path().join(format!("{DIR_PREFIX}dead"));
        std::fs::create_dir(&dead).expect("mkdir");
        File::create(dead.join(OWNER_LOCK)).expect("unlocked lock file");
        let live = parent.path().join(format!("{DIR_PREFIX}live"));
        std::fs::create_dir(&live).expect("mkdir");
        let _owner = lock_owner_file(&live);
        let being_created = parent.path().join(format!("{DIR_PREFIX}new"));
        std::fs::create_dir(&being_created).expect("mkdir");
        let other = parent.path().join("someone-else");
        std::fs::create_dir(&other).expect("mkdir");
        File::create(other.join(OWNER_LOCK)).expect("unlocked lock file");

        // No server runs in any of them, so the binaries are never called.
        reap_leftovers_in(parent.path(), Path::new("/nonexistent"), false);
        assert!(!dead.exists(), "the dead owner's directory is left");
        assert!(live.exists(), "a live owner's directory was removed");
        assert!(
            being_created.exists(),
            "a directory without its lock yet was removed"
        );
        assert!(other.exists(), "a directory not ours was removed");
    }

    #[tokio::test]
    #[ignore = "needs initdb"]
    async fn initdb_server_answers_queries_on_its_url() {
        needs::initdb();
        let server = PrivatePostgres::start();
        let mut conn = connect(&server.url()).await.expect("connect");
        let answer: i32 = sqlx::query_scalar("SELECT 6 * 7")
            .fetch_one(&mut conn)
            .await
            .expect("query");
        assert_eq!(answer, 42);
        for (setting, expected) in [("fsync", "on"), ("listen_addresses", "127.0.0.1")] {
            let value: String = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("SHOW {setting}")))
                .fetch_one(&mut conn)
                .await
                .map(|row| sqlx::Row::get(&row, 0))
                .expect("SHOW");
            assert_eq!(value, expected, "{setting}");
        }
    }

    #[tokio::test]
    #[ignore = "needs initdb"]
    async fn initdb_server_refuses_while_stopped_and_keeps_its_data_across_restarts() {
        needs::initdb();
        let server = PrivatePostgres::start();
        let port = server.port();
        let mut conn = connect(&server.url()).await.expect("connect");
        sqlx::raw_sql("CREATE TABLE kept (n int); INSERT INTO kept VALUES (1)")
            .execute(&mut conn)
            .await
            .expect("write");

        server.stop();
        // The live connection is ended, and new ones are refused at once (not left hanging).
        let on_old = tokio::time::timeout(
            Duration::from_secs(10),
            sqlx::query("SELECT 1").execute(&mut conn),
        )
        .await
        .expect("the old connection answers within 10s");
        assert!(on_old.is_err(), "a query succeeded on a stopped server");
        drop(conn);
        let error = connect(&server.url())
            .await
            .expect_err("connected to a stopped server");
        assert!(!error.contains("within 10s"), "{error}");
        assert!(!listens(port));

        server.start_again();
        assert_eq!(server.port(), port);
        assert_eq!(kept_rows(&server.url()).await, [1]);
        let mut conn = connect(&server.url()).await.expect("connect");
        sqlx::query("INSERT INTO kept VALUES (2)")
            .execute(&mut conn)
            .await
            .expect("write after start_again");
        conn.close().await.expect("close");

        // A crash loses nothing committed: the server recovers from its write-ahead log.
        server.stop_immediately();
        assert!(!listens(port));
        server.start_again();
        assert_eq!(kept_rows(&server.url()).await, [1, 2]);

        server.restart();
        assert_eq!(kept_rows(&server.url()).await, [1, 2]);
        assert!(
            server.log().contains("ready to accept connections"),
            "{}",
            server.log()
        );
    }

    #[test]
    #[ignore = "needs initdb"]
    fn initdb_server_is_stopped_and_removed_on_drop() {
        needs::initdb();
        let server = PrivatePostgres::start();
        let dir = server.dir.path().to_path_buf();
        let port = server.port();
        assert!(listens(port));
        drop(server);
        assert!(!dir.exists(), "{} is left", dir.display());
        assert!(!listens(port));
    }

    #[test]
    #[ignore = "needs initdb"]
    fn initdb_server_of_a_dead_owner_is_stopped_and_removed() {
        needs::initdb();
        let server = PrivatePostgres::start();
        let dir = server.dir.path().to_path_buf();
        let port = server.port();
        // As if the owning process had been killed: nobody holds the lock any more.
        server._owner.unlock().expect("unlock");

        reap_leftovers_in(&std::env::temp_dir(), &server.bin, server.as_postgres);
        assert!(!dir.exists(), "{} is left", dir.display());
        assert!(!listens(port), "the leftover server still runs");
    }
}
