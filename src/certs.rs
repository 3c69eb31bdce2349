//! Self-signed certificate authorities and serving certificates (ECDSA P-256), for the webhook
//! server and the test control plane.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType,
};
use std::net::IpAddr;
use std::time::Duration;
use time::OffsetDateTime;

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("invalid certificate material: {0}")]
    Invalid(String),
}

/// A CA in PEM, able to issue serving certificates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateAuthority {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A leaf certificate and its key, in PEM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServingCert {
    pub cert_pem: String,
    pub key_pem: String,
}

fn validity(params: &mut CertificateParams, valid_for: Duration) {
    let now = OffsetDateTime::now_utc();
    // a little slack against clock skew between replicas and the apiserver
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + time::Duration::seconds(valid_for.as_secs() as i64);
}

impl CertificateAuthority {
    pub fn generate(common_name: &str, valid_for: Duration) -> Result<Self, CertError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        validity(&mut params, valid_for);
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Issues a serving certificate for the DNS names and IP addresses given.
    pub fn issue_serving(
        &self,
        common_name: &str,
        dns_names: &[String],
        ips: &[IpAddr],
        valid_for: Duration,
    ) -> Result<ServingCert, CertError> {
        let ca_key = KeyPair::from_pem(&self.key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, ca_key)?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(dns_names.to_vec())?;
        params
            .subject_alt_names
            .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        validity(&mut params, valid_for);
        let cert = params.signed_by(&key, &issuer)?;
        Ok(ServingCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// The `notAfter` of the first certificate in a PEM bundle, as seconds since the epoch.
pub fn not_after_unix(pem: &str) -> Result<i64, CertError> {
    let invalid = |e: &dyn std::fmt::Display| CertError::Invalid(e.to_string());
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|e| invalid(&e))?;
    let cert = block.parse_x509().map_err(|e| invalid(&e))?;
    Ok(cert.validity().not_after.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issues_a_serving_cert_with_ip_and_dns_sans() {
        let ca = CertificateAuthority::generate("test-ca", Duration::from_secs(3600)).unwrap();
        let leaf = ca
            .issue_serving(
                "svc",
                &["svc.ns.svc".into()],
                &["127.0.0.1".parse().unwrap()],
                Duration::from_secs(600),
            )
            .unwrap();
        assert!(leaf.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let exp = not_after_unix(&leaf.cert_pem).unwrap();
        assert!((exp - now - 600).abs() < 5, "expiry {exp} vs now {now}");
        assert!(not_after_unix("garbage").is_err());
    }
}
