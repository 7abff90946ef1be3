//! A loopback TCP proxy a test can cut and restore, to cut one process off from a server
//! (a replica from PostgreSQL) while the others keep it.
//!
//! [`TcpProxy`] listens on 127.0.0.1 and forwards each connection to its upstream address.
//! [`TcpProxy::cut`] closes every live connection, both ways at once, and from then on drops
//! each new connection as soon as it is accepted (with a reset), until
//! [`TcpProxy::restore`]. Its port stays the same throughout, so clients configured with
//! [`TcpProxy::addr`] reconnect through it once it is restored.
//!
//! The proxy runs on a thread and a runtime of its own, so that it keeps forwarding while
//! the test's thread blocks (waiting on a child process, say), and so that a test with no
//! runtime can use it too. Its methods block only until the proxy has done what they ask.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// How long the proxy may take to answer a command, or to connect upstream.
const TIMEOUT: Duration = Duration::from_secs(10);

/// A running proxy; dropping it closes its listener and every connection.
pub struct TcpProxy {
    addr: SocketAddr,
    /// `None` once dropped: closing the channel is what stops the proxy's thread.
    commands: Option<mpsc::UnboundedSender<Command>>,
    thread: Option<JoinHandle<()>>,
    /// Disconnected when the thread ends, so that dropping waits for it with a timeout.
    finished: std_mpsc::Receiver<()>,
}

/// What the test asks of the proxy's thread; each is answered once done.
enum Command {
    Cut(std_mpsc::Sender<()>),
    Restore(std_mpsc::Sender<()>),
}

impl TcpProxy {
    /// Starts forwarding connections made to [`TcpProxy::addr`] to `upstream`. Panics if it
    /// cannot listen on loopback.
    pub fn start(upstream: SocketAddr) -> TcpProxy {
        // Bound here, so the address is known before the thread runs.
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|listener| listener.set_nonblocking(true).map(|()| listener))
            .unwrap_or_else(|e| panic!("TCP proxy: cannot listen on 127.0.0.1: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("TCP proxy: the listener's address: {e}"));
        let (commands, receiver) = mpsc::unbounded_channel();
        let (ready, started) = std_mpsc::channel();
        let (finishing, finished) = std_mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("tcp-proxy-{}", addr.port()))
            .spawn(move || {
                let _finishing = finishing;
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                match runtime {
                    Ok(runtime) => runtime.block_on(run(listener, upstream, receiver, ready)),
                    Err(e) => {
                        let _ = ready.send(Err(format!("cannot build a runtime: {e}")));
                    }
                }
            })
            .unwrap_or_else(|e| panic!("TCP proxy: cannot start its thread: {e}"));
        match started.recv_timeout(TIMEOUT) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("TCP proxy: {e}"),
            Err(e) => panic!("TCP proxy: did not start: {e}"),
        }
        TcpProxy {
            addr,
            commands: Some(commands),
            thread: Some(thread),
            finished,
        }
    }

    /// Where clients connect (127.0.0.1 and a port of its own, fixed for the proxy's life).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes every live connection (both sides: the client reads end of stream and its
    /// writes fail, the upstream sees the connection end) and drops new ones until
    /// [`TcpProxy::restore`]. Returns once every connection is closed.
    pub fn cut(&self) {
        self.ask("cut", Command::Cut);
    }

    /// Forwards new connections again. Returns once it does.
    pub fn restore(&self) {
        self.ask("restore", Command::Restore);
    }

    fn ask(&self, what: &str, command: fn(std_mpsc::Sender<()>) -> Command) {
        let (done, answered) = std_mpsc::channel();
        let sent = self
            .commands
            .as_ref()
            .is_some_and(|commands| commands.send(command(done)).is_ok());
        if !sent || answered.recv_timeout(TIMEOUT).is_err() {
            panic!(
                "TCP proxy at {}: {what} was not done within {TIMEOUT:?}",
                self.addr
            );
        }
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        // The thread ends when the channel closes; its runtime, going, closes every socket.
        self.commands = None;
        if let Err(std_mpsc::RecvTimeoutError::Timeout) = self.finished.recv_timeout(TIMEOUT) {
            // A test failing already should not hang on top of it.
            eprintln!(
                "warning: the TCP proxy at {} did not stop; left running",
                self.addr
            );
            return;
        }
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            eprintln!("warning: the TCP proxy at {} panicked", self.addr);
        }
    }
}

/// The proxy's loop: accepts, forwards or drops, and obeys commands until the channel closes.
async fn run(
    listener: std::net::TcpListener,
    upstream: SocketAddr,
    mut commands: mpsc::UnboundedReceiver<Command>,
    ready: std_mpsc::Sender<Result<(), String>>,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => {
            let _ = ready.send(Err(format!("cannot use the listener: {e}")));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    let mut forwarding = true;
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else {
                    // Out of descriptors, or the client gave up: nothing to forward. A pause
                    // keeps a persistent failure from spinning.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                if forwarding {
                    connections.spawn(forward(client, upstream));
                } else {
                    reset(client);
                }
            }
            command = commands.recv() => match command {
                Some(Command::Cut(done)) => {
                    forwarding = false;
                    // Aborting a task drops its two sockets, which closes them; once every
                    // task is joined, no connection is left.
                    connections.abort_all();
                    while connections.join_next().await.is_some() {}
                    let _ = done.send(());
                }
                Some(Command::Restore(done)) => {
                    forwarding = true;
                    let _ = done.send(());
                }
                None => break,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Forwards one connection both ways until either side closes it.
async fn forward(mut client: TcpStream, upstream: SocketAddr) {
    let mut server = match tokio::time::timeout(TIMEOUT, TcpStream::connect(upstream)).await {
        Ok(Ok(server)) => server,
        // As the upstream would have: the client's connection ends at once.
        _ => return reset(client),
    };
    // The protocols behind it (PostgreSQL's) are request and answer: no batching delay.
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
}

/// Closes a connection with a reset rather than an orderly end, as a refused one would be.
fn reset(stream: TcpStream) {
    // Zero linger never blocks on close; if it cannot be set, an orderly close does too.
    let _ = stream.set_zero_linger();
    drop(stream);
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// Within a test's patience: long for a loopback proxy, short next to a hang.
    const PROMPTLY: Duration = Duration::from_secs(5);

    /// An upstream echoing every byte back; it reports each connection it saw end.
    async fn echo_server() -> (SocketAddr, mpsc::UnboundedReceiver<()>) {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (ended, ends) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let ended = ended.clone();
                tokio::spawn(async move {
                    let (mut reader, mut writer) = stream.split();
                    let _ = tokio::io::copy(&mut reader, &mut writer).await;
                    let _ = ended.send(());
                });
            }
        });
        (addr, ends)
    }

    /// Writes `bytes` and reads as many back, within [`PROMPTLY`].
    async fn echo(stream: &mut TcpStream, bytes: &[u8]) -> std::io::Result<Vec<u8>> {
        let exchange = async {
            stream.write_all(bytes).await?;
            let mut back = vec![0; bytes.len()];
            stream.read_exact(&mut back).await?;
            Ok(back)
        };
        tokio::time::timeout(PROMPTLY, exchange)
            .await
            .expect("an answer or an error, not a hang")
    }

    /// What a read gives within [`PROMPTLY`]: the connection must have ended (end of stream
    /// or an error), not be hanging.
    async fn assert_ended(stream: &mut TcpStream) {
        let mut buffer = [0; 16];
        let read = tokio::time::timeout(PROMPTLY, stream.read(&mut buffer))
            .await
            .expect("the connection ended promptly, not hanging");
        assert!(
            matches!(read, Ok(0) | Err(_)),
            "read {read:?}: the connection is still up"
        );
    }

    #[tokio::test]
    async fn forwards_bytes_both_ways_and_many_connections() {
        let (upstream, _) = echo_server().await;
        let proxy = TcpProxy::start(upstream);
        assert!(proxy.addr().ip().is_loopback());
        let mut first = TcpStream::connect(proxy.addr()).await.expect("connect");
        let mut second = TcpStream::connect(proxy.addr()).await.expect("connect");
        assert_eq!(echo(&mut first, b"ping").await.expect("echo"), b"ping");
        // More than any socket buffer, so that both directions really stream.
        let big: Vec<u8> = (0..1_000_000).map(|i| (i % 251) as u8).collect();
        assert_eq!(echo(&mut second, &big).await.expect("echo"), big);
        assert_eq!(echo(&mut first, b"pong").await.expect("echo"), b"pong");
    }

    #[tokio::test]
    async fn cut_ends_live_connections_both_ways_and_refuses_new_ones_until_restored() {
        let (upstream, mut upstream_ends) = echo_server().await;
        let proxy = TcpProxy::start(upstream);
        let mut live = TcpStream::connect(proxy.addr()).await.expect("connect");
        assert_eq!(echo(&mut live, b"before").await.expect("echo"), b"before");

        proxy.cut();
        // The client's side is closed...
        assert_ended(&mut live).await;
        // A write may still be taken into the socket's buffer; the reset it draws fails the
        // next ones.
        let writes_fail = async {
            while live.write_all(b"after").await.is_ok() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(PROMPTLY, writes_fail)
            .await
            .expect("writes through a cut proxy fail promptly");
        // ...and so is the upstream's.
        tokio::time::timeout(PROMPTLY, upstream_ends.recv())
            .await
            .expect("the upstream saw its connection end promptly")
            .expect("the echo server runs");

        // New connections get nothing through while cut.
        for _ in 0..3 {
            match TcpStream::connect(proxy.addr()).await {
                Err(_) => {}
                Ok(mut refused) => {
                    let answer = echo(&mut refused, b"anyone?").await;
                    assert!(answer.is_err(), "forwarded while cut: {answer:?}");
                }
            }
        }

        proxy.restore();
        let mut again = TcpStream::connect(proxy.addr()).await.expect("connect");
        assert_eq!(echo(&mut again, b"again").await.expect("echo"), b"again");
        // Cutting twice, restoring twice: each is idempotent.
        proxy.cut();
        proxy.cut();
        assert_ended(&mut again).await;
        proxy.restore();
        proxy.restore();
        let mut third = TcpStream::connect(proxy.addr()).await.expect("connect");
        assert_eq!(echo(&mut third, b"third").await.expect("echo"), b"third");
    }

    #[tokio::test]
    async fn an_unreachable_upstream_ends_the_client_connection() {
        // A port nothing listens on: bound, then released.
        let closed = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|listener| listener.local_addr())
            .expect("a port");
        let proxy = TcpProxy::start(closed);
        // The reset may come before the client's connect returns, and fail it.
        if let Ok(mut client) = TcpStream::connect(proxy.addr()).await {
            assert_ended(&mut client).await;
        }
    }

    #[tokio::test]
    async fn drop_closes_the_listener_and_every_connection() {
        let (upstream, _) = echo_server().await;
        let proxy = TcpProxy::start(upstream);
        let addr = proxy.addr();
        let mut live = TcpStream::connect(addr).await.expect("connect");
        assert_eq!(echo(&mut live, b"hello").await.expect("echo"), b"hello");
        drop(proxy);
        assert_ended(&mut live).await;
        assert!(TcpStream::connect(addr).await.is_err(), "still listening");
    }

    /// End to end with a real client: sqlx to the shared PostgreSQL through the proxy.
    #[tokio::test]
    #[ignore = "needs postgres"]
    async fn postgres_client_through_the_proxy_is_cut_off_and_reconnects() {
        use sqlx::Connection;
        use sqlx::postgres::PgConnection;

        let server_url = crate::needs::postgres_url();
        let mut url = url::Url::parse(&server_url).expect("a URL");
        let upstream = url
            .socket_addrs(|| Some(5432))
            .expect("resolve")
            .into_iter()
            .next()
            .expect("an address");
        let proxy = TcpProxy::start(upstream);
        url.set_ip_host(proxy.addr().ip()).expect("set host");
        url.set_port(Some(proxy.addr().port())).expect("set port");
        let url = url.to_string();
        let connect = || async {
            tokio::time::timeout(PROMPTLY, PgConnection::connect(&url))
                .await
                .expect("connect answers promptly")
        };
        async fn select_one(conn: &mut PgConnection) -> Result<i32, sqlx::Error> {
            let query = sqlx::query_scalar("SELECT 1").fetch_one(conn);
            tokio::time::timeout(PROMPTLY, query)
                .await
                .expect("the query answers promptly")
        }

        let mut conn = connect().await.expect("connect through the proxy");
        assert_eq!(select_one(&mut conn).await.expect("SELECT 1"), 1);

        proxy.cut();
        assert!(
            select_one(&mut conn).await.is_err(),
            "queried through a cut proxy"
        );
        assert!(connect().await.is_err(), "connected through a cut proxy");

        proxy.restore();
        let mut conn = connect().await.expect("connect after restore");
        assert_eq!(select_one(&mut conn).await.expect("SELECT 1"), 1);
        conn.close().await.expect("close");
    }
}
