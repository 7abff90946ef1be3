//! The client refuses TLS below 1.2 (the requirement: "TLS 1.2+"), checked against real
//! servers on 127.0.0.1.
//!
//! - `refuses_openssl_servers_that_only_speak_tls_1_0_or_1_1`: `openssl s_server` with a self-signed
//!   certificate made in a temporary directory, restricted to TLS 1.0, then 1.1 (with
//!   `@SECLEVEL=0`, as OpenSSL 3 refuses them otherwise). The test first proves with
//!   `openssl s_client` that the server really completes a TLS 1.0/1.1 handshake, then that
//!   [`Client`] fails with [`SendError::Network`] naming the protocol version. The same server
//!   restricted to TLS 1.2 is the control: there the client gets past the version and fails
//!   on the untrusted certificate instead, so the version was the reason before.
//!   It is `#[ignore = "needs openssl"]` (`pagerbridge_testkit::needs`): run where `openssl` is
//!   on `PATH`, always in CI, and failing rather than passing untested without it.
//! - `offers_only_tls_1_2_and_1_3` and `rejects_a_server_that_answers_below_tls_1_2` need
//!   nothing but a TCP socket. The first reads the client's ClientHello and checks what it
//!   offers: `legacy_version` TLS 1.2 and `supported_versions` only TLS 1.3 and 1.2, never 1.1,
//!   1.0 or SSL 3. The second plays a server that ignores that offer and answers with a TLS 1.1
//!   (1.0, SSL 3) ServerHello: the client must refuse it for its version, where the same
//!   ServerHello saying TLS 1.2 gets further (and fails later, differently).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use pagerbridge_testkit::needs;
use pagerduty_events::{
    AlertEvent, Client, DedupKey, RoutingKey, SendError, Severity, Source, Summary, Trigger,
};

const KEY: &str = "R0123456789abcdef0123456789abcde";

fn trigger() -> AlertEvent {
    let mut trigger = Trigger::new(
        Summary::new("TLS check").expect("summary"),
        Source::new("tls-test").expect("source"),
        Severity::Info,
    );
    trigger.dedup_key = Some(DedupKey::new("tls-check").expect("dedup key"));
    AlertEvent::Trigger(trigger)
}

/// Sends one trigger to `https://addr` and returns the error text of the failure.
async fn network_error(addr: SocketAddr) -> String {
    let client = Client::builder()
        .base_url(format!("https://{addr}"))
        .timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let key = RoutingKey::new(KEY).expect("key");
    match client.send_alert(&key, &trigger()).await {
        Err(SendError::Network(text)) => text,
        other => panic!("expected a network (TLS) error from {addr}, got {other:?}"),
    }
}

/// A temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A self-signed certificate and key for 127.0.0.1 in `dir`.
fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let output = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdin(Stdio::null())
        .output()
        .expect("openssl req runs");
    assert!(
        output.status.success(),
        "openssl req failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    (cert, key)
}

/// `openssl s_server` speaking exactly one TLS version; killed on drop.
struct TlsServer {
    child: Child,
    addr: SocketAddr,
}

impl TlsServer {
    /// `version` is s_server's flag: `-tls1`, `-tls1_1`, `-tls1_2`. A free port is picked and
    /// then bound by openssl, so another process may take it in between: up to 3 tries.
    fn start(version: &str, cert: &Path, key: &Path) -> Self {
        let mut tries = 0;
        loop {
            tries += 1;
            match Self::try_start(version, cert, key) {
                Ok(server) => return server,
                Err(error) if tries < 3 => eprintln!("retrying: {error}"),
                Err(error) => panic!("{error}"),
            }
        }
    }

    fn try_start(version: &str, cert: &Path, key: &Path) -> Result<Self, String> {
        let port = {
            let probe = TcpListener::bind("127.0.0.1:0").expect("a free port");
            probe.local_addr().expect("addr").port()
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut child = Command::new("openssl")
            .args(["s_server", "-accept", &addr.to_string(), version])
            .args(["-cipher", "DEFAULT:@SECLEVEL=0", "-www"])
            .arg("-cert")
            .arg(cert)
            .arg("-key")
            .arg(key)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl s_server starts");
        // It prints ACCEPT once it listens.
        let stdout = child.stdout.take().expect("stdout");
        let (ready, listening) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("ACCEPT") {
                    let _ = ready.send(());
                }
            }
        });
        let mut server = Self { child, addr };
        if listening.recv_timeout(Duration::from_secs(10)).is_err() {
            let status = server.child.try_wait();
            return Err(format!(
                "openssl s_server {version} did not start listening on {addr}: {status:?}"
            ));
        }
        Ok(server)
    }

    /// The protocol `openssl s_client` negotiates with this server when it offers only
    /// `version`: proof that the server speaks it.
    fn negotiated_by_openssl(&self, version: &str) -> String {
        let output = Command::new("openssl")
            .args(["s_client", "-connect", &self.addr.to_string(), version])
            .args(["-cipher", "DEFAULT:@SECLEVEL=0"])
            .stdin(Stdio::null())
            .output()
            .expect("openssl s_client runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        stdout
            .lines()
            .find_map(|line| line.trim().strip_prefix("Protocol  :"))
            .map(|p| p.trim().to_owned())
            .unwrap_or_else(|| format!("no handshake: {stdout}"))
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
#[ignore = "needs openssl"]
async fn refuses_openssl_servers_that_only_speak_tls_1_0_or_1_1() {
    needs::openssl();
    let dir = TempDir::new("pagerduty-events-tls");
    let (cert, key) = self_signed(&dir.0);

    // The control: a TLS 1.2 server gets past the version, to the certificate.
    let tls12 = TlsServer::start("-tls1_2", &cert, &key);
    assert_eq!(tls12.negotiated_by_openssl("-tls1_2"), "TLSv1.2");
    let control = network_error(tls12.addr).await;
    assert!(
        control.to_lowercase().contains("certificate"),
        "with TLS 1.2 the handshake should fail only on the self-signed certificate: {control}"
    );
    drop(tls12);

    for (flag, name) in [("-tls1_1", "TLSv1.1"), ("-tls1", "TLSv1")] {
        let server = TlsServer::start(flag, &cert, &key);
        assert_eq!(
            server.negotiated_by_openssl(flag),
            name,
            "the test server must really speak {name}"
        );
        let error = network_error(server.addr).await;
        let lower = error.to_lowercase();
        assert!(
            lower.contains("version") || lower.contains("protocol"),
            "refusing {name} should name the protocol version: {error}"
        );
        assert!(
            !lower.contains("certificate"),
            "with {name} the client must stop before looking at the certificate: {error}"
        );
        assert_ne!(error, control);
        eprintln!("{name}: {error}");
    }
}

/// The versions a ClientHello offers: its `legacy_version` and its `supported_versions`.
fn offered_versions(hello: &[u8]) -> (u16, Option<Vec<u16>>) {
    let u16_at = |i: usize| u16::from_be_bytes([hello[i], hello[i + 1]]);
    assert_eq!(hello[0], 1, "a ClientHello handshake message");
    let legacy_version = u16_at(4);
    let mut at = 4 + 2 + 32; // handshake header, version, random
    at += 1 + usize::from(hello[at]); // session id
    at += 2 + usize::from(u16_at(at)); // cipher suites
    at += 1 + usize::from(hello[at]); // compression methods
    if at >= hello.len() {
        return (legacy_version, None);
    }
    let end = at + 2 + usize::from(u16_at(at));
    at += 2;
    while at + 4 <= end {
        let (kind, len) = (u16_at(at), usize::from(u16_at(at + 2)));
        let data = &hello[at + 4..at + 4 + len];
        if kind == 0x002b {
            let versions = data[1..=usize::from(data[0])]
                .chunks(2)
                .map(|v| u16::from_be_bytes([v[0], v[1]]))
                .collect();
            return (legacy_version, Some(versions));
        }
        at += 4 + len;
    }
    (legacy_version, None)
}

/// A fake TLS server on 127.0.0.1: it reads one ClientHello, answers with `answer` and closes,
/// handing the ClientHello back.
fn fake_tls_server(answer: Vec<u8>) -> (SocketAddr, std::thread::JoinHandle<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut header = [0u8; 5];
        stream.read_exact(&mut header).expect("record header");
        assert_eq!(header[0], 0x16, "a handshake record");
        let mut hello = vec![0u8; usize::from(u16::from_be_bytes([header[3], header[4]]))];
        stream.read_exact(&mut hello).expect("ClientHello");
        let _ = stream.write_all(&answer);
        let _ = stream.flush();
        std::thread::sleep(Duration::from_millis(200));
        hello
    });
    (addr, server)
}

/// A TLS 1.2-style ServerHello record choosing `version` and
/// TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, with no session id and no extensions.
fn server_hello(version: u16) -> Vec<u8> {
    let mut body = version.to_be_bytes().to_vec();
    body.extend_from_slice(&[0x42; 32]); // random
    body.push(0); // session id
    body.extend_from_slice(&[0xc0, 0x2f]); // cipher suite
    body.push(0); // compression: null
    let length = u32::try_from(body.len()).expect("small").to_be_bytes();
    let mut handshake = vec![0x02, length[1], length[2], length[3]];
    handshake.extend_from_slice(&body);
    let record_length = u16::try_from(handshake.len()).expect("small").to_be_bytes();
    let mut record = vec![0x16];
    record.extend_from_slice(&version.to_be_bytes());
    record.extend_from_slice(&record_length);
    record.extend_from_slice(&handshake);
    record
}

#[tokio::test]
async fn rejects_a_server_that_answers_below_tls_1_2() {
    // The control: a TLS 1.2 ServerHello is taken, and the handshake fails later (the server
    // closes instead of sending its certificate).
    let (addr, server) = fake_tls_server(server_hello(0x0303));
    let control = network_error(addr).await;
    server.join().expect("fake server");
    for (version, name) in [(0x0302, "TLS 1.1"), (0x0301, "TLS 1.0"), (0x0300, "SSL 3")] {
        let (addr, server) = fake_tls_server(server_hello(version));
        let error = network_error(addr).await;
        server.join().expect("fake server");
        let lower = error.to_lowercase();
        assert!(
            lower.contains("version") || lower.contains("incompatible"),
            "a {name} ServerHello should be refused for its version: {error}"
        );
        assert_ne!(error, control, "{name}: the same failure as with TLS 1.2");
        eprintln!("{name} ServerHello: {error}");
    }
    eprintln!("TLS 1.2 ServerHello (control): {control}");
}

#[tokio::test]
async fn offers_only_tls_1_2_and_1_3() {
    // A fatal handshake_failure alert ends the handshake once the ClientHello is read.
    let (addr, server) = fake_tls_server(vec![0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28]);
    let error = network_error(addr).await;
    let hello = server.join().expect("fake server");
    let (legacy_version, supported) = offered_versions(&hello);
    assert_eq!(
        legacy_version, 0x0303,
        "legacy_version must be TLS 1.2 (0x0303), got {legacy_version:#06x}"
    );
    let supported = supported.expect("a supported_versions extension");
    assert!(
        supported.contains(&0x0303),
        "TLS 1.2 is offered: {supported:04x?}"
    );
    for version in &supported {
        assert!(
            matches!(version, 0x0303 | 0x0304),
            "only TLS 1.2 and 1.3 may be offered, not {version:#06x} (all: {supported:04x?})"
        );
    }
    assert!(!error.is_empty());
}
