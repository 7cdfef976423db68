//! The metrics listener: a minimal HTTP/1.x responder for `GET /metrics`, `/healthz` and
//! `/readyz`, enough for Prometheus, kubelet probes and curl, with no web framework behind three
//! paths.
use std::{io, net::SocketAddr, sync::Arc, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use super::{health::Health, metrics::Metrics};

/// How long a metrics client gets to send its request and read the answer.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// The next metrics client, or never when metrics are off.
pub async fn accept_scrape(listener: Option<&TcpListener>) -> io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(listener) => listener.accept().await,
        None => std::future::pending().await,
    }
}

/// Answers one HTTP/1.x request: `GET /metrics` gets the exposition, read from the kernel now;
/// `/healthz` says the process serves, `/readyz` whether it is ready (503 with the reason if not).
pub async fn serve_scrape(mut stream: TcpStream, metrics: Arc<Metrics>, health: Arc<Health>) {
    let mut head = Vec::new();
    let read = tokio::time::timeout(SCRAPE_TIMEOUT, async {
        let mut chunk = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n")
            && !head.windows(2).any(|w| w == b"\n\n")
            && head.len() < 8192
        {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&chunk[..n]);
        }
        io::Result::Ok(())
    })
    .await;
    if !matches!(read, Ok(Ok(()))) {
        return;
    }
    let response = respond(&String::from_utf8_lossy(&head), &metrics, &health);
    let _ = tokio::time::timeout(SCRAPE_TIMEOUT, async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
}

fn respond(request: &str, metrics: &Metrics, health: &Health) -> String {
    const TEXT: &str = "text/plain; charset=utf-8";
    let mut words = request.lines().next().unwrap_or("").split_whitespace();
    let method = words.next().unwrap_or("");
    let path = words.next().unwrap_or("").split('?').next().unwrap_or("");
    let (status, content_type, body) = match (method, path) {
        ("GET" | "HEAD", "/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.encode(),
        ),
        ("GET" | "HEAD", "/healthz") => ("200 OK", TEXT, "ok\n".to_owned()),
        ("GET" | "HEAD", "/readyz") => match health.ready() {
            Ok(()) => ("200 OK", TEXT, "ready\n".to_owned()),
            Err(why) => (
                "503 Service Unavailable",
                TEXT,
                format!("not ready: {why}\n"),
            ),
        },
        ("GET" | "HEAD", _) => (
            "404 Not Found",
            TEXT,
            "enforcer serves /metrics, /healthz and /readyz only\n".to_owned(),
        ),
        _ => (
            "405 Method Not Allowed",
            TEXT,
            "enforcer answers GET only\n".to_owned(),
        ),
    };
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if method != "HEAD" {
        response.push_str(&body);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_get_metrics_gets_the_exposition() {
        let metrics = Metrics::new(crate::bpf::Bpf::shipped(), None);
        let health = Health::default();
        metrics.delivered.inc_by(3);
        let ok = respond(
            "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
            &metrics,
            &health,
        );
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("enforcer_events_delivered_total 3\n"), "{ok}");
        assert!(
            ok.contains("# TYPE enforcer_events_dropped_total counter"),
            "{ok}"
        );
        let (head, body) = ok.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())));

        let head_only = respond("HEAD /metrics HTTP/1.1\r\n\r\n", &metrics, &health);
        assert!(head_only.ends_with("\r\n\r\n"));
        assert!(respond("GET / HTTP/1.1\r\n\r\n", &metrics, &health).starts_with("HTTP/1.1 404"));
        assert!(
            respond("POST /metrics HTTP/1.1\r\n\r\n", &metrics, &health)
                .starts_with("HTTP/1.1 405")
        );
    }

    #[test]
    fn probes_answer_health_and_readiness() {
        let metrics = Metrics::new(crate::bpf::Bpf::shipped(), None);
        let health = Health::default();
        let get = |path: &str| respond(&format!("GET {path} HTTP/1.1\r\n\r\n"), &metrics, &health);
        assert!(get("/healthz").starts_with("HTTP/1.1 200 OK\r\n"));
        let not_ready = get("/readyz");
        assert!(not_ready.starts_with("HTTP/1.1 503 "), "{not_ready}");
        assert!(not_ready.ends_with(
            "not ready: the ring buffer is not being consumed (no pins: `enforcer reset`?)\n"
        ));
        health.set_consuming(true);
        assert!(get("/readyz?verbose").starts_with("HTTP/1.1 200 OK\r\n"));
    }
}
