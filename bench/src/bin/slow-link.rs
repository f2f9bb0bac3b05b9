//! A TCP relay that behaves like a long-distance link: each direction delays every byte by half
//! the round-trip time and carries at most `--rate-mbit`, shared by all connections as one
//! access link is, and a new connection waits one round trip for its handshake.
//!
//! bench/mirror.sh puts it between the upstream registry and both the mirrors and the direct
//! pull, so that a cold pull through a mirror is also measured where a mirror is meant to work:
//! the upstream far away, the mirror near the client. It is a user-space relay because this
//! machine's kernel has no netem qdisc.
//!
//! Usage: slow-link --listen 127.0.0.1:PORT --to 127.0.0.1:PORT [--rate-mbit 1000] [--rtt-ms 20]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

#[derive(Parser)]
struct Args {
    /// Where clients connect
    #[arg(long)]
    listen: SocketAddr,
    /// The server behind the link
    #[arg(long)]
    to: SocketAddr,
    /// Each direction's capacity, in megabits per second
    #[arg(long, default_value_t = 1000.0)]
    rate_mbit: f64,
    /// Round-trip time, in milliseconds
    #[arg(long, default_value_t = 20)]
    rtt_ms: u64,
}

/// Bytes read and not yet delivered, per connection and direction (the link's "window"):
/// far above a 1 Gbit/s × 10 ms bandwidth-delay product.
const IN_FLIGHT_CHUNKS: usize = 64;
const CHUNK: usize = 64 << 10;
/// How far ahead of the link a reader may get before it waits.
const SLACK: Duration = Duration::from_millis(5);

/// One direction of the link: when it has finished sending what it was given so far.
struct Direction {
    free_at: Mutex<Instant>,
    bytes_per_second: f64,
}

impl Direction {
    fn new(rate_mbit: f64) -> Arc<Self> {
        Arc::new(Direction {
            free_at: Mutex::new(Instant::now()),
            bytes_per_second: rate_mbit * 1e6 / 8.0,
        })
    }

    /// Queues `len` bytes behind everything already queued; the instant they are all sent.
    fn send(&self, len: usize) -> Instant {
        let mut free_at = self.free_at.lock().unwrap_or_else(|e| e.into_inner());
        let start = (*free_at).max(Instant::now());
        *free_at = start + Duration::from_secs_f64(len as f64 / self.bytes_per_second);
        *free_at
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listen on {}", args.listen))?;
    let rtt = Duration::from_millis(args.rtt_ms);
    let to_server = Direction::new(args.rate_mbit);
    let to_client = Direction::new(args.rate_mbit);
    loop {
        let (client, _) = listener.accept().await?;
        let (to_server, to_client) = (to_server.clone(), to_client.clone());
        let server = args.to;
        tokio::spawn(async move {
            if let Err(e) = carry(client, server, rtt, to_server, to_client).await {
                eprintln!("slow-link: {e:#}");
            }
        });
    }
}

/// One client connection, relayed to `server` through the link.
async fn carry(
    client: TcpStream,
    server: SocketAddr,
    rtt: Duration,
    to_server: Arc<Direction>,
    to_client: Arc<Direction>,
) -> Result<()> {
    // The handshake's round trip; what the client sends meanwhile waits in its socket.
    tokio::time::sleep(rtt).await;
    let upstream = TcpStream::connect(server)
        .await
        .with_context(|| format!("connect {server}"))?;
    client.set_nodelay(true)?;
    upstream.set_nodelay(true)?;
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = upstream.into_split();
    let one_way = rtt / 2;
    let (up, down) = tokio::join!(
        one_direction(client_read, server_write, to_server, one_way),
        one_direction(server_read, client_write, to_client, one_way),
    );
    up.and(down)
}

/// Reads as fast as the link sends, and delivers each chunk `one_way` after it was sent.
async fn one_direction(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    link: Arc<Direction>,
    one_way: Duration,
) -> Result<()> {
    let (in_flight, mut arriving) = mpsc::channel::<(Instant, Vec<u8>)>(IN_FLIGHT_CHUNKS);
    let sender = async move {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = from.read(&mut buf).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(());
            }
            let sent = link.send(n);
            // Reading no faster than the link sends is what pushes back on the sender; the
            // slack keeps the timer's 1 ms granularity from slowing the link down.
            if sent > Instant::now() + SLACK {
                tokio::time::sleep_until(sent - SLACK).await;
            }
            if in_flight
                .send((sent + one_way, buf[..n].to_vec()))
                .await
                .is_err()
            {
                return Ok(());
            }
        }
    };
    let receiver = async move {
        while let Some((arrival, data)) = arriving.recv().await {
            tokio::time::sleep_until(arrival).await;
            to.write_all(&data).await?;
        }
        to.shutdown().await
    };
    let (sent, received) = tokio::join!(sender, receiver);
    // A peer that resets its side ends the relay; that is how HTTP connections end here.
    let quiet = |r: std::io::Result<()>| match r {
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    };
    quiet(sent)?;
    quiet(received)?;
    Ok(())
}
