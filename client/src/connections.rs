//! One QUIC connection per node, made on first use and remade when closed. A node that failed
//! to connect is left alone for a moment ([`DOWN_FOR`]) so that calls fail over to other nodes
//! at once instead of each waiting out a connect timeout of its own.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tracing::debug;
use transport::{ClientConnection, ClientTlsConfig, TransportError};

use crate::error::{classify_transport, AttemptFailure};

/// How long a node that failed to connect is skipped. 500 ms: shorter than an election, so a
/// restarted node is tried again soon; long enough that a burst of calls pays one connect
/// timeout, not one each.
pub(crate) const DOWN_FOR: Duration = Duration::from_millis(500);

#[derive(Debug, Default)]
struct Slot {
    conn: RwLock<Option<Arc<ClientConnection>>>,
    /// Held while connecting, so that concurrent callers make one connection.
    connecting: tokio::sync::Mutex<()>,
    /// When the last connect failed, and why.
    down: Mutex<Option<(Instant, String)>>,
}

impl Slot {
    fn open(&self) -> Option<Arc<ClientConnection>> {
        let guard = self.conn.read().ok()?;
        guard.as_ref().filter(|c| !c.is_closed()).cloned()
    }

    fn down_reason(&self) -> Option<String> {
        let guard = self.down.lock().ok()?;
        guard
            .as_ref()
            .filter(|(at, _)| at.elapsed() < DOWN_FOR)
            .map(|(_, why)| why.clone())
    }
}

/// The connections of one client.
#[derive(Debug)]
pub(crate) struct Connections {
    tls: ClientTlsConfig,
    slots: Mutex<HashMap<SocketAddr, Arc<Slot>>>,
}

impl Connections {
    /// No connections yet.
    pub fn new(tls: ClientTlsConfig) -> Connections {
        Connections {
            tls,
            slots: Mutex::new(HashMap::new()),
        }
    }

    fn slot(&self, addr: SocketAddr) -> Arc<Slot> {
        match self.slots.lock() {
            Ok(mut m) => Arc::clone(m.entry(addr).or_default()),
            // A poisoned map only loses sharing: connect without caching.
            Err(_) => Arc::new(Slot::default()),
        }
    }

    /// An open connection to `addr`, connecting within `timeout` if needed.
    pub async fn get(
        &self,
        addr: SocketAddr,
        timeout: Duration,
    ) -> Result<Arc<ClientConnection>, AttemptFailure> {
        let slot = self.slot(addr);
        if let Some(c) = slot.open() {
            return Ok(c);
        }
        let _connecting = slot.connecting.lock().await;
        if let Some(c) = slot.open() {
            return Ok(c);
        }
        if let Some(why) = slot.down_reason() {
            return Err(AttemptFailure::Skipped(format!("{addr} down: {why}")));
        }
        let result =
            match tokio::time::timeout(timeout, ClientConnection::connect(addr, &self.tls)).await {
                Ok(r) => r,
                Err(_) => Err(TransportError::Timeout(timeout)),
            };
        match result {
            Ok(c) => {
                debug!(node = %addr, "connected");
                let c = Arc::new(c);
                if let Ok(mut g) = slot.conn.write() {
                    *g = Some(Arc::clone(&c));
                }
                if let Ok(mut d) = slot.down.lock() {
                    *d = None;
                }
                Ok(c)
            }
            Err(e) => {
                debug!(node = %addr, error = %e, "connect failed");
                if let Ok(mut d) = slot.down.lock() {
                    *d = Some((Instant::now(), e.to_string()));
                }
                Err(classify_transport(addr, &e))
            }
        }
    }

    /// Drops the connection to `addr` if it is `conn` (after a connection-level failure), so
    /// that the next call reconnects.
    pub fn discard(&self, addr: SocketAddr, conn: &Arc<ClientConnection>) {
        let slot = self.slot(addr);
        let Ok(mut g) = slot.conn.write() else {
            return;
        };
        if g.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
            conn.close();
            *g = None;
        }
    }

    /// Closes every connection.
    pub fn close_all(&self) {
        let slots: Vec<Arc<Slot>> = match self.slots.lock() {
            Ok(m) => m.values().cloned().collect(),
            Err(_) => return,
        };
        for s in slots {
            if let Ok(mut g) = s.conn.write() {
                if let Some(c) = g.take() {
                    c.close();
                }
            }
        }
    }
}
