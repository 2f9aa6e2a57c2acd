//! The channel's serving certificate: a CA and a leaf generated in memory at start (ECDSA
//! P-256, rcgen with ring). Only the CA certificate leaves the process, published in a
//! ConfigMap that agents mount; no Secret is read or written. A restarted operator has a new
//! CA: agents re-read the mounted file on every new connection and keep their results buffered
//! until it verifies.

use std::sync::Arc;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::ChannelError;

/// Key of the CA certificate in the published ConfigMap.
pub const CA_CONFIGMAP_KEY: &str = "ca.crt";

/// A serving certificate and the CA that signed it.
pub struct ServingCert {
    ca_pem: String,
    cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
}

impl std::fmt::Debug for ServingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServingCert").finish_non_exhaustive()
    }
}

fn name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn.push(DnType::OrganizationName, "netslo");
    dn
}

impl ServingCert {
    /// A new CA and a leaf for `names` (DNS names, or IP addresses written as text), e.g. the
    /// operator Service's `netslo-operator.netslo-system.svc`.
    pub fn generate(names: &[String]) -> Result<Self, ChannelError> {
        if names.is_empty() {
            return Err(ChannelError::Tls(
                "the serving certificate needs at least one name".into(),
            ));
        }
        let ca_key = KeyPair::generate()?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.distinguished_name = name("netslo-channel-ca");
        ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca, ca_key);

        let key = KeyPair::generate()?;
        let mut leaf = CertificateParams::new(names.to_vec())?;
        leaf.distinguished_name = name("netslo-channel");
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = leaf.signed_by(&key, &issuer)?;
        Ok(ServingCert {
            ca_pem: ca_cert.pem(),
            cert: cert.der().clone(),
            key: PrivatePkcs8KeyDer::from(key.serialize_der()),
        })
    }

    /// The CA certificate (PEM) agents must trust.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The rustls server configuration (ring, TLS 1.2/1.3, ALPN http/1.1).
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, ChannelError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ChannelError::Tls(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(
                vec![self.cert.clone()],
                PrivateKeyDer::Pkcs8(self.key.clone_key()),
            )
            .map_err(|e| ChannelError::Tls(e.to_string()))?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }
}

/// Publishes the CA certificate as ConfigMap `namespace/name`, key [`CA_CONFIGMAP_KEY`]
/// (server-side apply; RBAC: `patch` on that ConfigMap, `create` the first time).
pub async fn publish_ca(
    client: kube::Client,
    namespace: &str,
    name: &str,
    ca_pem: &str,
) -> Result<(), ChannelError> {
    let cm = serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/name": "netslo", "app.kubernetes.io/component": "channel"},
        },
        "data": {CA_CONFIGMAP_KEY: ca_pem},
    });
    let pp = PatchParams::apply(netslo_crds::OPERATOR_FIELD_MANAGER).force();
    Api::<ConfigMap>::namespaced(client, namespace)
        .patch(name, &pp, &Patch::Apply(&cm))
        .await
        .map_err(ChannelError::Publish)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_a_usable_config_and_a_pem_ca() {
        let c = ServingCert::generate(&["localhost".into(), "127.0.0.1".into()]).unwrap();
        assert!(c.ca_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        c.server_config().unwrap();
        assert!(!format!("{c:?}").contains("BEGIN"));
        assert!(ServingCert::generate(&[]).is_err());
    }
}
