//! Access to each shoot's apiserver, the way Gardener's own extension health checks get it: the
//! kubeconfig in the shoot namespace's secret `gardener-internal` (the in-cluster address of the
//! shoot's kube-apiserver; gardener-resource-manager keeps its token fresh), falling back to
//! `gardener` (the external address) where there is no `gardener-internal`, or only `gardener` when
//! `GARDENER_SHOOT_CLIENT=external`, as in Gardener.
//!
//! The secrets come from one watch selected by name, so a round costs the seed no request and the
//! extension's RBAC can name the secret (`resourceNames`) instead of reading every secret of the
//! seed. Only the rare fallback is a GET, for a shoot without `gardener-internal`. A client lives
//! for one read: no connection is held to a thousand shoots between rounds.

use crate::runtime::watch_cache::WatchCache;
use k8s_openapi::ByteString;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, Resource};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

pub const INTERNAL: &str = "gardener-internal";
pub const EXTERNAL: &str = "gardener";
const KUBECONFIG_KEY: &str = "kubeconfig";
/// A shoot apiserver that does not answer must not hold up the round.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The secret to use, by Gardener's rule (`extensions/pkg/util.NewClientForShoot`).
pub fn secret_name() -> &'static str {
    if std::env::var("GARDENER_SHOOT_CLIENT").as_deref() == Ok("external") {
        EXTERNAL
    } else {
        INTERNAL
    }
}

/// A Secret reduced to its kubeconfig.
#[derive(Resource, Deserialize, Clone, Debug)]
#[resource(inherit = "k8s_openapi::api::core::v1::Secret")]
pub struct ShootAccessSecret {
    pub metadata: ObjectMeta,
    #[serde(default)]
    data: BTreeMap<String, ByteString>,
}

#[derive(Debug, thiserror::Error)]
pub enum ShootAccessError {
    #[error("no secret {0} in the shoot namespace")]
    NoSecret(&'static str),
    #[error("no secret {INTERNAL} or {EXTERNAL} in the shoot namespace")]
    NoSecretOfEither,
    #[error("reading secret {EXTERNAL}: {0}")]
    Read(#[source] kube::Error),
    #[error("secret {0} has no {KUBECONFIG_KEY}")]
    NoKubeconfig(&'static str),
    #[error("the kubeconfig in secret {0}: {1}")]
    Kubeconfig(&'static str, String),
}

/// The watch-fed shoot access secrets; the watch stops when this is dropped.
pub struct ShootAccess {
    secrets: WatchCache<ShootAccessSecret>,
    name: &'static str,
    seed: Client,
}

impl ShootAccess {
    pub fn start(seed: Client) -> Self {
        let name = secret_name();
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        Self {
            secrets: WatchCache::start(Api::all(seed.clone()), config, "shoot access Secret"),
            name,
            seed,
        }
    }

    pub fn is_synced(&self) -> bool {
        self.secrets.is_synced()
    }

    /// A client for the shoot of `namespace`, for one read.
    pub async fn client(&self, namespace: &str) -> Result<Client, ShootAccessError> {
        let (secret, name) = match self.secrets.store().get(&ObjectRef::new(self.name).within(namespace)) {
            Some(s) => (s, self.name),
            None if self.name == INTERNAL => (self.fallback(namespace).await?, EXTERNAL),
            None => return Err(ShootAccessError::NoSecret(self.name)),
        };
        let kubeconfig = secret
            .data
            .get(KUBECONFIG_KEY)
            .ok_or(ShootAccessError::NoKubeconfig(name))?;
        client_from(&kubeconfig.0)
            .await
            .map_err(|e| ShootAccessError::Kubeconfig(name, e))
    }

    /// Gardener's fallback to the external kubeconfig where `gardener-internal` is missing.
    async fn fallback(&self, namespace: &str) -> Result<std::sync::Arc<ShootAccessSecret>, ShootAccessError> {
        Api::<ShootAccessSecret>::namespaced(self.seed.clone(), namespace)
            .get_opt(EXTERNAL)
            .await
            .map_err(ShootAccessError::Read)?
            .map(std::sync::Arc::new)
            .ok_or(ShootAccessError::NoSecretOfEither)
    }
}

async fn client_from(kubeconfig: &[u8]) -> Result<Client, String> {
    let text = std::str::from_utf8(kubeconfig).map_err(|e| e.to_string())?;
    let kc = kube::config::Kubeconfig::from_yaml(text).map_err(|e| e.to_string())?;
    only_plain_credentials(&kc)?;
    let mut config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .map_err(|e| e.to_string())?;
    config.connect_timeout = Some(CONNECT_TIMEOUT);
    config.read_timeout = Some(READ_TIMEOUT);
    Client::try_from(config).map_err(|e| e.to_string())
}

/// Gardener's allow-list for shoot kubeconfigs (`ValidateConfigWithAllowList` with token and
/// client certificate files allowed): no exec plugin, auth provider or impersonation, so a secret
/// in a shoot namespace can never make the extension run a program or act as someone else.
fn only_plain_credentials(kc: &kube::config::Kubeconfig) -> Result<(), String> {
    for user in &kc.auth_infos {
        let Some(auth) = &user.auth_info else { continue };
        let refused = if auth.exec.is_some() {
            Some("exec configurations")
        } else if auth.auth_provider.as_ref().is_some_and(|p| !p.config.is_empty()) {
            Some("auth provider configurations")
        } else if auth.impersonate.is_some()
            || auth.impersonate_uid.is_some()
            || auth.impersonate_groups.as_ref().is_some_and(|g| !g.is_empty())
            || auth.impersonate_user_extra.as_ref().is_some_and(|e| !e.is_empty())
        {
            Some("impersonation")
        } else {
            None
        };
        if let Some(what) = refused {
            return Err(format!("{what} are not supported (user {:?})", user.name));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_kubeconfig_is_kept_and_a_bad_one_is_an_error() {
        let secret: ShootAccessSecret = serde_json::from_value(serde_json::json!({
            "metadata": {"name": INTERNAL, "namespace": "shoot--p--s"},
            "type": "Opaque",
            "data": {"kubeconfig": "bm90IGEga3ViZWNvbmZpZw=="}
        }))
        .unwrap();
        assert_eq!(secret.data[KUBECONFIG_KEY].0, b"not a kubeconfig");
        assert_eq!(ShootAccessSecret::plural(&()), "secrets");
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        assert!(rt.block_on(client_from(b"not a kubeconfig")).is_err());
    }

    fn kubeconfig(user: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: shoot\n\
             clusters: [{{name: shoot, cluster: {{server: 'https://kube-apiserver'}}}}]\n\
             contexts: [{{name: shoot, context: {{cluster: shoot, user: shoot}}}}]\n\
             users: [{{name: shoot, user: {user}}}]\n"
        )
    }

    #[test]
    fn a_kubeconfig_that_would_run_a_program_or_impersonate_is_refused() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = |user: &str| rt.block_on(client_from(kubeconfig(user).as_bytes()));
        for (user, refused) in [
            (
                "{exec: {apiVersion: client.authentication.k8s.io/v1, command: /bin/sh, args: [-c, 'touch /tmp/x']}}",
                "exec",
            ),
            (
                "{auth-provider: {name: oidc, config: {idp-issuer-url: 'https://idp'}}}",
                "auth provider",
            ),
            ("{token: t, as: system:admin}", "impersonation"),
            ("{token: t, as-groups: [system:masters]}", "impersonation"),
        ] {
            let err = client(user).err().unwrap_or_else(|| panic!("{user} accepted"));
            assert!(err.starts_with(refused), "{user}: {err}");
        }
        // what gardenlet and gardener-resource-manager write: a bearer token
        assert!(client("{token: abc}").is_ok());
    }
}
