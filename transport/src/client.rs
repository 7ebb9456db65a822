//! The client side of the client protocol: one QUIC connection to a node, one bidirectional
//! stream per request. No engine types: the SDK and `basalt-ctl` use this.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tracing::debug;

use crate::frame::{read_frame, write_frame, Frame, FrameKind, FRAME_BYTES_MAX_DEFAULT};
use crate::proto::{encode_request_frame_body, Request, Response};
use crate::{ClientTlsConfig, TransportError};

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

/// A QUIC transport configuration with the given idle timeout and keep-alive.
pub(crate) fn quic_transport_config(
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
    Ok(Arc::new(t))
}

/// A connection from a client to one node.
#[derive(Debug)]
pub struct ClientConnection {
    endpoint: quinn::Endpoint,
    conn: quinn::Connection,
    frame_bytes_max: u32,
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
        Ok(ClientConnection {
            endpoint,
            conn,
            frame_bytes_max: options.frame_bytes_max,
        })
    }

    /// The node's address.
    pub fn remote_addr(&self) -> SocketAddr {
        self.conn.remote_address()
    }

    /// Whether the connection is closed (a new one must be made).
    pub fn is_closed(&self) -> bool {
        self.conn.close_reason().is_some()
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
        let (mut send, mut recv) = self.conn.open_bi().await?;
        let body = encode_request_frame_body(store_id, request);
        write_frame(&mut send, &Frame::new(FrameKind::ClientRequest, body)).await?;
        send.finish()?;
        let frame = match read_frame(&mut recv, self.frame_bytes_max).await {
            Ok(Some(f)) => f,
            Ok(None) => return Err(TransportError::StreamEnded { wanted: "response" }),
            Err(e @ TransportError::Frame(_)) => {
                self.conn.close(crate::CLOSE_PROTOCOL_ERROR, b"bad frame");
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        if frame.kind != FrameKind::ClientResponse {
            return Err(TransportError::UnexpectedFrame {
                found: frame.kind,
                wanted: "response",
            });
        }
        Ok(Response::decode(&frame.body)?)
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
