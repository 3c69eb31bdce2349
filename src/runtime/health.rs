//! `/healthz`, `/readyz` and `/metrics` on their own plain-HTTP listeners.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

type Check = (String, watch::Receiver<bool>);

/// Named readiness checks; `/readyz` is ready when all are true.
#[derive(Clone, Default)]
pub struct Readiness {
    checks: Arc<Mutex<Vec<Check>>>,
}

impl Readiness {
    /// Registers a check and returns the sender that marks it ready.
    pub fn check(&self, name: &str) -> watch::Sender<bool> {
        let (tx, rx) = watch::channel(false);
        self.checks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((name.into(), rx));
        tx
    }

    /// Registers the check `name` of a webhook server, ready once the server sends its bound
    /// address (serving and registered) to the returned sender.
    pub fn serving(&self, name: &str) -> tokio::sync::oneshot::Sender<SocketAddr> {
        let ready = self.check(name);
        let (tx, rx) = tokio::sync::oneshot::channel::<SocketAddr>();
        let name = name.to_string();
        tokio::spawn(async move {
            if let Ok(addr) = rx.await {
                tracing::info!(check = %name, address = %addr, "webhook serving and registered");
                ready.send_replace(true);
            }
        });
        tx
    }

    /// The names of the checks that are not ready yet.
    pub fn failing(&self) -> Vec<String> {
        self.checks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, rx)| !*rx.borrow())
            .map(|(n, _)| n.clone())
            .collect()
    }
}

async fn readyz(State(r): State<Readiness>) -> impl IntoResponse {
    let failing = r.failing();
    if failing.is_empty() {
        (StatusCode::OK, "ok".to_string())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", failing.join(", ")),
        )
    }
}

async fn metrics(State(registry): State<Arc<Registry>>) -> impl IntoResponse {
    crate::runtime::process_metrics::refresh();
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                "content-type",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [("content-type", "text/plain")],
            e.to_string(),
        ),
    }
}

pub fn health_router(readiness: Readiness) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(readiness)
}

pub fn metrics_router(registry: Arc<Registry>) -> Router {
    Router::new().route("/metrics", get(metrics)).with_state(registry)
}

/// Parses Gardener-style addresses (`:8080`, `0.0.0.0:8080`, `127.0.0.1:0`).
pub fn parse_bind_address(s: &str) -> Result<SocketAddr, String> {
    let full = if s.starts_with(':') {
        format!("0.0.0.0{s}")
    } else {
        s.to_string()
    };
    full.parse().map_err(|e| format!("invalid bind address {s:?}: {e}"))
}

/// Binds now (so errors surface at start-up) and serves until `shutdown`.
pub async fn serve(
    name: &'static str,
    addr: SocketAddr,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let handle = tokio::spawn(async move {
        if let Err(e) = serve_on(name, listener, router, shutdown).await {
            tracing::error!(server = name, error = %e, "server failed");
        }
    });
    Ok((local, handle))
}

/// Serves on a bound listener until `shutdown`, then lets open requests finish.
pub async fn serve_on(
    name: &'static str,
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Ok(local) = listener.local_addr() {
        tracing::info!(server = name, address = %local, "serving");
    }
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await
}

/// How long the health and metrics servers may take to finish open requests when stopped.
const SERVER_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Starts the health and metrics servers as duties (`bind`: their addresses, as flags give them),
/// bound now so that a taken address fails the start. Started first, they stop last: probes
/// answer until the end.
pub async fn start_servers(
    duties: &mut super::duties::Duties,
    (health, metrics): (&str, &str),
    readiness: Readiness,
    registry: Arc<Registry>,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let health_addr = parse_bind_address(health).map_err(anyhow::Error::msg)?;
    let metrics_addr = parse_bind_address(metrics).map_err(anyhow::Error::msg)?;
    for (name, addr, router) in [
        ("health server", health_addr, health_router(readiness)),
        ("metrics server", metrics_addr, metrics_router(registry)),
    ] {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the {name} address {addr}"))?;
        duties.start(name, SERVER_GRACE, move |stop| async move {
            serve_on(name, listener, router, stop.wait())
                .await
                .with_context(|| format!("{name} on {addr}"))
        });
    }
    Ok(())
}
