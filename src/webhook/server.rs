//! The HTTPS server: axum over rustls (ring provider), TLS 1.2 and 1.3 only, bounded bodies, and a
//! certificate that can be swapped while serving.

use super::handler::{self, HandlerState};
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum_server::tls_rustls::RustlsConfig;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::{Arc, Once};

/// The largest object kube-apiserver and gardener-apiserver store: the generic apiserver's request
/// body limit (`MaxRequestBodyBytes`, 3 MiB), which neither overrides.
pub const APISERVER_MAX_OBJECT_BYTES: usize = 3 << 20;
/// Limit of an AdmissionReview body: an UPDATE carries the object and the old one, both at most
/// [`APISERVER_MAX_OBJECT_BYTES`], plus the review's own fields (user info, options).
pub const DEFAULT_MAX_BODY_BYTES: usize = 2 * APISERVER_MAX_OBJECT_BYTES + (1 << 20);
/// Request bodies buffered by all requests together at most (the granule of the budget is
/// [`BUDGET_GRANULE`]): two of the largest reviews at once, or hundreds of ordinary ones. A
/// request waits for its share (within its deadline) instead of growing the process.
pub const BODY_BUDGET_BYTES: usize = 2 * DEFAULT_MAX_BODY_BYTES;
const BUDGET_GRANULE: usize = 64 << 10;

/// Requests handled at once (reading the body, deciding, answering); more wait for a turn within
/// their deadline. Each costs a few times its body while decoded and answered, so a crowd of
/// concurrent connections cannot multiply that; at about a millisecond per ordinary review this is
/// far above what an apiserver sends.
pub const MAX_IN_FLIGHT: usize = 32;

/// Bodies from this size on are decoded off the async workers, and their memory is handed back to
/// the operating system afterwards.
pub const LARGE_BODY: usize = 256 << 10;

/// Decoding large objects is CPU work: at most this many at once, on blocking threads, so that
/// probes and small requests keep being answered meanwhile.
static HEAVY_WORK: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// Runs `decode(body)`: in place for small bodies; for large ones on a blocking thread (at most
/// two at once), handing the freed memory back afterwards. `None`: the decoding thread failed.
pub async fn decode_body<T: Send + 'static>(
    body: axum::body::Bytes,
    decode: impl FnOnce(&[u8]) -> T + Send + 'static,
) -> Option<T> {
    if body.len() < LARGE_BODY {
        return Some(decode(&body));
    }
    let decoded = {
        let _slot = HEAVY_WORK.acquire().await;
        tokio::task::spawn_blocking(move || decode(&body)).await.ok()
    };
    release_memory().await;
    decoded
}

/// glibc keeps freed memory in its arenas; a burst of large reviews would otherwise stay resident.
pub async fn release_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let _ = tokio::task::spawn_blocking(|| {
            // SAFETY: malloc_trim only returns free heap pages to the kernel
            unsafe { libc::malloc_trim(0) };
        })
        .await;
    }
}

/// What every route of a webhook server gets, so a new endpoint cannot miss one: the body limit,
/// the shared body budget, a bound on requests handled at once, and the request deadline
/// (outermost, so waiting for a turn or for the budget counts).
pub fn protected(router: Router, max_body_bytes: usize, limits: &super::limits::ConnectionLimits) -> Router {
    let budget = Arc::new(tokio::sync::Semaphore::new(
        BODY_BUDGET_BYTES.max(max_body_bytes).div_ceil(BUDGET_GRANULE),
    ));
    let turns = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    router
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(
            (budget, max_body_bytes),
            body_budget,
        ))
        .layer(axum::middleware::from_fn_with_state(turns, one_of_the_in_flight))
        .layer(axum::middleware::from_fn_with_state(
            limits.request_deadline,
            super::limits::within_deadline,
        ))
}

/// Waits for one of the [`MAX_IN_FLIGHT`] turns and holds it until the response is ready.
async fn one_of_the_in_flight(
    axum::extract::State(turns): axum::extract::State<Arc<tokio::sync::Semaphore>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let Ok(_turn) = turns.acquire().await else {
        return axum::response::IntoResponse::into_response(axum::http::StatusCode::SERVICE_UNAVAILABLE);
    };
    next.run(request).await
}

/// Holds a share of the body budget, by the announced length (the limit when none is announced),
/// until the response is ready.
async fn body_budget(
    axum::extract::State((budget, max_body_bytes)): axum::extract::State<(Arc<tokio::sync::Semaphore>, usize)>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let announced = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(max_body_bytes);
    if announced > max_body_bytes {
        return (
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body of {announced} bytes exceeds the limit of {max_body_bytes} bytes"),
        )
            .into_response();
    }
    let granules = u32::try_from(announced.max(1).div_ceil(BUDGET_GRANULE)).unwrap_or(u32::MAX);
    let Ok(_share) = budget.acquire_many(granules).await else {
        return axum::http::StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    next.run(request).await
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("invalid serving certificate PEM: {0}")]
    Cert(String),
    #[error("invalid serving key PEM: {0}")]
    Key(String),
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// Installs ring as rustls' process-wide default provider (idempotent; keeps another one if the
/// process already installed it).
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A rustls server configuration for a PEM certificate chain and key: TLS 1.3 and 1.2, ALPN h2 and
/// http/1.1.
pub fn tls_config(cert_pem: &str, key_pem: &str) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Cert(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::Cert("no certificate found".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| TlsError::Key(e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The initial [`RustlsConfig`]; later certificates are swapped in with [`reload`].
pub fn rustls_config(cert_pem: &str, key_pem: &str) -> Result<RustlsConfig, TlsError> {
    Ok(RustlsConfig::from_config(tls_config(cert_pem, key_pem)?))
}

/// Swaps the served certificate; connections opened afterwards use it.
pub fn reload(config: &RustlsConfig, cert_pem: &str, key_pem: &str) -> Result<(), TlsError> {
    config.reload_from_config(tls_config(cert_pem, key_pem)?);
    Ok(())
}

/// The router: POST `path` for admission, GET `/healthz` for probes (without the protections of
/// [`protected`], which the server adds).
pub fn router(state: Arc<HandlerState>, path: &str) -> Router {
    Router::new()
        .route(path, post(handler::admit))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(state)
}
