//! A throwaway PKI for one control plane: a CA, the API server's serving certificate, an admin
//! client certificate and the service-account signing key. ECDSA P-256 throughout (fast to
//! generate); validity is rcgen's default (1975 to 4096), so a lagging VM clock never makes a
//! certificate "not yet valid".

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

use crate::Error;

/// Paths of the PKI files, all PEM.
#[derive(Debug, Clone)]
pub struct Pki {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub apiserver_cert: PathBuf,
    pub apiserver_key: PathBuf,
    pub admin_cert: PathBuf,
    pub admin_key: PathBuf,
    pub service_account_key: PathBuf,
    pub service_account_pub: PathBuf,
}

impl Pki {
    /// Generates every key and certificate into `dir`. `apiserver_ips` become IP SANs of the
    /// serving certificate beside 127.0.0.1 and the in-cluster `kubernetes` names.
    pub fn generate(dir: &Path, apiserver_ips: &[&str]) -> Result<Self, Error> {
        fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let pki = Self {
            ca_cert: dir.join("ca.crt"),
            ca_key: dir.join("ca.key"),
            apiserver_cert: dir.join("apiserver.crt"),
            apiserver_key: dir.join("apiserver.key"),
            admin_cert: dir.join("admin.crt"),
            admin_key: dir.join("admin.key"),
            service_account_key: dir.join("sa.key"),
            service_account_pub: dir.join("sa.pub"),
        };

        let ca_key = KeyPair::generate()?;
        let ca_params = ca_params()?;
        let ca_cert = ca_params.self_signed(&ca_key)?;
        write(&pki.ca_cert, &ca_cert.pem())?;
        write(&pki.ca_key, &ca_key.serialize_pem())?;
        let issuer = Issuer::new(ca_params, ca_key);

        let mut sans: Vec<String> = [
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
            "127.0.0.1",
            "10.96.0.1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        sans.extend(apiserver_ips.iter().map(|s| s.to_string()));
        let serving_key = KeyPair::generate()?;
        let mut serving = CertificateParams::new(sans)?;
        serving.distinguished_name = name("kube-apiserver", None);
        serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        serving.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        write(
            &pki.apiserver_cert,
            &serving.signed_by(&serving_key, &issuer)?.pem(),
        )?;
        write(&pki.apiserver_key, &serving_key.serialize_pem())?;

        let (cert, key) = client_cert(&issuer, "netslo-test-admin", Some("system:masters"))?;
        write(&pki.admin_cert, &cert)?;
        write(&pki.admin_key, &key)?;

        let sa_key = KeyPair::generate()?;
        write(&pki.service_account_key, &sa_key.serialize_pem())?;
        write(&pki.service_account_pub, &sa_key.public_key_pem())?;
        Ok(pki)
    }
}

impl Pki {
    /// A client certificate and key (PEM) for `user` in `group`, signed by this CA: how tests
    /// act as a particular user against the API server.
    pub fn client_cert(&self, user: &str, group: Option<&str>) -> Result<(String, String), Error> {
        let pem = fs::read_to_string(&self.ca_key).map_err(|e| Error::io(&self.ca_key, e))?;
        // The issuer is identified by its name and key; both are reproduced exactly.
        let issuer = Issuer::new(ca_params()?, KeyPair::from_pem(&pem)?);
        client_cert(&issuer, user, group)
    }
}

fn ca_params() -> Result<CertificateParams, Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = name("netslo-test-ca", None);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

fn client_cert(
    issuer: &Issuer<'_, KeyPair>,
    user: &str,
    group: Option<&str>,
) -> Result<(String, String), Error> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = name(user, group);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    Ok((params.signed_by(&key, issuer)?.pem(), key.serialize_pem()))
}

fn name(common_name: &str, organization: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    if let Some(org) = organization {
        dn.push(DnType::OrganizationName, org);
    }
    dn
}

fn write(path: &Path, pem: &str) -> Result<(), Error> {
    fs::write(path, pem).map_err(|e| Error::io(path, e))
}
