//! A node's QUIC endpoint: one UDP socket serving peers and clients, dialing peers, and the
//! handles the node glue wires: [`NodeTransport`] (lifecycle, store registry, client service)
//! and [`QuicTransport`] (engine's [`Transport`], given to each store loop).
//!
//! Inbound, every connection must have passed mutual TLS (a refused handshake is logged and
//! never reaches a stream). Its unidirectional streams carry Raft batches; a bidirectional
//! stream is a snapshot stream or a client request, told apart by its first frame's kind.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use engine::state::worker::BuiltSnapshot;
use engine::store::{RaftMessage, StoreDriver, StoreRouter, Transport, Turn, UNWATCHED_LOG_POLL};
use tokio::runtime::{Handle, Runtime};
use tokio::sync::watch;
use tracing::{debug, info, warn, Instrument};

use crate::client::quic_transport_config;
use crate::frame::{read_frame, FrameKind, FRAME_BYTES_MAX_DEFAULT};
use crate::peer::Link;
use crate::server::ClientService;
use crate::{TlsConfig, TransportError, CLOSE_PROTOCOL_ERROR, CLOSE_SHUTDOWN};

/// Options of a node's transport.
#[derive(Clone, Debug)]
pub struct TransportConfig {
    /// Largest frame body read from a peer or client; a larger one cuts the connection.
    /// Default 16 MiB: a 1 MiB snapshot chunk or a big Raft batch fits with room to spare.
    pub frame_bytes_max: u32,
    /// Raft messages queued for one remote node before new ones are dropped (Raft resends).
    /// Default 4096: several ticks of traffic for many regions.
    pub queue_len_max: usize,
    /// First reconnect delay after a failed dial; doubles per failure. Default 100 ms.
    pub reconnect_delay_min: Duration,
    /// Longest reconnect delay. Default 5 s.
    pub reconnect_delay_max: Duration,
    /// A dial that has not completed its handshake after this long fails (a dead node's port
    /// does not answer at all). Default 3 s: many round trips even across a datacenter.
    pub connect_timeout: Duration,
    /// A connection closes after this long without traffic. Default 10 s (five keep-alives).
    pub idle_timeout: Duration,
    /// Keep-alive interval. Default 2 s.
    pub keep_alive_interval: Duration,
    /// How long a snapshot sender waits for a receipt once all chunks are written, before it
    /// reports the snapshot failed. Default 60 s: installing the last chunk is a checkpoint.
    pub snapshot_receipt_timeout: Duration,
    /// Chunks buffered between the network and the installer of one incoming snapshot; when
    /// full, reading stops and QUIC flow control holds the sender. Default 4.
    pub snapshot_chunks_buffered: usize,
    /// Worker threads of the runtime [`NodeTransport::bind`] starts. Default 2. With 1 the
    /// runtime is a current-thread one on a thread of its own (see [`NodeTransport::bind`]).
    pub runtime_threads: usize,
}

impl Default for TransportConfig {
    fn default() -> TransportConfig {
        TransportConfig {
            frame_bytes_max: FRAME_BYTES_MAX_DEFAULT,
            queue_len_max: 4096,
            reconnect_delay_min: Duration::from_millis(100),
            reconnect_delay_max: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(3),
            idle_timeout: Duration::from_secs(10),
            keep_alive_interval: Duration::from_secs(2),
            snapshot_receipt_timeout: Duration::from_secs(60),
            snapshot_chunks_buffered: 4,
            runtime_threads: 2,
        }
    }
}

impl TransportConfig {
    /// Rejects impossible values, naming the key.
    pub fn validate(&self) -> Result<(), TransportError> {
        let bad = |key, reason: &str| {
            Err(TransportError::Config {
                key,
                reason: reason.to_owned(),
            })
        };
        if self.frame_bytes_max < 1024 {
            return bad("frame_bytes_max", "must be at least 1024");
        }
        if self.queue_len_max == 0 {
            return bad("queue_len_max", "must be positive");
        }
        if self.reconnect_delay_min.is_zero() || self.reconnect_delay_max < self.reconnect_delay_min
        {
            return bad(
                "reconnect_delay_min",
                "must be positive and at most reconnect_delay_max",
            );
        }
        if self.keep_alive_interval >= self.idle_timeout {
            return bad("keep_alive_interval", "must be shorter than idle_timeout");
        }
        if self.snapshot_chunks_buffered == 0 {
            return bad("snapshot_chunks_buffered", "must be positive");
        }
        if self.connect_timeout.is_zero() {
            return bad("connect_timeout", "must be positive");
        }
        if self.runtime_threads == 0 {
            return bad("runtime_threads", "must be positive");
        }
        Ok(())
    }
}

/// State shared by the endpoint's tasks and the handles.
pub(crate) struct Inner {
    pub(crate) config: TransportConfig,
    pub(crate) endpoint: quinn::Endpoint,
    pub(crate) handle: Handle,
    pub(crate) server_name: Option<String>,
    routers: RwLock<HashMap<u64, StoreRouter>>,
    stores: RwLock<HashMap<u64, SocketAddr>>,
    links: Mutex<HashMap<SocketAddr, Arc<Link>>>,
    service: RwLock<Option<Arc<dyn ClientService>>>,
    pub(crate) stop: watch::Sender<bool>,
}

impl Inner {
    pub(crate) fn router(&self, store_id: u64) -> Option<StoreRouter> {
        let r = self.routers.read().unwrap_or_else(PoisonError::into_inner);
        r.get(&store_id).cloned()
    }

    pub(crate) fn store_addr(&self, store_id: u64) -> Option<SocketAddr> {
        let s = self.stores.read().unwrap_or_else(PoisonError::into_inner);
        s.get(&store_id).copied()
    }

    pub(crate) fn service(&self) -> Option<Arc<dyn ClientService>> {
        let s = self.service.read().unwrap_or_else(PoisonError::into_inner);
        s.clone()
    }

    pub(crate) fn is_stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// The link to `addr`, started on first use.
    pub(crate) fn link(self: &Arc<Self>, addr: SocketAddr) -> Arc<Link> {
        let mut links = self.links.lock().unwrap_or_else(PoisonError::into_inner);
        let link = links
            .entry(addr)
            .or_insert_with(|| Link::start(Arc::clone(self), addr));
        Arc::clone(link)
    }

    /// Tells local store `from_store` that `to_store` could not be reached.
    pub(crate) fn report_unreachable(&self, from_store: u64, to_store: u64) {
        if let Some(r) = self.router(from_store) {
            r.report_unreachable(to_store);
        }
    }

    /// Dials `addr` (mutual TLS), verifying its certificate against the configured server name
    /// or the IP address.
    pub(crate) async fn dial(&self, addr: SocketAddr) -> Result<quinn::Connection, TransportError> {
        let name = self
            .server_name
            .clone()
            .unwrap_or_else(|| addr.ip().to_string());
        let connecting = self.endpoint.connect(addr, &name)?;
        match tokio::time::timeout(self.config.connect_timeout, connecting).await {
            Ok(c) => Ok(c?),
            Err(_) => Err(TransportError::Timeout(self.config.connect_timeout)),
        }
    }
}

/// A node's transport: the QUIC endpoint and everything running on it. Dropping it shuts down.
pub struct NodeTransport {
    inner: Arc<Inner>,
    runtime: Option<Arc<Runtime>>,
    /// The thread driving a current-thread runtime (see [`NodeTransport::bind`]).
    driver: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for NodeTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeTransport")
            .field("local_addr", &self.local_addr().ok())
            .finish_non_exhaustive()
    }
}

impl NodeTransport {
    /// Binds `listen` and starts serving on a runtime of its own (`config.runtime_threads`
    /// threads). Refuses an invalid config.
    ///
    /// With one thread the runtime is tokio's current-thread scheduler, driven by a thread of
    /// its own (`basalt-net`), rather than the work-stealing scheduler with one worker: tasks
    /// woken on that thread run there, and other threads reach it through one unpark. Its main
    /// use is to carry the store loops too ([`NodeTransport::drive_store`]). Measured on the
    /// 2-vCPU machine: with quinn alone, a 300-byte request/response round trip between two
    /// such runtimes on two threads, the caller a task on one of them, took 111 µs p50 against
    /// 141 µs with one-worker work-stealing runtimes; through this transport, with a hand-off
    /// to another thread at each end, the two were alike (0.19 ms a client call, 0.31 ms a Raft
    /// message round trip). `floor_bench` now measures both with no such hand-off, next to
    /// quinn alone: 0.10 and 0.09-0.12 ms against quinn's 0.08-0.10 ms.
    pub fn bind(
        listen: SocketAddr,
        tls: &TlsConfig,
        config: TransportConfig,
    ) -> Result<NodeTransport, TransportError> {
        config.validate()?;
        let io_error = |source| TransportError::Io {
            what: "start the transport runtime",
            source,
        };
        let runtime = if config.runtime_threads == 1 {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(io_error)?
        } else {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(config.runtime_threads)
                .thread_name("basalt-net")
                .enable_all()
                .build()
                .map_err(io_error)?
        };
        let runtime = Arc::new(runtime);
        let mut node = NodeTransport::bind_on(listen, tls, config, runtime.handle().clone())?;
        if node.inner.config.runtime_threads == 1 {
            node.driver = Some(drive(&node.inner, Arc::clone(&runtime)).map_err(io_error)?);
        }
        node.runtime = Some(runtime);
        Ok(node)
    }

    /// Binds `listen` and starts serving on the given runtime.
    pub fn bind_on(
        listen: SocketAddr,
        tls: &TlsConfig,
        config: TransportConfig,
        handle: Handle,
    ) -> Result<NodeTransport, TransportError> {
        config.validate()?;
        let transport = quic_transport_config(config.idle_timeout, config.keep_alive_interval)?;
        let server = tls.quic_server(Arc::clone(&transport))?;
        let client = tls.quic_client(transport)?;
        let endpoint = {
            let _guard = handle.enter();
            quinn::Endpoint::server(server, listen).map_err(|source| TransportError::Io {
                what: "bind the QUIC endpoint",
                source,
            })?
        };
        let mut endpoint = endpoint;
        endpoint.set_default_client_config(client);
        let (stop, _) = watch::channel(false);
        let inner = Arc::new(Inner {
            config,
            endpoint,
            handle: handle.clone(),
            server_name: tls.server_name().map(str::to_owned),
            routers: RwLock::default(),
            stores: RwLock::default(),
            links: Mutex::default(),
            service: RwLock::default(),
            stop,
        });
        let local = inner.endpoint.local_addr().ok();
        handle.spawn(
            accept_loop(Arc::clone(&inner))
                .instrument(tracing::info_span!("accept", local = ?local)),
        );
        info!(listen = ?local, "transport listening");
        Ok(NodeTransport {
            inner,
            runtime: None,
            driver: None,
        })
    }

    /// The bound address (with the real port when bound to port 0).
    pub fn local_addr(&self) -> Result<SocketAddr, TransportError> {
        self.inner
            .endpoint
            .local_addr()
            .map_err(|source| TransportError::Io {
                what: "local address",
                source,
            })
    }

    /// Registers a local store: inbound messages, snapshots and unreachable/snapshot reports
    /// for `store_id` go to `router`. Replaces an earlier registration.
    pub fn register_store(&self, store_id: u64, router: StoreRouter) {
        let mut r = self
            .inner
            .routers
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        r.insert(store_id, router);
    }

    /// Forgets a local store (its inbound traffic is dropped from now on).
    pub fn unregister_store(&self, store_id: u64) {
        let mut r = self
            .inner
            .routers
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        r.remove(&store_id);
    }

    /// Tells where a store (local or remote) listens. Replaces an earlier address.
    pub fn add_store(&self, store_id: u64, addr: SocketAddr) {
        let mut s = self
            .inner
            .stores
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        s.insert(store_id, addr);
    }

    /// Sets the service answering client requests (until set, clients get `Unavailable`).
    pub fn set_client_service(&self, service: Arc<dyn ClientService>) {
        let mut s = self
            .inner
            .service
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        *s = Some(service);
    }

    /// The engine [`Transport`] to give each local store.
    pub fn transport(&self) -> QuicTransport {
        QuicTransport {
            inner: Arc::clone(&self.inner),
        }
    }

    /// Runs a store's loop as a task of the transport's runtime (see [`Store::open_driven`]):
    /// the task turns it whenever one of its inputs wakes it or its next tick is due; once it
    /// has finished, the rest of the stop (the log's last writes, the final checkpoint) runs
    /// on a thread of its own, since it blocks. Meant for a current-thread runtime
    /// (`runtime_threads` 1), where a message or request then reaches Raft, and Raft's answer
    /// the network, without a thread switch. If the transport shuts down first, the task is
    /// dropped and the store halts as a crash would.
    ///
    /// [`Store::open_driven`]: engine::store::Store::open_driven
    pub fn drive_store(&self, mut driver: StoreDriver) {
        let notify = Arc::new(tokio::sync::Notify::new());
        let hook = Arc::clone(&notify);
        driver.wake().set(Box::new(move || hook.notify_one()));
        let span = tracing::info_span!("store", store_id = driver.store_id());
        let _entered = self.inner.handle.enter();
        let log_fd = driver.take_log_completion_fd().and_then(|fd| {
            // SAFETY: the `File` owns the descriptor, keeps it open until the `AsyncFd` drops
            // it, and always returns that same descriptor from `as_raw_fd`.
            let watched = unsafe {
                tokio::io::unix::AsyncFd::register_with_interest(
                    std::fs::File::from(fd),
                    tokio::io::Interest::READABLE,
                )
            };
            watched
                .map_err(|e| {
                    warn!(error = %e, poll_ms = UNWATCHED_LOG_POLL.as_millis() as u64,
                        "log completions unwatched; the store polls its log device while writes are in flight");
                    driver.log_completions_unwatched();
                })
                .ok()
        });
        self.inner.handle.spawn(
            async move {
                while let Turn::Wait(timeout) = driver.turn() {
                    // The turn's messages go out first (the transport's tasks run during the
                    // yield), then its log write goes on the device. A turn that wrote
                    // nothing skips the yield (each costs the runtime a poll of its reactor).
                    if driver.has_log_writes_to_start() {
                        tokio::task::yield_now().await;
                        driver.start_log_writes();
                    }
                    if timeout.is_zero() {
                        tokio::task::yield_now().await;
                    } else {
                        tokio::select! {
                            _ = notify.notified() => {}
                            _ = tokio::time::sleep(timeout) => {}
                            _ = log_completion(log_fd.as_ref()) => {}
                        }
                    }
                }
                let name = format!("basalt-stop-{}", driver.store_id());
                let (tx, rx) = std::sync::mpsc::channel();
                let spawned = std::thread::Builder::new().name(name).spawn(move || {
                    if let Ok(d) = rx.recv() {
                        StoreDriver::finish(d);
                    }
                });
                match spawned {
                    Ok(_) => {
                        let _ = tx.send(driver);
                    }
                    Err(error) => {
                        warn!(%error, "no thread for the store's stop; finishing on the runtime");
                        driver.finish();
                    }
                }
            }
            .instrument(span),
        );
    }

    /// The runtime the transport runs on.
    pub fn runtime_handle(&self) -> Handle {
        self.inner.handle.clone()
    }

    /// Stops: closes every connection and the endpoint, and stops the owned runtime. Queued
    /// messages are dropped. Call it from outside the transport's runtime (it blocks briefly
    /// while connections close).
    pub fn shutdown(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        let _ = self.inner.stop.send(true);
        self.inner.endpoint.close(CLOSE_SHUTDOWN, b"shutdown");
        if let Some(driver) = self.driver.take() {
            // The driver lets the connections close, then leaves its `block_on`.
            let _ = driver.join();
        }
        if let Some(rt) = self.runtime.take() {
            let endpoint = self.inner.endpoint.clone();
            let Ok(rt) = Arc::try_unwrap(rt) else {
                return;
            };
            rt.block_on(async move {
                let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
            });
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

/// Waits until the log device posted a completion (see
/// [`StoreDriver::take_log_completion_fd`]) and resets its eventfd; never returns without one.
async fn log_completion(fd: Option<&tokio::io::unix::AsyncFd<std::fs::File>>) {
    use std::io::Read;
    let Some(fd) = fd else {
        return std::future::pending().await;
    };
    let Ok(mut ready) = fd.readable().await else {
        return std::future::pending().await;
    };
    let mut counter = [0u8; 8];
    // Nonblocking: `WouldBlock` only means another read already reset it.
    let _ = fd.get_ref().read(&mut counter);
    ready.clear_ready();
}

/// Starts the thread that drives a current-thread runtime until the transport stops; on the
/// way out it gives the connections up to a second to close.
fn drive(
    inner: &Arc<Inner>,
    runtime: Arc<Runtime>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let mut stop = inner.stop.subscribe();
    let endpoint = inner.endpoint.clone();
    std::thread::Builder::new()
        .name("basalt-net".into())
        .spawn(move || {
            runtime.block_on(async move {
                while !*stop.borrow_and_update() {
                    if stop.changed().await.is_err() {
                        break;
                    }
                }
                let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
            });
        })
}

impl Drop for NodeTransport {
    fn drop(&mut self) {
        if !self.inner.is_stopping() {
            self.stop_now();
        }
    }
}

/// The engine [`Transport`] over QUIC: cloneable, never blocks.
#[derive(Clone)]
pub struct QuicTransport {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for QuicTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicTransport").finish_non_exhaustive()
    }
}

impl Transport for QuicTransport {
    fn send(&self, to_store: u64, msgs: Vec<RaftMessage>) {
        if msgs.is_empty() || self.inner.is_stopping() {
            return;
        }
        if let Some(router) = self.inner.router(to_store) {
            router.deliver(msgs);
            return;
        }
        let Some(addr) = self.inner.store_addr(to_store) else {
            debug!(store = to_store, "no address for store; messages dropped");
            if let Some(m) = msgs.first() {
                self.inner.report_unreachable(m.from.store_id, to_store);
            }
            return;
        };
        self.inner.link(addr).push(to_store, msgs);
    }

    fn send_snapshot(&self, to_store: u64, message: RaftMessage, snapshot: Arc<BuiltSnapshot>) {
        let inner = Arc::clone(&self.inner);
        let span = tracing::info_span!(
            "snapshot_send",
            store = message.from.store_id,
            region = message.region_id,
            peer = message.to.peer_id,
            to_store
        );
        self.inner
            .handle
            .spawn(crate::snapshot::send(inner, to_store, message, snapshot).instrument(span));
    }
}

async fn accept_loop(inner: Arc<Inner>) {
    while let Some(incoming) = inner.endpoint.accept().await {
        let inner = Arc::clone(&inner);
        let remote = incoming.remote_address();
        tokio::spawn(
            async move {
                match incoming.await {
                    Ok(conn) => serve_connection(inner, conn).await,
                    Err(error) => warn!(%remote, %error, "connection refused during handshake"),
                }
            }
            .instrument(tracing::info_span!("conn", %remote)),
        );
    }
}

/// Cuts a connection whose peer broke the protocol.
pub(crate) fn cut(conn: &quinn::Connection, error: &TransportError) {
    warn!(remote = %conn.remote_address(), %error, "protocol violation; connection closed");
    conn.close(CLOSE_PROTOCOL_ERROR, b"protocol violation");
}

/// Whether the connection's (already CA-verified) certificate may carry peer traffic: it must
/// be usable as a node's server certificate, that is have no extended key usage or one that
/// includes serverAuth. Client certificates issued by [`crate::certs`] have clientAuth only.
fn is_node_certificate(conn: &quinn::Connection) -> bool {
    let Some(identity) = conn.peer_identity() else {
        return false;
    };
    let Ok(chain) = identity.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>() else {
        return false;
    };
    let Some(der) = chain.first() else {
        return false;
    };
    match x509_parser::parse_x509_certificate(der) {
        Ok((_, cert)) => match cert.extended_key_usage() {
            Ok(None) => true,
            Ok(Some(eku)) => eku.value.server_auth || eku.value.any,
            Err(_) => false,
        },
        Err(_) => false,
    }
}

async fn serve_connection(inner: Arc<Inner>, conn: quinn::Connection) {
    let is_node = is_node_certificate(&conn);
    debug!(is_node, "connection accepted");
    if is_node {
        let link = inner
            .links
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&conn.remote_address())
            .cloned();
        if let Some(link) = link {
            link.remote_reconnected();
        }
    }
    loop {
        tokio::select! {
            uni = conn.accept_uni() => match uni {
                Ok(recv) if is_node => {
                    tokio::spawn(crate::peer::receive_batches(Arc::clone(&inner), conn.clone(), recv));
                }
                Ok(_) => {
                    return cut(&conn, &TransportError::NotANode);
                }
                Err(error) => { debug!(%error, "connection ended"); return; }
            },
            bi = conn.accept_bi() => match bi {
                Ok((send, recv)) => {
                    tokio::spawn(serve_bi(Arc::clone(&inner), conn.clone(), send, recv, is_node));
                }
                Err(error) => { debug!(%error, "connection ended"); return; }
            },
        }
    }
}

async fn serve_bi(
    inner: Arc<Inner>,
    conn: quinn::Connection,
    send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    is_node: bool,
) {
    let first = match read_frame(&mut recv, inner.config.frame_bytes_max).await {
        Ok(Some(f)) => f,
        Ok(None) => return,
        Err(e @ TransportError::Frame(_)) => return cut(&conn, &e),
        Err(error) => return debug!(%error, "stream failed before its first frame"),
    };
    match first.kind {
        FrameKind::SnapshotHeader if !is_node => cut(&conn, &TransportError::NotANode),
        FrameKind::SnapshotHeader => {
            crate::snapshot::receive(inner, conn, send, recv, first.body).await
        }
        FrameKind::ClientRequest => {
            crate::server::serve_request(inner, conn, send, recv, first.body).await
        }
        FrameKind::ClientCall => crate::server::serve_calls(inner, conn, send, recv, first).await,
        found => cut(
            &conn,
            &TransportError::UnexpectedFrame {
                found,
                wanted: "snapshot header, client request or client call",
            },
        ),
    }
}
