//! The client side of the client protocol: one QUIC connection to a node, and on it one
//! long-lived call stream that carries every call, told apart by call id. No engine types: the
//! SDK and `basalt-ctl` use this.
//!
//! Why one stream and not a stream per call: with a stream per call every request and every
//! answer was a QUIC packet of its own (a new stream's frames, its end, stream credit). On one
//! stream, calls made together and answers ready together share a stream write and so a
//! packet; `cluster_bench latency` counted 2.5 UDP datagrams per put with 64 in flight before.
//! A call stream is opened with the connection; when it fails the connection is closed, every
//! call waiting on it fails (retryably), and the SDK connects again.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::{mpsc, oneshot};
use tracing::debug;

use crate::frame::{read_frame, Frame, FrameKind, FrameReader, FRAME_BYTES_MAX_DEFAULT};
use crate::proto::{decode_reply_frame_body, encode_call_frame_body, Request, Response};
use crate::{ClientTlsConfig, TransportError};

/// Calls gathered into one stream write, at most.
const CALL_WRITE_BYTES_MAX: usize = 256 * 1024;

/// Options of a client connection.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Largest response frame body accepted. Default 16 MiB (see
    /// [`FRAME_BYTES_MAX_DEFAULT`]); a larger one closes the connection.
    pub frame_bytes_max: u32,
    /// The connection closes after this long without traffic. Default 10 s: well past the
    /// keep-alive interval, short enough to notice a dead node quickly.
    pub idle_timeout: Duration,
    /// Keep-alive interval. Default 2 s.
    pub keep_alive_interval: Duration,
}

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions {
            frame_bytes_max: FRAME_BYTES_MAX_DEFAULT,
            idle_timeout: Duration::from_secs(10),
            keep_alive_interval: Duration::from_secs(2),
        }
    }
}

/// A QUIC transport configuration with the given idle timeout and keep-alive: what every
/// connection of this crate uses (public for benchmarks that measure QUIC alone).
pub fn quic_transport_config(
    idle_timeout: Duration,
    keep_alive_interval: Duration,
) -> Result<Arc<quinn::TransportConfig>, TransportError> {
    let mut t = quinn::TransportConfig::default();
    let idle = quinn::IdleTimeout::try_from(idle_timeout).map_err(|e| TransportError::Config {
        key: "idle_timeout",
        reason: e.to_string(),
    })?;
    t.max_idle_timeout(Some(idle));
    t.keep_alive_interval(Some(keep_alive_interval));
    t.ack_frequency_config(Some(ack_frequency()));
    Ok(Arc::new(t))
}

/// Asks the peer to acknowledge every [`ACK_ELICITING_THRESHOLD`]` + 1` packets (or after its
/// `max_ack_delay`) rather than every second one (QUIC's default). Raft messages between two
/// nodes flow on two connections, one per direction (each node dials its own link), so the
/// receiving side of each has no data to carry its ACKs: with the default it sent an ACK-only
/// datagram for every second append and every second answer, about 2 of the 8 datagrams of
/// one put with one in flight. Each such datagram wakes the thread it reaches.
fn ack_frequency() -> quinn::AckFrequencyConfig {
    let mut a = quinn::AckFrequencyConfig::default();
    a.ack_eliciting_threshold(quinn::VarInt::from_u32(ACK_ELICITING_THRESHOLD));
    a
}

/// Ack-eliciting packets a peer may receive before it must acknowledge (see [`ack_frequency`]).
/// 15: a window of 64 in-flight puts still gets several ACKs per round trip.
const ACK_ELICITING_THRESHOLD: u32 = 15;

/// A connection from a client to one node.
#[derive(Debug)]
pub struct ClientConnection {
    endpoint: quinn::Endpoint,
    conn: quinn::Connection,
    frame_bytes_max: u32,
    calls: Arc<Calls>,
    /// Encoded `ClientCall` frames for the call stream's writer.
    outgoing: mpsc::UnboundedSender<Bytes>,
    next_call_id: AtomicU64,
}

type Waiter = oneshot::Sender<Result<Response, TransportError>>;

/// The calls waiting for their answers on a call stream.
#[derive(Debug, Default)]
struct Calls {
    waiting: Mutex<Waiting>,
}

#[derive(Debug, Default)]
struct Waiting {
    by_id: HashMap<u64, Waiter>,
    /// The stream has failed: no call is taken any more.
    ended: bool,
}

impl Calls {
    fn lock(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers call `id`; false once the stream has ended.
    fn add(&self, id: u64, waiter: Waiter) -> bool {
        let mut w = self.lock();
        if w.ended {
            return false;
        }
        w.by_id.insert(id, waiter);
        true
    }

    fn remove(&self, id: u64) {
        self.lock().by_id.remove(&id);
    }

    fn answer(&self, id: u64, response: Response) {
        let waiter = self.lock().by_id.remove(&id);
        // No waiter: the call timed out or was given up; its answer is dropped.
        if let Some(w) = waiter {
            let _ = w.send(Ok(response));
        }
    }

    /// Ends the stream: every waiting call fails with the connection's error.
    fn end(&self, conn: &quinn::Connection) {
        let waiting = {
            let mut w = self.lock();
            w.ended = true;
            std::mem::take(&mut w.by_id)
        };
        for (_, waiter) in waiting {
            let _ = waiter.send(Err(ended_error(conn)));
        }
    }

    fn has_ended(&self) -> bool {
        self.lock().ended
    }
}

/// Why a call stream can carry no more calls: the connection's close reason when it has one.
fn ended_error(conn: &quinn::Connection) -> TransportError {
    match conn.close_reason() {
        Some(reason) => TransportError::Connection(reason),
        None => TransportError::StreamEnded { wanted: "response" },
    }
}

/// Removes its call from the waiting ones when the call is given up (timeout, or its future
/// dropped); a no-op once the answer has been taken.
struct CallGuard<'a> {
    calls: &'a Calls,
    id: u64,
}

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        self.calls.remove(self.id);
    }
}

/// Writes the call stream: every call made while the last write was going out goes out in the
/// next one. Any failure closes the connection (the reader then fails the waiting calls).
async fn write_calls(
    conn: quinn::Connection,
    mut send: quinn::SendStream,
    mut outgoing: mpsc::UnboundedReceiver<Bytes>,
) {
    let mut out = BytesMut::new();
    while let Some(first) = outgoing.recv().await {
        out.extend_from_slice(&first);
        while out.len() < CALL_WRITE_BYTES_MAX {
            match outgoing.try_recv() {
                Ok(more) => out.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        if let Err(error) = send.write_all(&out).await {
            debug!(%error, "call stream write failed");
            if conn.close_reason().is_none() {
                conn.close(crate::CLOSE_NORMAL, b"call stream failed");
            }
            return;
        }
        out.clear();
    }
    // The connection handle was dropped: end the stream so the node finishes its side.
    let _ = send.finish();
}

/// Reads the call stream's replies and hands each to its call; at the end (the connection
/// closed, or a bad frame: then it is closed here) fails every call still waiting.
async fn read_replies(
    conn: quinn::Connection,
    mut recv: quinn::RecvStream,
    calls: Arc<Calls>,
    frame_bytes_max: u32,
) {
    let mut reader = FrameReader::new(frame_bytes_max);
    loop {
        let failure = match reader.next(&mut recv).await {
            Ok(Some(f)) if f.kind == FrameKind::ClientReply => {
                match decode_reply_frame_body(&f.body) {
                    Ok((id, response)) => {
                        calls.answer(id, response);
                        continue;
                    }
                    Err(e) => Some(TransportError::from(e)),
                }
            }
            Ok(Some(f)) => Some(TransportError::UnexpectedFrame {
                found: f.kind,
                wanted: "client reply",
            }),
            Ok(None) => None,
            Err(e @ TransportError::Frame(_)) => Some(e),
            Err(error) => {
                debug!(%error, "call stream ended");
                None
            }
        };
        // A connection already closed keeps the reason it was closed with.
        if conn.close_reason().is_none() {
            match failure {
                Some(error) => {
                    debug!(%error, "bad reply; closing the connection");
                    conn.close(crate::CLOSE_PROTOCOL_ERROR, b"bad reply");
                }
                None => conn.close(crate::CLOSE_NORMAL, b"call stream ended"),
            }
        }
        calls.end(&conn);
        return;
    }
}

impl ClientConnection {
    /// Connects to the node at `addr` with default options. Must run inside a tokio runtime.
    pub async fn connect(
        addr: SocketAddr,
        tls: &ClientTlsConfig,
    ) -> Result<ClientConnection, TransportError> {
        ClientConnection::connect_with(addr, tls, &ClientOptions::default()).await
    }

    /// Connects to the node at `addr`. The server's certificate is verified against the CA and
    /// `tls.server_name()` (default: the IP address of `addr`).
    pub async fn connect_with(
        addr: SocketAddr,
        tls: &ClientTlsConfig,
        options: &ClientOptions,
    ) -> Result<ClientConnection, TransportError> {
        let bind: SocketAddr = if addr.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let mut endpoint = quinn::Endpoint::client(bind).map_err(|source| TransportError::Io {
            what: "bind client endpoint",
            source,
        })?;
        let transport = quic_transport_config(options.idle_timeout, options.keep_alive_interval)?;
        endpoint.set_default_client_config(tls.quic_client(transport)?);
        let name = tls
            .server_name()
            .map_or_else(|| addr.ip().to_string(), str::to_owned);
        let conn = endpoint.connect(addr, &name)?.await?;
        debug!(remote = %addr, "client connected");
        // Opening is local (the node learns of the stream from its first call) and cannot
        // wait: a new connection has stream credit.
        let (send, recv) = conn.open_bi().await?;
        let calls = Arc::new(Calls::default());
        let (outgoing, outgoing_rx) = mpsc::unbounded_channel();
        tokio::spawn(write_calls(conn.clone(), send, outgoing_rx));
        tokio::spawn(read_replies(
            conn.clone(),
            recv,
            Arc::clone(&calls),
            options.frame_bytes_max,
        ));
        Ok(ClientConnection {
            endpoint,
            conn,
            frame_bytes_max: options.frame_bytes_max,
            calls,
            outgoing,
            next_call_id: AtomicU64::new(1),
        })
    }

    /// The node's address.
    pub fn remote_addr(&self) -> SocketAddr {
        self.conn.remote_address()
    }

    /// Whether the connection is closed or its call stream has ended (a new one must be made).
    pub fn is_closed(&self) -> bool {
        self.conn.close_reason().is_some() || self.calls.has_ended()
    }

    /// Sends `request` to store `store_id` of the node (0: any store, for `Regions`/`Status`)
    /// and waits for the answer, at most `timeout`.
    pub async fn call(
        &self,
        store_id: u64,
        request: &Request,
        timeout: Duration,
    ) -> Result<Response, TransportError> {
        match tokio::time::timeout(timeout, self.call_inner(store_id, request)).await {
            Ok(r) => r,
            Err(_) => Err(TransportError::Timeout(timeout)),
        }
    }

    async fn call_inner(
        &self,
        store_id: u64,
        request: &Request,
    ) -> Result<Response, TransportError> {
        let id = self.next_call_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        if !self.calls.add(id, tx) {
            return Err(ended_error(&self.conn));
        }
        let _guard = CallGuard {
            calls: &self.calls,
            id,
        };
        let frame = Frame::new(
            FrameKind::ClientCall,
            encode_call_frame_body(id, store_id, request),
        );
        if self.outgoing.send(frame.encode()).is_err() {
            return Err(ended_error(&self.conn));
        }
        match rx.await {
            Ok(answer) => answer,
            Err(_) => Err(ended_error(&self.conn)),
        }
    }

    /// Closes the connection.
    pub fn close(&self) {
        self.conn.close(crate::CLOSE_NORMAL, b"");
    }

    /// Closes the connection and waits (briefly) for the close to reach the node.
    pub async fn shutdown(self) {
        self.close();
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
    }

    /// Sends raw bytes on a new stream and waits for the stream to end (tests of refusals).
    #[doc(hidden)]
    pub async fn send_raw(&self, bytes: Bytes) -> Result<(), TransportError> {
        let (mut send, mut recv) = self.conn.open_bi().await?;
        send.write_all(&bytes).await?;
        send.finish()?;
        let _ = read_frame(&mut recv, self.frame_bytes_max).await?;
        Ok(())
    }
}
