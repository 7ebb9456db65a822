//! The node side of the client protocol, on either kind of client stream:
//! - a call stream (first frame `ClientCall`): long-lived, carrying any number of calls told
//!   apart by call id; answers go back as `ClientReply` frames in the order they are ready,
//!   gathered into one stream write when several are ready at once;
//! - a one-call stream (first frame `ClientRequest`): one request, one `ClientResponse`.
//!
//! Either way each request goes to the node's [`ClientService`].

use std::sync::Arc;

use bytes::BytesMut;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tracing::debug;

use crate::frame::{write_frame, Frame, FrameKind, FrameReader};
use crate::node::{cut, Inner};
use crate::proto::{
    decode_call_frame_body, decode_request_frame_body, encode_reply_frame_body, Request, Response,
    ResponseError,
};
use crate::TransportError;

/// Calls of one call stream being served or answered but not yet written back; the stream is
/// not read further (and QUIC flow control holds the client back) until one reply is written,
/// so a client that stops reading its replies cannot make the node buffer more.
pub const CALLS_IN_FLIGHT_MAX: usize = 1024;
/// Replies gathered into one stream write, at most (more wait for the next write).
const REPLY_WRITE_BYTES_MAX: usize = 256 * 1024;

/// Where the answer to a client request goes; call it exactly once, from any thread.
pub type ResponseSender = Box<dyn FnOnce(Response) + Send>;

/// What answers client requests on a node (implemented by the node glue over its stores).
pub trait ClientService: Send + Sync + 'static {
    /// Handles `request` for store `store_id` (0: any store of the node, used by `Regions` and
    /// `Status`) and calls `reply` once with the answer. Must not block: it is called on the
    /// transport's runtime. Dropping `reply` uncalled answers `Unavailable`.
    fn call(&self, store_id: u64, request: Request, reply: ResponseSender);
}

fn unavailable(reason: &str) -> Response {
    Response::Error(ResponseError::Unavailable {
        reason: reason.to_owned(),
    })
}

pub(crate) async fn serve_request(
    inner: Arc<Inner>,
    conn: quinn::Connection,
    mut send: quinn::SendStream,
    _recv: quinn::RecvStream,
    body: bytes::Bytes,
) {
    let (store_id, request) = match decode_request_frame_body(&body) {
        Ok(r) => r,
        Err(e) => return cut(&conn, &e.into()),
    };
    let response = match inner.service() {
        None => unavailable("the node is not serving clients yet"),
        Some(service) => {
            let (tx, rx) = oneshot::channel();
            service.call(
                store_id,
                request,
                Box::new(move |r| {
                    let _ = tx.send(r);
                }),
            );
            rx.await
                .unwrap_or_else(|_| unavailable("the request was dropped"))
        }
    };
    let mut body = response.encode();
    if body.len() > inner.config.frame_bytes_max as usize {
        body = too_large(body.len(), inner.config.frame_bytes_max).encode();
    }
    let r = write_frame(&mut send, &Frame::new(FrameKind::ClientResponse, body)).await;
    if let Err(error) = r.and_then(|()| Ok(send.finish()?)) {
        debug!(%error, "client went away before its response");
    }
}

fn too_large(len: usize, frame_bytes_max: u32) -> Response {
    Response::Error(ResponseError::BadRequest {
        reason: format!(
            "response of {len} bytes exceeds the frame cap of {frame_bytes_max} bytes; ask for less"
        ),
    })
}

/// Serves a call stream whose first frame was `first` (a `ClientCall`), until the client ends
/// it or breaks the protocol (then the connection is cut). Answers still being worked on when
/// the stream ends are written before the reply side is finished.
pub(crate) async fn serve_calls(
    inner: Arc<Inner>,
    conn: quinn::Connection,
    send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    first: Frame,
) {
    let frame_bytes_max = inner.config.frame_bytes_max;
    let (tx, rx) = mpsc::unbounded_channel();
    let writer = tokio::spawn(write_replies(send, rx, frame_bytes_max));
    let permits = Arc::new(Semaphore::new(CALLS_IN_FLIGHT_MAX));
    let mut reader = FrameReader::new(frame_bytes_max);
    let mut next = Some(first);
    loop {
        let frame = match next.take() {
            Some(f) => f,
            None => match reader.next(&mut recv).await {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e @ TransportError::Frame(_)) => {
                    cut(&conn, &e);
                    break;
                }
                Err(error) => {
                    debug!(%error, "call stream ended");
                    break;
                }
            },
        };
        if frame.kind != FrameKind::ClientCall {
            let found = frame.kind;
            let wanted = "client call";
            cut(&conn, &TransportError::UnexpectedFrame { found, wanted });
            break;
        }
        let (call_id, store_id, request) = match decode_call_frame_body(&frame.body) {
            Ok(c) => c,
            Err(e) => {
                cut(&conn, &e.into());
                break;
            }
        };
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            break;
        };
        let reply = PendingReply {
            call_id,
            tx: Some(tx.clone()),
            permit: Some(permit),
        };
        match inner.service() {
            None => reply.send(unavailable("the node is not serving clients yet")),
            Some(service) => service.call(store_id, request, Box::new(move |r| reply.send(r))),
        }
    }
    drop(tx);
    let _ = writer.await;
}

/// The answer owed to one call. Dropped unanswered (the service let go of it), it answers
/// `Unavailable`, as the one-call stream does.
struct PendingReply {
    call_id: u64,
    tx: Option<mpsc::UnboundedSender<ReadyReply>>,
    permit: Option<OwnedSemaphorePermit>,
}

/// A reply on its way to the stream, holding its call's permit until written.
type ReadyReply = (u64, Response, Option<OwnedSemaphorePermit>);

impl PendingReply {
    fn send(mut self, response: Response) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send((self.call_id, response, self.permit.take()));
        }
    }
}

impl Drop for PendingReply {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            let reply = unavailable("the request was dropped");
            let _ = tx.send((self.call_id, reply, self.permit.take()));
        }
    }
}

/// Writes the replies of a call stream: everything ready goes out in one write.
async fn write_replies(
    mut send: quinn::SendStream,
    mut rx: mpsc::UnboundedReceiver<ReadyReply>,
    frame_bytes_max: u32,
) {
    let mut out = BytesMut::new();
    let mut body = BytesMut::new();
    let mut permits = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut ready = Some(first);
        while let Some((call_id, response, permit)) = ready.take() {
            permits.push(permit);
            body.clear();
            encode_reply_frame_body(&mut body, call_id, &response);
            if body.len() > frame_bytes_max as usize {
                let len = body.len();
                body.clear();
                encode_reply_frame_body(&mut body, call_id, &too_large(len, frame_bytes_max));
            }
            Frame::new(FrameKind::ClientReply, body.split().freeze()).encode_into(&mut out);
            if out.len() < REPLY_WRITE_BYTES_MAX {
                ready = rx.try_recv().ok();
            }
        }
        if let Err(error) = send.write_all(&out).await {
            debug!(%error, "client went away before its replies");
            return;
        }
        out.clear();
        permits.clear(); // written: the reader may take that many more calls
    }
    let _ = send.finish();
}
