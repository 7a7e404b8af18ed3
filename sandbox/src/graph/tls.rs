//! The test PKI: one CA per process (generated once, cached), and a server certificate for
//! `127.0.0.1`, `::1`, `localhost` (plus any extra names) signed by it. The CA certificate
//! is written to a per-process temporary file so clients can be pointed at it.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex, OnceLock},
};

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
    IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// The process-wide test CA.
pub(crate) struct TestCa {
    cert: Certificate,
    key: KeyPair,
    pub pem: String,
    pub path: PathBuf,
    /// Server configs already built, by their sorted extra names.
    leaves: Mutex<Vec<(Vec<String>, Arc<rustls::ServerConfig>)>>,
}

static CA: OnceLock<Result<TestCa, String>> = OnceLock::new();

/// The CA, generated on first use.
pub(crate) fn ca() -> anyhow::Result<&'static TestCa> {
    CA.get_or_init(|| generate_ca().map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|e| anyhow::anyhow!("generating the test CA: {e}"))
}

fn generate_ca() -> anyhow::Result<TestCa> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "graph-emulator test CA");
    dn.push(DnType::OrganizationName, "dcr-operator sandbox");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key)?;
    let pem = cert.pem();
    let path = std::env::temp_dir().join(format!("graph-emulator-ca-{}.pem", std::process::id()));
    std::fs::write(&path, &pem).with_context(|| format!("writing {}", path.display()))?;
    Ok(TestCa {
        cert,
        key,
        pem,
        path,
        leaves: Mutex::new(Vec::new()),
    })
}

impl TestCa {
    /// A rustls server config with a leaf for loopback plus `extra` names (cached).
    pub(crate) fn server_config(&self, extra: &[String]) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        let mut key_names: Vec<String> = extra.to_vec();
        key_names.sort();
        let mut leaves = self.leaves.lock().unwrap();
        if let Some((_, cfg)) = leaves.iter().find(|(n, _)| *n == key_names) {
            return Ok(cfg.clone());
        }
        let mut names = vec![
            "127.0.0.1".to_string(),
            "::1".to_string(),
            "localhost".to_string(),
        ];
        names.extend(key_names.iter().cloned());
        let leaf_key = KeyPair::generate()?;
        let mut params = CertificateParams::new(names)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "graph-emulator");
        params.distinguished_name = dn;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let leaf = params.signed_by(&leaf_key, &self.cert, &self.key)?;
        let chain = vec![
            CertificateDer::from(leaf.der().to_vec()),
            CertificateDer::from(self.cert.der().to_vec()),
        ];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let cfg = Arc::new(cfg);
        leaves.push((key_names, cfg.clone()));
        Ok(cfg)
    }

    /// A loopback leaf signed by the CA as PEM (certificate chain, PKCS#8 key), for servers
    /// outside this process (the OIDC sandbox's node-oidc-provider).
    pub(crate) fn leaf_pem(&self) -> anyhow::Result<(String, String)> {
        let leaf_key = KeyPair::generate()?;
        let names = vec!["127.0.0.1".to_string(), "localhost".to_string()];
        let mut params = CertificateParams::new(names)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "oidc-provider sandbox");
        params.distinguished_name = dn;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let leaf = params.signed_by(&leaf_key, &self.cert, &self.key)?;
        Ok((format!("{}{}", leaf.pem(), self.pem), leaf_key.serialize_pem()))
    }

    /// Also write the CA PEM to `path`.
    pub(crate) fn write_to(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(path, &self.pem).with_context(|| format!("writing the CA to {}", path.display()))
    }
}
