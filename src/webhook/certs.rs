//! Webhook certificates the Gardener way: a self-signed CA and a serving certificate, kept in one
//! Secret in the extension's namespace so that all replicas serve certificates of the same CA.
//!
//! Rotation (checked every [`CertOptions::check_interval`]):
//! - the CA is replaced when less than [`CertOptions::renew_fraction`] of its validity is left; the
//!   previous CA stays in the CA bundle (`caBundle` = new CA + old CA) until it expires;
//! - the serving certificate is renewed when less than `renew_fraction` of its validity is left, and
//!   re-issued by the new CA only [`CertOptions::ca_switch_grace`] after a CA rotation, so that the
//!   apiserver already trusts the new CA (from the updated webhook configuration) when the server
//!   starts presenting it;
//! - concurrent replicas are serialised by the Secret's resourceVersion (on a conflict the Secret
//!   is read again and the decision recomputed); a creation race (409) re-reads the winner's Secret.

use crate::certs::{CertError, CertificateAuthority};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

const KEY_CA_CERT: &str = "ca.crt";
const KEY_CA_KEY: &str = "ca.key";
const KEY_OLD_CA_CERT: &str = "old-ca.crt";
const KEY_CA_ROTATED_AT: &str = "ca-rotated-at";
const KEY_TLS_CERT: &str = "tls.crt";
const KEY_TLS_KEY: &str = "tls.key";
const KEY_TLS_ISSUER: &str = "tls-issuer-sha256";
const KEY_TLS_IDENTITY: &str = "tls-identity-sha256";

/// Validity and rotation settings.
#[derive(Clone, Debug, PartialEq)]
pub struct CertOptions {
    /// Name of the Secret in the extension's namespace.
    pub secret_name: String,
    /// Validity of a new CA (Gardener: 30 days).
    pub ca_validity: Duration,
    /// Validity of a serving certificate (capped at the CA's expiry).
    pub server_validity: Duration,
    /// Renew when less than this fraction of the validity is left (0.2 = 20%).
    pub renew_fraction: f64,
    /// How often the Secret is checked (and the certificate reloaded).
    pub check_interval: Duration,
    /// Wait this long after a CA rotation before serving a certificate of the new CA.
    pub ca_switch_grace: Duration,
}

pub const DEFAULT_SECRET_NAME: &str = "gardener-extension-runtime-kata-webhook-certs";

impl Default for CertOptions {
    fn default() -> Self {
        Self {
            secret_name: DEFAULT_SECRET_NAME.into(),
            ca_validity: Duration::from_secs(30 * 24 * 3600),
            server_validity: Duration::from_secs(7 * 24 * 3600),
            renew_fraction: 0.2,
            check_interval: Duration::from_secs(5 * 60),
            ca_switch_grace: Duration::from_secs(2 * 60),
        }
    }
}

/// Whom the serving certificate is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub common_name: String,
    pub dns_names: Vec<String>,
    pub ips: Vec<IpAddr>,
}

/// What the server needs: its certificate and the CA bundle for the webhook configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertBundle {
    pub cert_pem: String,
    pub key_pem: String,
    /// Current CA, followed by the previous one during a rotation.
    pub ca_bundle_pem: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CertStoreError {
    #[error("webhook certificates: {0}")]
    Cert(#[from] CertError),
    #[error("webhook certificates: Secret {namespace}/{name}: {source}")]
    Kube {
        namespace: String,
        name: String,
        source: kube::Error,
    },
    #[error("webhook certificates: Secret {namespace}/{name} kept changing; giving up for now")]
    Contended { namespace: String, name: String },
}

/// The certificate material as stored in the Secret.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Material {
    pub ca_cert: String,
    pub ca_key: String,
    pub old_ca_cert: Option<String>,
    pub ca_rotated_at: Option<i64>,
    pub tls_cert: String,
    pub tls_key: String,
    pub tls_issuer: String,
    /// Hash of the [`Identity`] the leaf was issued for: a changed Service, namespace or URL
    /// gets a new certificate at once.
    pub tls_identity: String,
}

fn identity_hash(id: &Identity) -> String {
    let mut names = id.dns_names.clone();
    names.sort();
    let mut ips: Vec<String> = id.ips.iter().map(ToString::to_string).collect();
    ips.sort();
    fingerprint(&format!("{}|{}|{}", id.common_name, names.join(","), ips.join(",")))
}

fn fingerprint(pem: &str) -> String {
    hex::encode(Sha256::digest(pem.as_bytes()))
}

fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn not_after(pem: &str) -> Option<i64> {
    crate::certs::not_after_unix(pem).ok()
}

impl Material {
    fn from_secret(secret: &Secret) -> Option<Self> {
        let data = secret.data.as_ref()?;
        let get = |k: &str| data.get(k).and_then(|v| String::from_utf8(v.0.clone()).ok());
        Some(Self {
            ca_cert: get(KEY_CA_CERT)?,
            ca_key: get(KEY_CA_KEY)?,
            old_ca_cert: get(KEY_OLD_CA_CERT).filter(|s| !s.is_empty()),
            ca_rotated_at: get(KEY_CA_ROTATED_AT).and_then(|s| s.parse().ok()),
            tls_cert: get(KEY_TLS_CERT).unwrap_or_default(),
            tls_key: get(KEY_TLS_KEY).unwrap_or_default(),
            tls_issuer: get(KEY_TLS_ISSUER).unwrap_or_default(),
            tls_identity: get(KEY_TLS_IDENTITY).unwrap_or_default(),
        })
    }

    fn to_data(&self) -> BTreeMap<String, ByteString> {
        let mut data = BTreeMap::new();
        let mut put = |k: &str, v: &str| {
            data.insert(k.to_string(), ByteString(v.as_bytes().to_vec()));
        };
        put(KEY_CA_CERT, &self.ca_cert);
        put(KEY_CA_KEY, &self.ca_key);
        if let Some(old) = &self.old_ca_cert {
            put(KEY_OLD_CA_CERT, old);
        }
        if let Some(at) = self.ca_rotated_at {
            put(KEY_CA_ROTATED_AT, &at.to_string());
        }
        put(KEY_TLS_CERT, &self.tls_cert);
        put(KEY_TLS_KEY, &self.tls_key);
        put(KEY_TLS_ISSUER, &self.tls_issuer);
        put(KEY_TLS_IDENTITY, &self.tls_identity);
        data
    }

    pub fn bundle(&self) -> CertBundle {
        let mut ca_bundle_pem = self.ca_cert.clone();
        if let Some(old) = &self.old_ca_cert {
            if !ca_bundle_pem.ends_with('\n') {
                ca_bundle_pem.push('\n');
            }
            ca_bundle_pem.push_str(old);
        }
        CertBundle {
            cert_pem: self.tls_cert.clone(),
            key_pem: self.tls_key.clone(),
            ca_bundle_pem,
        }
    }

    fn fresh(opts: &CertOptions, id: &Identity) -> Result<Self, CertError> {
        let ca = CertificateAuthority::generate(&format!("{}-ca", id.common_name), opts.ca_validity)?;
        let mut m = Self {
            ca_cert: ca.cert_pem,
            ca_key: ca.key_pem,
            ..Default::default()
        };
        m.issue(opts, id)?;
        Ok(m)
    }

    fn issue(&mut self, opts: &CertOptions, id: &Identity) -> Result<(), CertError> {
        let ca = CertificateAuthority {
            cert_pem: self.ca_cert.clone(),
            key_pem: self.ca_key.clone(),
        };
        // never outlive the issuing CA
        let ca_left = not_after(&self.ca_cert).map_or(0, |t| (t - now_unix()).max(1)) as u64;
        let validity = opts.server_validity.min(Duration::from_secs(ca_left));
        let leaf = ca.issue_serving(&id.common_name, &id.dns_names, &id.ips, validity)?;
        self.tls_cert = leaf.cert_pem;
        self.tls_key = leaf.key_pem;
        self.tls_issuer = fingerprint(&self.ca_cert);
        self.tls_identity = identity_hash(id);
        Ok(())
    }

    /// Brings the material up to date at `now`. Returns whether anything changed.
    pub fn refresh(&mut self, opts: &CertOptions, id: &Identity, now: i64) -> Result<bool, CertError> {
        let threshold = |validity: Duration| (validity.as_secs_f64() * opts.renew_fraction) as i64;
        let mut changed = false;
        // drop an expired previous CA
        if let Some(old) = &self.old_ca_cert
            && not_after(old).is_none_or(|t| t <= now)
        {
            self.old_ca_cert = None;
            changed = true;
        }
        let ca_expires = not_after(&self.ca_cert).unwrap_or(0);
        if ca_expires - now < threshold(opts.ca_validity) {
            let ca = CertificateAuthority::generate(&format!("{}-ca", id.common_name), opts.ca_validity)?;
            let old = std::mem::replace(&mut self.ca_cert, ca.cert_pem);
            self.ca_key = ca.key_pem;
            self.old_ca_cert = (ca_expires > now).then_some(old);
            self.ca_rotated_at = Some(now);
            changed = true;
            if self.old_ca_cert.is_none() {
                // nothing trusted the old CA any more: switch at once
                self.issue(opts, id)?;
                return Ok(true);
            }
        }
        let current_ca = fingerprint(&self.ca_cert);
        let leaf_expires = not_after(&self.tls_cert);
        let key_ok = !self.tls_key.is_empty();
        let leaf_due = match leaf_expires {
            None => true,
            Some(t) => t - now < threshold(opts.server_validity).min(threshold(opts.ca_validity)) || !key_ok,
        };
        let grace_over = self
            .ca_rotated_at
            .is_none_or(|at| now - at >= opts.ca_switch_grace.as_secs() as i64);
        let old_issuer = self.tls_issuer != current_ca;
        // An expired, missing or mis-addressed leaf is replaced at once; an old issuer only after the grace.
        let leaf_unusable = leaf_expires.is_none_or(|t| t <= now) || self.tls_identity != identity_hash(id);
        // a leaf of the previous CA is replaced after the grace; one of the current CA when due
        let reissue = leaf_unusable || if old_issuer { grace_over } else { leaf_due };
        if reissue {
            self.issue(opts, id)?;
            changed = true;
        }
        // (a due leaf of the old CA waits for the grace: the old CA is still trusted meanwhile)
        Ok(changed)
    }
}

/// Reads, creates and rotates the certificate Secret.
pub struct CertStore {
    api: Api<Secret>,
    namespace: String,
    opts: CertOptions,
    identity: Identity,
}

impl CertStore {
    pub fn new(client: kube::Client, namespace: &str, opts: CertOptions, identity: Identity) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_string(),
            opts,
            identity,
        }
    }

    pub fn options(&self) -> &CertOptions {
        &self.opts
    }

    /// The certificate Secret's API, for watching it.
    pub fn secret_api(&self) -> Api<Secret> {
        self.api.clone()
    }

    fn kube_err(&self, source: kube::Error) -> CertStoreError {
        CertStoreError::Kube {
            namespace: self.namespace.clone(),
            name: self.opts.secret_name.clone(),
            source,
        }
    }

    /// Ensures a valid, up-to-date certificate in the Secret and returns it.
    pub async fn ensure(&self) -> Result<CertBundle, CertStoreError> {
        for _ in 0..5 {
            let existing = self
                .api
                .get_opt(&self.opts.secret_name)
                .await
                .map_err(|e| self.kube_err(e))?;
            match existing {
                None => {
                    let material = Material::fresh(&self.opts, &self.identity)?;
                    let secret = Secret {
                        metadata: ObjectMeta {
                            name: Some(self.opts.secret_name.clone()),
                            namespace: Some(self.namespace.clone()),
                            labels: Some(
                                [(
                                    "app.kubernetes.io/managed-by".to_string(),
                                    "gardener-extension-runtime-kata".to_string(),
                                )]
                                .into(),
                            ),
                            ..Default::default()
                        },
                        data: Some(material.to_data()),
                        type_: Some("Opaque".into()),
                        ..Default::default()
                    };
                    match self.api.create(&PostParams::default(), &secret).await {
                        Ok(_) => {
                            tracing::info!(secret = %self.opts.secret_name, "created the webhook CA and serving certificate");
                            return Ok(material.bundle());
                        }
                        // another replica won the race: use its certificates
                        Err(kube::Error::Api(s)) if s.code == 409 => continue,
                        Err(e) => return Err(self.kube_err(e)),
                    }
                }
                Some(mut secret) => {
                    let mut material = Material::from_secret(&secret).unwrap_or_default();
                    let changed = if material.ca_cert.is_empty() || material.ca_key.is_empty() {
                        material = Material::fresh(&self.opts, &self.identity)?;
                        true
                    } else {
                        material.refresh(&self.opts, &self.identity, now_unix())?
                    };
                    if !changed {
                        return Ok(material.bundle());
                    }
                    secret.data = Some(material.to_data());
                    // resourceVersion from the read: a concurrent writer makes this a 409
                    match self
                        .api
                        .replace(&self.opts.secret_name, &PostParams::default(), &secret)
                        .await
                    {
                        Ok(_) => {
                            tracing::info!(secret = %self.opts.secret_name, "rotated webhook certificates");
                            return Ok(material.bundle());
                        }
                        Err(kube::Error::Api(s)) if s.code == 409 => continue,
                        Err(e) => return Err(self.kube_err(e)),
                    }
                }
            }
        }
        Err(CertStoreError::Contended {
            namespace: self.namespace.clone(),
            name: self.opts.secret_name.clone(),
        })
    }

    /// Forces a CA rotation now (operator action, tests). The serving certificate follows after the
    /// grace period, like in a scheduled rotation.
    pub async fn rotate_ca(&self) -> Result<CertBundle, CertStoreError> {
        for _ in 0..5 {
            let secret = self
                .api
                .get(&self.opts.secret_name)
                .await
                .map_err(|e| self.kube_err(e))?;
            let mut material = Material::from_secret(&secret).unwrap_or_default();
            let forced = CertOptions {
                renew_fraction: 2.0,
                ..self.opts.clone()
            };
            // renew_fraction > 1 makes the CA due; the leaf follows the normal rules
            let now = now_unix();
            let ca_before = material.ca_cert.clone();
            material.refresh(&forced, &self.identity, now)?;
            if material.ca_cert == ca_before {
                continue;
            }
            // with a forced threshold the leaf may also have been re-issued; keep the normal rule
            let mut secret = secret;
            secret.data = Some(material.to_data());
            match self
                .api
                .replace(&self.opts.secret_name, &PostParams::default(), &secret)
                .await
            {
                Ok(_) => return Ok(material.bundle()),
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                Err(e) => return Err(self.kube_err(e)),
            }
        }
        Err(CertStoreError::Contended {
            namespace: self.namespace.clone(),
            name: self.opts.secret_name.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> Identity {
        Identity {
            common_name: "gardener-extension-runtime-kata".into(),
            dns_names: vec!["gardener-extension-runtime-kata.ns.svc".into()],
            ips: vec!["127.0.0.1".parse().unwrap()],
        }
    }

    fn opts(ca: u64, leaf: u64, grace: u64) -> CertOptions {
        CertOptions {
            ca_validity: Duration::from_secs(ca),
            server_validity: Duration::from_secs(leaf),
            ca_switch_grace: Duration::from_secs(grace),
            ..Default::default()
        }
    }

    #[test]
    fn fresh_material_is_stable() {
        let o = opts(3600, 600, 60);
        let mut m = Material::fresh(&o, &id()).unwrap();
        let before = m.clone();
        assert!(!m.refresh(&o, &id(), now_unix()).unwrap());
        assert_eq!(m, before);
        assert_eq!(m.bundle().ca_bundle_pem, m.ca_cert);
    }

    #[test]
    fn leaf_is_renewed_when_little_lifetime_is_left() {
        let o = opts(3600, 600, 60);
        let mut m = Material::fresh(&o, &id()).unwrap();
        let leaf = m.tls_cert.clone();
        // 500 s later: 100 s of 600 left < 20%
        assert!(m.refresh(&o, &id(), now_unix() + 500).unwrap());
        assert_ne!(m.tls_cert, leaf);
        assert!(m.old_ca_cert.is_none());
    }

    #[test]
    fn ca_rotation_keeps_the_old_ca_and_switches_the_leaf_after_the_grace() {
        // the first CA has 100 s left, less than 20% of the configured 1000 s
        let mut m = Material::fresh(&opts(100, 100, 60), &id()).unwrap();
        let o = opts(1000, 1000, 60);
        let (ca, leaf) = (m.ca_cert.clone(), m.tls_cert.clone());
        let t = now_unix();
        assert!(m.refresh(&o, &id(), t).unwrap());
        assert_ne!(m.ca_cert, ca);
        assert_eq!(m.old_ca_cert.as_deref(), Some(ca.as_str()));
        assert!(m.bundle().ca_bundle_pem.contains(ca.trim()));
        assert!(m.bundle().ca_bundle_pem.contains(m.ca_cert.trim()));
        // within the grace the old leaf is still served (it is due but its CA is still trusted)
        assert_eq!(m.tls_cert, leaf);
        assert!(!m.refresh(&o, &id(), t + 30).unwrap());
        assert_eq!(m.tls_cert, leaf);
        // after the grace the leaf comes from the new CA
        assert!(m.refresh(&o, &id(), t + 61).unwrap());
        assert_ne!(m.tls_cert, leaf);
        assert_eq!(m.tls_issuer, fingerprint(&m.ca_cert));
    }

    #[test]
    fn an_expired_old_ca_leaves_the_bundle() {
        let o = opts(3600, 600, 60);
        let mut m = Material::fresh(&o, &id()).unwrap();
        let expired = CertificateAuthority::generate("old", Duration::from_secs(0)).unwrap();
        m.old_ca_cert = Some(expired.cert_pem);
        assert!(m.refresh(&o, &id(), now_unix() + 2).unwrap());
        assert!(m.old_ca_cert.is_none());
        assert_eq!(m.bundle().ca_bundle_pem, m.ca_cert);
    }

    #[test]
    fn a_new_identity_gets_a_new_leaf_at_once() {
        let o = opts(3600, 600, 60);
        let mut m = Material::fresh(&o, &id()).unwrap();
        let leaf = m.tls_cert.clone();
        let mut other = id();
        other.ips = vec!["10.0.0.1".parse().unwrap()];
        assert!(m.refresh(&o, &other, now_unix()).unwrap());
        assert_ne!(m.tls_cert, leaf);
        assert!(!m.refresh(&o, &other, now_unix()).unwrap());
    }
}
