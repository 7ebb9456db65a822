//! The node's Prometheus endpoint: a minimal HTTP/1.1 server on a std `TcpListener` in one thread,
//! answering `GET /metrics` with the text a caller-given closure renders, 404 for other paths,
//! 405 for other methods. One request per connection (`Connection: close`), served in turn: a
//! scraper polls every few seconds, so there is nothing to gain from a web framework or a pool.
//! Reads and writes time out so a stuck client cannot hold the thread for long.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Content type of the Prometheus text exposition format.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Largest request head read; a scraper's is a few hundred bytes.
const REQUEST_HEAD_BYTES_MAX: usize = 8 * 1024;
/// Socket read/write timeout per connection.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// A running metrics endpoint. [`MetricsServer::stop`] (or drop) ends its thread.
#[derive(Debug)]
pub struct MetricsServer {
    local_addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Binds `addr` (port 0 picks one, see [`MetricsServer::local_addr`]) and serves `render`'s
    /// output at `/metrics` from a new thread.
    pub fn start<F>(addr: SocketAddr, render: F) -> io::Result<MetricsServer>
    where
        F: Fn() -> String + Send + 'static,
    {
        let listener = TcpListener::bind(addr)?;
        let local_addr = listener.local_addr()?;
        let stopping = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stopping);
        let thread = std::thread::Builder::new()
            .name("metrics-http".into())
            .spawn(move || accept_loop(listener, &flag, &render))?;
        tracing::info!(addr = %local_addr, "metrics endpoint listening");
        Ok(MetricsServer {
            local_addr,
            stopping,
            thread: Some(thread),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting and joins the thread (after the request in progress, if any).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        self.stopping.store(true, Ordering::SeqCst);
        // Wake the blocking accept with a connection of our own.
        let mut wake = self.local_addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake {
                SocketAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
            });
        }
        if let Err(error) = TcpStream::connect_timeout(&wake, IO_TIMEOUT) {
            tracing::warn!(%error, "could not wake the metrics thread; leaving it behind");
            return;
        }
        if thread.join().is_err() {
            tracing::warn!("metrics thread panicked");
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn accept_loop(listener: TcpListener, stopping: &AtomicBool, render: &dyn Fn() -> String) {
    for conn in listener.incoming() {
        if stopping.load(Ordering::SeqCst) {
            break;
        }
        match conn {
            Ok(stream) => {
                if let Err(error) = serve(stream, render) {
                    tracing::debug!(%error, "metrics request failed");
                }
            }
            Err(error) => tracing::debug!(%error, "metrics accept failed"),
        }
    }
}

fn serve(mut stream: TcpStream, render: &dyn Fn() -> String) -> io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let head = read_head(&mut stream)?;
    let (status, body) = respond(head.as_deref(), render);
    let content_type = if status == "200 OK" {
        PROMETHEUS_CONTENT_TYPE
    } else {
        "text/plain; charset=utf-8"
    };
    let header = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(header.as_bytes())?;
    if !head.as_deref().is_some_and(|h| h.starts_with("HEAD ")) {
        stream.write_all(body.as_bytes())?;
    }
    stream.flush()
}

/// Reads up to the blank line ending the request head; `None` if it is not there within
/// [`REQUEST_HEAD_BYTES_MAX`] or not UTF-8.
fn read_head(stream: &mut TcpStream) -> io::Result<Option<String>> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        if buf.len() > REQUEST_HEAD_BYTES_MAX {
            return Ok(None);
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(String::from_utf8(buf).ok())
}

/// Status line and body for a request head.
fn respond(head: Option<&str>, render: &dyn Fn() -> String) -> (&'static str, String) {
    let Some(request_line) = head.and_then(|h| h.lines().next()) else {
        return ("400 Bad Request", "bad request\n".into());
    };
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return ("400 Bad Request", "bad request\n".into());
    };
    if !version.starts_with("HTTP/1.") {
        return ("400 Bad Request", "bad request\n".into());
    }
    let path = target.split('?').next().unwrap_or(target);
    match (path, method) {
        ("/metrics", "GET" | "HEAD") => ("200 OK", render()),
        ("/metrics", _) => ("405 Method Not Allowed", "method not allowed\n".into()),
        _ => ("404 Not Found", "not found; try /metrics\n".into()),
    }
}
