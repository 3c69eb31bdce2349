//! Certificates and tokens of the test control plane.

use crate::certs::{CertError, CertificateAuthority};
use rand::Rng;
use std::time::Duration;

pub struct ControlPlanePki {
    pub ca_pem: String,
    pub serving_cert_pem: String,
    pub serving_key_pem: String,
    /// Signs ServiceAccount tokens.
    pub sa_key_pem: String,
    /// Verifies them.
    pub sa_pub_pem: String,
}

const DAY: Duration = Duration::from_secs(24 * 3600);

impl ControlPlanePki {
    pub fn generate() -> Result<Self, CertError> {
        let ca = CertificateAuthority::generate("kata-testenv-ca", DAY)?;
        let serving = ca.issue_serving(
            "kube-apiserver",
            &["localhost".into(), "kubernetes.default.svc".into()],
            &["127.0.0.1".parse().expect("ip")],
            DAY,
        )?;
        let sa_key = rcgen::KeyPair::generate()?;
        Ok(Self {
            sa_pub_pem: sa_key.public_key_pem(),
            ca_pem: ca.cert_pem,
            serving_cert_pem: serving.cert_pem,
            serving_key_pem: serving.key_pem,
            sa_key_pem: sa_key.serialize_pem(),
        })
    }
}

pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill(&mut buf[..]);
    hex::encode(buf)
}

/// The common name of the aggregator's client certificate (`--requestheader-allowed-names`).
pub const FRONT_PROXY_CN: &str = "front-proxy-client";

/// The kube-apiserver's identity towards aggregated API servers: a CA that they trust for
/// request headers (published in the `extension-apiserver-authentication` ConfigMap) and the
/// client certificate it presents when proxying.
pub struct FrontProxyPki {
    pub ca_pem: String,
    pub client_cert_pem: String,
    pub client_key_pem: String,
}

impl FrontProxyPki {
    pub fn generate() -> Result<Self, CertError> {
        use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair, KeyUsagePurpose};
        let ca = CertificateAuthority::generate("kata-testenv-front-proxy-ca", DAY)?;
        let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, KeyPair::from_pem(&ca.key_pem)?)?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, FRONT_PROXY_CN);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::minutes(5);
        params.not_after = now + time::Duration::days(1);
        let cert = params.signed_by(&key, &issuer)?;
        Ok(Self {
            ca_pem: ca.cert_pem,
            client_cert_pem: cert.pem(),
            client_key_pem: key.serialize_pem(),
        })
    }
}
