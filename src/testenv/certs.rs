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
