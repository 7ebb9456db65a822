//! The node side of the client protocol: each client stream carries one `ClientRequest` frame;
//! the request goes to the node's [`ClientService`] and its answer comes back in one
//! `ClientResponse` frame on the same stream.

use std::sync::Arc;

use tokio::sync::oneshot;
use tracing::debug;

use crate::frame::{write_frame, Frame, FrameKind};
use crate::node::{cut, Inner};
use crate::proto::{decode_request_frame_body, Request, Response, ResponseError};

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
        body = Response::Error(ResponseError::BadRequest {
            reason: format!(
                "response of {} bytes exceeds the frame cap of {} bytes; ask for less",
                body.len(),
                inner.config.frame_bytes_max
            ),
        })
        .encode();
    }
    let r = write_frame(&mut send, &Frame::new(FrameKind::ClientResponse, body)).await;
    if let Err(error) = r.and_then(|()| Ok(send.finish()?)) {
        debug!(%error, "client went away before its response");
    }
}
