//! Snapshot streams: a bidirectional stream per snapshot. The sender writes a `SnapshotHeader`
//! frame (the `MsgSnapshot` envelope), then `SnapshotChunk` frames from the built snapshot; the
//! receiver hands the chunks to its store through a small bounded channel (when it is full the
//! receiver stops reading and QUIC flow control holds the sender) and writes the store's
//! receipts back as `SnapshotReceipt` frames. `ResumeFrom(n)` rewinds the sender to chunk `n`
//! (repeats of the same `n`, caused by chunks already in flight, are ignored); `Installed`
//! ends the stream with success, `Rejected` or any failure with failure, reported to the
//! sending store with `report_snapshot`.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use engine::state::worker::BuiltSnapshot;
use engine::store::{IncomingSnapshot, RaftMessage, SnapshotReceipt};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info, warn};

use crate::frame::{read_frame, write_frame, Frame, FrameKind};
use crate::node::{cut, Inner};
use crate::wire::{put_bytes, put_u32, put_u8, DecodeError, Reader};
use crate::TransportError;

/// Encodes a receipt: tag 1 `ResumeFrom` + `u32`, 2 `Installed`, 3 `Rejected` + reason.
pub(crate) fn encode_receipt(r: &SnapshotReceipt) -> Bytes {
    let mut out = BytesMut::new();
    match r {
        SnapshotReceipt::ResumeFrom { next_chunk_no } => {
            put_u8(&mut out, 1);
            put_u32(&mut out, *next_chunk_no);
        }
        SnapshotReceipt::Installed => put_u8(&mut out, 2),
        SnapshotReceipt::Rejected { reason } => {
            put_u8(&mut out, 3);
            put_bytes(&mut out, reason.as_bytes());
        }
    }
    out.freeze()
}

/// Decodes a receipt. Never panics.
pub(crate) fn decode_receipt(b: &Bytes) -> Result<SnapshotReceipt, DecodeError> {
    let mut r = Reader::new(b);
    let receipt = match r.u8()? {
        1 => SnapshotReceipt::ResumeFrom {
            next_chunk_no: r.u32()?,
        },
        2 => SnapshotReceipt::Installed,
        3 => SnapshotReceipt::Rejected {
            reason: String::from_utf8_lossy(&r.bytes()?).into_owned(),
        },
        tag => {
            return Err(DecodeError::UnknownTag {
                what: "snapshot receipt",
                tag,
            })
        }
    };
    r.finish()?;
    Ok(receipt)
}

fn is_final(r: &SnapshotReceipt) -> bool {
    !matches!(r, SnapshotReceipt::ResumeFrom { .. })
}

/// Streams `snapshot` to `to_store` and reports the outcome to the sending store.
pub(crate) async fn send(
    inner: Arc<Inner>,
    to_store: u64,
    message: RaftMessage,
    snapshot: Arc<BuiltSnapshot>,
) {
    let (from_store, region_id, to_peer) =
        (message.from.store_id, message.region_id, message.to.peer_id);
    let ok = match stream(&inner, to_store, &message, snapshot).await {
        Ok(ok) => ok,
        Err(error) => {
            warn!(%error, "snapshot stream failed");
            false
        }
    };
    if let Some(r) = inner.router(from_store) {
        r.report_snapshot(region_id, to_peer, ok);
    }
}

async fn connection(
    inner: &Arc<Inner>,
    to_store: u64,
) -> Result<quinn::Connection, TransportError> {
    let addr = inner
        .store_addr(to_store)
        .ok_or(TransportError::UnknownStore { store_id: to_store })?;
    if let Some(c) = inner.link(addr).connection() {
        return Ok(c);
    }
    inner.dial(addr).await
}

async fn stream(
    inner: &Arc<Inner>,
    to_store: u64,
    message: &RaftMessage,
    snapshot: Arc<BuiltSnapshot>,
) -> Result<bool, TransportError> {
    let conn = connection(inner, to_store).await?;
    let (mut send, mut recv) = conn.open_bi().await?;
    write_frame(
        &mut send,
        &Frame::new(FrameKind::SnapshotHeader, message.encode()),
    )
    .await?;
    let (events_tx, mut events) = mpsc::channel(16);
    let (resume_tx, resume_rx) = watch::channel(0u32);
    let (sent_all_tx, mut sent_all) = watch::channel(false);
    let cap = inner.config.frame_bytes_max;
    let writer_events = events_tx.clone();
    let writer = tokio::spawn(async move {
        if let Err(e) = write_chunks(send, snapshot, resume_rx, sent_all_tx, cap).await {
            let _ = writer_events.send(Err(e)).await;
        }
    });
    let frame_cap = inner.config.frame_bytes_max;
    let reader = tokio::spawn(async move {
        loop {
            let r = match read_frame(&mut recv, frame_cap).await {
                Ok(Some(f)) if f.kind == FrameKind::SnapshotReceipt => {
                    decode_receipt(&f.body).map_err(TransportError::from)
                }
                Ok(Some(f)) => Err(TransportError::UnexpectedFrame {
                    found: f.kind,
                    wanted: "snapshot receipt",
                }),
                Ok(None) => Err(TransportError::StreamEnded {
                    wanted: "snapshot receipt",
                }),
                Err(e) => Err(e),
            };
            let stop = r.as_ref().map_or(true, is_final);
            if events_tx.send(r).await.is_err() || stop {
                return;
            }
        }
    });
    let result = await_receipts(inner, &mut events, &resume_tx, &mut sent_all).await;
    writer.abort();
    reader.abort();
    if let Err(e @ TransportError::Frame(_)) = &result {
        cut(&conn, e);
    }
    result
}

async fn await_receipts(
    inner: &Inner,
    events: &mut mpsc::Receiver<Result<SnapshotReceipt, TransportError>>,
    resume: &watch::Sender<u32>,
    sent_all: &mut watch::Receiver<bool>,
) -> Result<bool, TransportError> {
    let mut last_rewind = None;
    let idle = Duration::from_secs(365 * 24 * 3600);
    loop {
        let wait = if *sent_all.borrow() {
            inner.config.snapshot_receipt_timeout
        } else {
            idle
        };
        tokio::select! {
            ev = events.recv() => match ev {
                Some(Ok(SnapshotReceipt::ResumeFrom { next_chunk_no })) => {
                    if last_rewind != Some(next_chunk_no) {
                        debug!(next_chunk_no, "receiver asks to resume");
                        last_rewind = Some(next_chunk_no);
                        let _ = resume.send(next_chunk_no);
                    }
                }
                Some(Ok(SnapshotReceipt::Installed)) => {
                    info!("snapshot installed by the receiver");
                    return Ok(true);
                }
                Some(Ok(SnapshotReceipt::Rejected { reason })) => {
                    info!(%reason, "snapshot rejected by the receiver");
                    return Ok(false);
                }
                Some(Err(e)) => return Err(e),
                None => return Err(TransportError::StreamEnded { wanted: "snapshot receipt" }),
            },
            _ = sent_all.changed() => {}
            _ = tokio::time::sleep(wait) => return Err(TransportError::Timeout(wait)),
        }
    }
}

/// Writes chunks from 0, rewinding when `resume` changes; signals `sent_all` when the last
/// chunk is written. Runs until aborted.
async fn write_chunks(
    mut send: quinn::SendStream,
    snapshot: Arc<BuiltSnapshot>,
    mut resume: watch::Receiver<u32>,
    sent_all: watch::Sender<bool>,
    frame_bytes_max: u32,
) -> Result<(), TransportError> {
    let count = snapshot.meta.chunk_count;
    let mut next = 0u32;
    loop {
        if resume.has_changed().unwrap_or(false) {
            next = *resume.borrow_and_update();
            let _ = sent_all.send(false);
        }
        if next >= count {
            let _ = sent_all.send(true);
            if resume.changed().await.is_err() {
                return Ok(());
            }
            // `changed` marked the value seen: take it here.
            next = *resume.borrow_and_update();
            let _ = sent_all.send(false);
            continue;
        }
        let s = Arc::clone(&snapshot);
        let chunk = tokio::task::spawn_blocking(move || s.chunk(next))
            .await
            .map_err(|_| TransportError::Shutdown)?
            .map_err(|e| TransportError::SnapshotChunk {
                chunk_no: next,
                reason: e.to_string(),
            })?;
        if chunk.len() + 4 > frame_bytes_max as usize {
            return Err(TransportError::SnapshotChunk {
                chunk_no: next,
                reason: format!(
                    "{} bytes exceed the frame cap {frame_bytes_max}",
                    chunk.len()
                ),
            });
        }
        let mut body = BytesMut::with_capacity(4 + chunk.len());
        put_u32(&mut body, next);
        body.extend_from_slice(&chunk);
        write_frame(
            &mut send,
            &Frame::new(FrameKind::SnapshotChunk, body.freeze()),
        )
        .await?;
        next += 1;
    }
}

/// Serves an incoming snapshot stream whose header frame carried `header`.
pub(crate) async fn receive(
    inner: Arc<Inner>,
    conn: quinn::Connection,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    header: Bytes,
) {
    let message = match RaftMessage::decode(&header) {
        Ok(m) => m,
        Err(e) => return cut(&conn, &e.into()),
    };
    let Some(router) = inner.router(message.to.store_id) else {
        let r = SnapshotReceipt::Rejected {
            reason: format!("no store {} here", message.to.store_id),
        };
        let _ = write_frame(
            &mut send,
            &Frame::new(FrameKind::SnapshotReceipt, encode_receipt(&r)),
        )
        .await;
        let _ = send.finish();
        return;
    };
    debug!(
        region = message.region_id,
        store = message.to.store_id,
        "incoming snapshot"
    );
    let (chunk_tx, chunk_rx) = crossbeam_channel::bounded(inner.config.snapshot_chunks_buffered);
    let (receipt_tx, receipt_rx) = crossbeam_channel::unbounded::<SnapshotReceipt>();
    router.deliver_snapshot(IncomingSnapshot {
        message,
        chunks: chunk_rx,
        receipts: receipt_tx,
    });
    let (out_tx, mut out_rx) = mpsc::channel::<SnapshotReceipt>(16);
    tokio::task::spawn_blocking(move || loop {
        let r = receipt_rx
            .recv()
            .unwrap_or_else(|_| SnapshotReceipt::Rejected {
                reason: "the store dropped the snapshot".into(),
            });
        let fin = is_final(&r);
        if out_tx.blocking_send(r).is_err() || fin {
            return;
        }
    });
    let (done_tx, mut done) = oneshot::channel::<()>();
    tokio::spawn(async move {
        while let Some(r) = out_rx.recv().await {
            let frame = Frame::new(FrameKind::SnapshotReceipt, encode_receipt(&r));
            if let Err(error) = write_frame(&mut send, &frame).await {
                debug!(%error, "snapshot receipt not delivered");
                break;
            }
            if is_final(&r) {
                let _ = send.finish();
                break;
            }
        }
        let _ = done_tx.send(());
    });
    loop {
        tokio::select! {
            _ = &mut done => break,
            f = read_frame(&mut recv, inner.config.frame_bytes_max) => match f {
                Ok(Some(frame)) if frame.kind == FrameKind::SnapshotChunk => {
                    let mut r = Reader::new(&frame.body);
                    if r.u32().is_err() {
                        return cut(&conn, &TransportError::StreamEnded { wanted: "chunk number" });
                    }
                    let data = r.rest();
                    let tx = chunk_tx.clone();
                    // Blocks a pool thread while the channel is full: the back-pressure.
                    match tokio::task::spawn_blocking(move || tx.send(data)).await {
                        Ok(Ok(())) => {}
                        _ => break,
                    }
                }
                Ok(Some(frame)) => {
                    let found = frame.kind;
                    return cut(&conn, &TransportError::UnexpectedFrame { found, wanted: "snapshot chunk" });
                }
                Ok(None) => break,
                Err(e @ TransportError::Frame(_)) => return cut(&conn, &e),
                Err(error) => { debug!(%error, "snapshot stream ended"); break; }
            }
        }
    }
}
