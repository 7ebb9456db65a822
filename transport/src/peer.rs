//! Raft messages between nodes: one [`Link`] per remote node address owns one QUIC connection
//! and one long-lived unidirectional stream on it. `send` only queues; the link's task drains
//! everything queued into as few `RaftBatch` frames as the frame cap allows. A failed dial or
//! write drops what was queued and reports the stores unreachable to the local stores that sent
//! to them; the link redials with backoff once there is something to send.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use engine::store::RaftMessage;
use tokio::sync::Notify;
use tracing::{debug, info, warn, Instrument};

use crate::frame::{read_frame, write_frame, Frame, FrameKind, FRAME_HEADER_LEN};
use crate::node::{cut, Inner};
use crate::wire::{put_u32, Reader};
use crate::TransportError;

/// The queue and connection towards one remote node.
pub(crate) struct Link {
    addr: SocketAddr,
    queue: Mutex<Vec<(u64, RaftMessage)>>,
    queue_len_max: usize,
    notify: Notify,
    /// The live connection and when it was opened.
    conn: Mutex<Option<(quinn::Connection, Instant)>>,
}

/// An outbound connection at least this old is replaced when its remote node connects to us
/// anew (see [`Link::remote_reconnected`]). Younger ones are kept, so two nodes that both
/// redial never keep replacing each other's fresh connections.
pub(crate) const LINK_REPLACE_AGE: Duration = Duration::from_secs(2);

impl Link {
    /// Creates the link and starts its task.
    pub(crate) fn start(inner: Arc<Inner>, addr: SocketAddr) -> Arc<Link> {
        let link = Arc::new(Link {
            addr,
            queue: Mutex::new(Vec::new()),
            queue_len_max: inner.config.queue_len_max,
            notify: Notify::new(),
            conn: Mutex::new(None),
        });
        let span = tracing::info_span!("link", remote = %addr);
        inner
            .handle
            .spawn(run(Arc::clone(&inner), Arc::clone(&link)).instrument(span));
        link
    }

    /// Queues messages for `to_store`; drops them if the queue is full (Raft resends).
    pub(crate) fn push(&self, to_store: u64, msgs: Vec<RaftMessage>) {
        {
            let mut q = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
            if q.len() + msgs.len() > self.queue_len_max {
                debug!(remote = %self.addr, store = to_store, dropped = msgs.len(), "link queue full");
                return;
            }
            q.extend(msgs.into_iter().map(|m| (to_store, m)));
        }
        self.notify.notify_one();
    }

    fn take(&self) -> Vec<(u64, RaftMessage)> {
        std::mem::take(&mut *self.queue.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn is_empty(&self) -> bool {
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }

    /// The live connection, if the link has one.
    pub(crate) fn connection(&self) -> Option<quinn::Connection> {
        let c = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        c.as_ref()
            .map(|(c, _)| c)
            .filter(|c| c.close_reason().is_none())
            .cloned()
    }

    fn set_connection(&self, conn: Option<quinn::Connection>) {
        *self.conn.lock().unwrap_or_else(PoisonError::into_inner) =
            conn.map(|c| (c, Instant::now()));
    }

    /// The remote node opened a new connection to us. A node only does that when it has no
    /// link of its own towards us: it restarted, or its link failed. Either way our outbound
    /// connection is suspect, and after a restart it leads to a dead process that QUIC would
    /// only declare gone after the idle timeout (10 s), while Raft messages pile into it. So an
    /// established connection is closed, and the link redials at once.
    pub(crate) fn remote_reconnected(&self) {
        let c = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((conn, since)) = c.as_ref() {
            if since.elapsed() >= LINK_REPLACE_AGE && conn.close_reason().is_none() {
                info!(remote = %self.addr, "remote node reconnected; replacing our link to it");
                conn.close(crate::CLOSE_NORMAL, b"peer reconnected");
            }
        }
    }
}

/// The (sending store, receiving store) pairs of `msgs`.
fn pairs_of(msgs: &[(u64, RaftMessage)], into: &mut HashSet<(u64, u64)>) {
    into.extend(msgs.iter().map(|(to, m)| (m.from.store_id, *to)));
}

/// Reports each pair's receiving store unreachable to its sending store.
fn report_pairs(inner: &Inner, pairs: &HashSet<(u64, u64)>) {
    for &(from, to) in pairs {
        inner.report_unreachable(from, to);
    }
}

async fn run(inner: Arc<Inner>, link: Arc<Link>) {
    let mut stop = inner.stop.subscribe();
    let mut delay = inner.config.reconnect_delay_min;
    loop {
        // Dial only when there is something to send.
        while link.is_empty() {
            tokio::select! {
                _ = link.notify.notified() => {}
                _ = stop.changed() => return,
            }
        }
        if inner.is_stopping() {
            return;
        }
        // Stores sent to on the connection: when it fails they are reported unreachable (what
        // was written may never have been read).
        let mut pairs = HashSet::new();
        let error = match open(&inner, link.addr).await {
            Ok((conn, send)) => {
                delay = inner.config.reconnect_delay_min;
                link.set_connection(Some(conn.clone()));
                let e = pump(&inner, &link, &conn, send, &mut stop, &mut pairs).await;
                link.set_connection(None);
                match e {
                    None => return,
                    Some(e) => e,
                }
            }
            Err(e) => e,
        };
        if inner.is_stopping() {
            return;
        }
        warn!(%error, retry_in = ?delay, "peer link failed");
        pairs_of(&link.take(), &mut pairs);
        report_pairs(&inner, &pairs);
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.changed() => return,
        }
        delay = (delay * 2).min(inner.config.reconnect_delay_max);
    }
}

async fn open(
    inner: &Inner,
    addr: SocketAddr,
) -> Result<(quinn::Connection, quinn::SendStream), TransportError> {
    let conn = inner.dial(addr).await?;
    let send = conn.open_uni().await?;
    debug!("peer link up");
    Ok((conn, send))
}

/// Sends batches until the connection fails (`Some(error)`) or the transport stops (`None`).
async fn pump(
    inner: &Inner,
    link: &Link,
    conn: &quinn::Connection,
    mut send: quinn::SendStream,
    stop: &mut tokio::sync::watch::Receiver<bool>,
    pairs: &mut HashSet<(u64, u64)>,
) -> Option<TransportError> {
    loop {
        let batch = link.take();
        if !batch.is_empty() {
            pairs_of(&batch, pairs);
            for body in encode_batches(&batch, inner.config.frame_bytes_max) {
                if let Err(e) =
                    write_frame(&mut send, &Frame::new(FrameKind::RaftBatch, body)).await
                {
                    return Some(e);
                }
            }
            continue;
        }
        tokio::select! {
            _ = link.notify.notified() => {}
            e = conn.closed() => return Some(e.into()),
            _ = stop.changed() => return None,
        }
    }
}

/// Encodes messages into `RaftBatch` bodies of at most `frame_bytes_max` bytes each: a `u32`
/// count, then per message a `u32` length and the message envelope. A message too large for
/// any frame is dropped (logged).
pub(crate) fn encode_batches(batch: &[(u64, RaftMessage)], frame_bytes_max: u32) -> Vec<Bytes> {
    let cap = frame_bytes_max as usize;
    let mut out = Vec::new();
    let mut body = BytesMut::new();
    let mut count = 0u32;
    let mut one = BytesMut::new();
    let flush = |body: &mut BytesMut, count: &mut u32, out: &mut Vec<Bytes>| {
        if *count > 0 {
            body[..4].copy_from_slice(&count.to_le_bytes());
            out.push(std::mem::take(body).freeze());
            *count = 0;
        }
    };
    for (_, m) in batch {
        one.clear();
        m.encode_into(&mut one);
        if 8 + one.len() > cap {
            warn!(
                region = m.region_id,
                bytes = one.len(),
                "raft message exceeds the frame cap; dropped"
            );
            continue;
        }
        if count > 0 && body.len() + 4 + one.len() > cap {
            flush(&mut body, &mut count, &mut out);
        }
        if count == 0 {
            put_u32(&mut body, 0);
        }
        put_u32(&mut body, one.len() as u32);
        body.extend_from_slice(&one);
        count += 1;
    }
    flush(&mut body, &mut count, &mut out);
    debug_assert!(out
        .iter()
        .all(|b| b.len() + FRAME_HEADER_LEN <= cap + FRAME_HEADER_LEN));
    out
}

/// Decodes a `RaftBatch` body. Never panics.
pub(crate) fn decode_batch(body: &Bytes) -> Result<Vec<RaftMessage>, TransportError> {
    let mut r = Reader::new(body);
    let count = r.count("raft message", 4)?;
    let mut msgs = Vec::with_capacity(count);
    for _ in 0..count {
        let b = r.bytes()?;
        msgs.push(RaftMessage::decode(&b)?);
    }
    r.finish()?;
    Ok(msgs)
}

/// Reads `RaftBatch` frames from one peer stream and hands each message to its store.
pub(crate) async fn receive_batches(
    inner: Arc<Inner>,
    conn: quinn::Connection,
    mut recv: quinn::RecvStream,
) {
    loop {
        let frame = match read_frame(&mut recv, inner.config.frame_bytes_max).await {
            Ok(Some(f)) => f,
            Ok(None) => return,
            Err(e @ TransportError::Frame(_)) => return cut(&conn, &e),
            Err(error) => return debug!(%error, "peer stream ended"),
        };
        if frame.kind != FrameKind::RaftBatch {
            let found = frame.kind;
            return cut(
                &conn,
                &TransportError::UnexpectedFrame {
                    found,
                    wanted: "raft batch",
                },
            );
        }
        let msgs = match decode_batch(&frame.body) {
            Ok(m) => m,
            Err(e) => return cut(&conn, &e),
        };
        let mut by_store: HashMap<u64, Vec<RaftMessage>> = HashMap::new();
        for m in msgs {
            by_store.entry(m.to.store_id).or_default().push(m);
        }
        for (store, msgs) in by_store {
            match inner.router(store) {
                Some(r) => r.deliver(msgs),
                None => debug!(
                    store,
                    count = msgs.len(),
                    "messages for an unknown store dropped"
                ),
            }
        }
    }
}
