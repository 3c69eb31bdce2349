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

/// Default limit of an AdmissionReview body. OSCs carry inline files, but stay far below this.
pub const DEFAULT_MAX_BODY_BYTES: usize = 4 << 20;

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

/// The router: POST `path` for admission, GET `/healthz` for probes.
pub fn router(state: Arc<HandlerState>, path: &str, max_body_bytes: usize) -> Router {
    Router::new()
        .route(path, post(handler::admit))
        .route("/healthz", get(|| async { "ok" }))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}
