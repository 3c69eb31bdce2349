//! The probes' HTTPS client: one HTTP/1.1 request per fresh TLS connection to 127.0.0.1.

use rustls::pki_types::ServerName;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub struct Tls {
    pub connector: tokio_rustls::TlsConnector,
    pub port: u16,
}

impl Tls {
    /// A client trusting the PEM CA bundle `ca`.
    pub fn new(ca: &str, port: u16) -> Self {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
            roots.add(c.expect("a PEM certificate")).expect("a CA certificate");
        }
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Self {
            connector: tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)),
            port,
        }
    }

    pub async fn connect(&self) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await?;
        let name = ServerName::IpAddress(std::net::IpAddr::from([127, 0, 0, 1]).into());
        self.connector.connect(name, tcp).await
    }

    /// One HTTP/1.1 request on a fresh connection: (status, body). The answer is read while the
    /// body is still being written: a server refuses an oversized body before reading it.
    pub async fn request(&self, method: &str, path: &str, body: &[u8]) -> Option<(u16, Vec<u8>)> {
        let s = self.connect().await.ok()?;
        let (mut r, mut w) = tokio::io::split(s);
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let write = async {
            // a refused body ends in a closed connection: the answer is what counts. The flush
            // matters: TLS keeps what the socket did not take yet, and without it the last
            // records of a body wait there while the server waits for them (a 408 after 10 s)
            let _ = w.write_all(head.as_bytes()).await;
            let _ = w.write_all(body).await;
            let _ = w.flush().await;
        };
        let mut out = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(60), r.read_to_end(&mut out));
        let (_, _) = tokio::join!(write, read);
        let text = String::from_utf8_lossy(&out);
        let code = text.split_whitespace().nth(1)?.parse().ok()?;
        let body = out
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|p| out[p + 4..].to_vec())
            .unwrap_or_default();
        Some((code, body))
    }
}

/// The CA of a server's certificate Secret, once the server wrote it.
pub async fn wait_for_ca(client: &kube::Client, namespace: &str, secret: &str) -> String {
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> = kube::Api::namespaced(client.clone(), namespace);
    loop {
        if let Ok(Some(s)) = secrets.get_opt(secret).await
            && let Some(ca) = s.data.and_then(|d| d.get("ca.crt").cloned())
        {
            return String::from_utf8(ca.0).expect("a PEM CA");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
