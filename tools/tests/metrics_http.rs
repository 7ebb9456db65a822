//! The `/metrics` endpoint over real TCP on 127.0.0.1: `GET /metrics` returns the render
//! closure's current text with the Prometheus content type, other paths 404, other methods 405,
//! garbage 400, and `stop()` really closes the port.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tools::metrics_http::{MetricsServer, PROMETHEUS_CONTENT_TYPE};

fn request(addr: SocketAddr, raw: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.write_all(raw.as_bytes()).expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    out
}

#[test]
fn serves_metrics_and_refuses_the_rest() {
    let hits = Arc::new(AtomicU64::new(0));
    let h = Arc::clone(&hits);
    let server = MetricsServer::start("127.0.0.1:0".parse().unwrap(), move || {
        let n = h.fetch_add(1, Ordering::SeqCst) + 1;
        format!("basalt_scrapes_total {n}\n")
    })
    .expect("start");
    let addr = server.local_addr();
    assert_ne!(addr.port(), 0);

    let get = "GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n";
    let r = request(addr, get);
    assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
    assert!(
        r.contains(&format!("Content-Type: {PROMETHEUS_CONTENT_TYPE}\r\n")),
        "{r}"
    );
    let body = "basalt_scrapes_total 1\n";
    assert!(
        r.contains(&format!("Content-Length: {}\r\n", body.len())),
        "{r}"
    );
    assert!(r.ends_with(&format!("\r\n\r\n{body}")), "{r}");
    // The closure runs per request: the second scrape sees fresh values.
    assert!(request(addr, get).ends_with("basalt_scrapes_total 2\n"));
    assert!(request(addr, "GET /metrics?x=1 HTTP/1.0\r\n\r\n").starts_with("HTTP/1.1 200 OK"));

    let r = request(addr, "GET / HTTP/1.1\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 404 Not Found\r\n"), "{r}");
    let r = request(addr, "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"), "{r}");
    let r = request(addr, "hello\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{r}");
    let r = request(addr, "HEAD /metrics HTTP/1.1\r\n\r\n");
    assert!(
        r.starts_with("HTTP/1.1 200 OK\r\n") && r.ends_with("\r\n\r\n"),
        "{r}"
    );
    assert_eq!(
        hits.load(Ordering::SeqCst),
        4,
        "404/405/400 must not render"
    );

    server.stop();
    assert!(
        TcpStream::connect(addr).is_err(),
        "port still open after stop"
    );
}
