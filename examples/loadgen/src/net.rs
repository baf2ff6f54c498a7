//! Opening client sockets: spread over several loopback source addresses
//! with `IP_BIND_ADDRESS_NO_PORT`, so that 19k connections per run, run
//! after run, never run out of ephemeral ports (FIELD-NOTES).

use std::cell::Cell;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::sys;

/// A client WebSocket over a plain TCP stream.
pub type Ws = WebSocketStream<TcpStream>;

/// How long one TCP connect plus WebSocket upgrade may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Opens sockets from `127.0.0.1` to `127.0.0.<sources>` in turn.
pub struct Dialer {
    /// The source addresses, used round robin.
    sources: Vec<Ipv4Addr>,
    /// Index of the next source address (the load generator runs on one
    /// thread, so a `Cell` is enough).
    next: Cell<usize>,
    /// Buffer sizes of every client WebSocket.
    config: WebSocketConfig,
}

impl Dialer {
    /// A dialer over `sources` loopback addresses (1 to 254) whose sockets
    /// read `read_buffer` bytes at a time.
    pub fn new(sources: u8, read_buffer: usize) -> Self {
        let sources = (1..=sources.clamp(1, 254))
            .map(|last| Ipv4Addr::new(127, 0, 0, last))
            .collect();
        // tungstenite's default read buffer is 128 KiB and zero-filled:
        // 19k idle clients would spend gigabytes on it (FIELD-NOTES).
        let config = WebSocketConfig::default()
            .read_buffer_size(read_buffer)
            .write_buffer_size(0);
        Self {
            sources,
            next: Cell::new(0),
            config,
        }
    }

    /// The next source address.
    fn source(&self) -> Ipv4Addr {
        let i = self.next.get();
        self.next.set((i + 1) % self.sources.len());
        self.sources[i]
    }

    /// A TCP connection to `server` from the next source address.
    ///
    /// `SO_LINGER` 0 makes dropping the socket reset the connection: a
    /// killed app as the server sees it, and no `TIME_WAIT` left behind.
    pub async fn tcp(&self, server: SocketAddr) -> Result<TcpStream> {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
        sys::set_bind_address_no_port(&socket).context("IP_BIND_ADDRESS_NO_PORT")?;
        socket.set_linger(Some(Duration::ZERO))?;
        socket.set_tcp_nodelay(true)?;
        socket.set_nonblocking(true)?;
        let source = SocketAddr::from((self.source(), 0));
        socket
            .bind(&source.into())
            .with_context(|| format!("bind {source}"))?;
        let socket = TcpSocket::from_std_stream(std::net::TcpStream::from(socket));
        let stream = socket
            .connect(server)
            .await
            .with_context(|| format!("connect {source} -> {server}"))?;
        Ok(stream)
    }

    /// A WebSocket to `ws://<server><path_and_query>`.
    pub async fn websocket(&self, server: SocketAddr, path_and_query: &str) -> Result<Ws> {
        let attempt = async {
            let stream = self.tcp(server).await?;
            let url = format!("ws://{server}{path_and_query}");
            let (ws, _) =
                tokio_tungstenite::client_async_with_config(url, stream, Some(self.config))
                    .await
                    .context("WebSocket upgrade")?;
            anyhow::Ok(ws)
        };
        tokio::time::timeout(CONNECT_TIMEOUT, attempt)
            .await
            .context("connect timed out")?
    }
}
