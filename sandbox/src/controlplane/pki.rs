//! Certificates and keys of a local control plane, generated per start with rcgen
//! (ECDSA P-256; kube-apiserver 1.20 accepts ECDSA for serving and for service-account
//! token signing).

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};

pub(crate) struct Pki {
    /// The CA that signed the apiserver's serving certificate (what kubeconfigs trust).
    pub ca_pem: String,
    pub serving_cert_pem: String,
    pub serving_key_pem: String,
    /// Service-account token signing key (PKCS#8) and its public key (PKIX).
    pub sa_key_pem: String,
    pub sa_pub_pem: String,
    /// The apiserver's client certificate towards kubelets (`system:masters`), signed by
    /// the CA that kubelets trust for x509 client authentication.
    pub kubelet_client_cert_pem: String,
    pub kubelet_client_key_pem: String,
}

/// `extra_sans`: more DNS names or IP addresses for the serving certificate (a node's
/// apiserver is reached on the host's address and as the `kubernetes` Service).
pub(crate) fn generate(extra_sans: &[String]) -> Result<Pki, rcgen::Error> {
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "dcr-operator local control plane CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key)?;

    let serving_key = KeyPair::generate()?;
    let mut sans = vec![
        "127.0.0.1".to_string(),
        "localhost".to_string(),
        "kubernetes".to_string(),
        "kubernetes.default".to_string(),
        "kubernetes.default.svc".to_string(),
    ];
    sans.extend(extra_sans.iter().cloned());
    let mut params = CertificateParams::new(sans)?;
    params
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let serving_cert = params.signed_by(&serving_key, &ca_cert, &ca_key)?;

    let client_key = KeyPair::generate()?;
    let mut client = CertificateParams::new(Vec::<String>::new())?;
    client
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver-kubelet-client");
    client
        .distinguished_name
        .push(DnType::OrganizationName, "system:masters");
    client.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    client.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let client_cert = client.signed_by(&client_key, &ca_cert, &ca_key)?;

    let sa_key = KeyPair::generate()?;
    Ok(Pki {
        kubelet_client_cert_pem: client_cert.pem(),
        kubelet_client_key_pem: client_key.serialize_pem(),
        ca_pem: ca_cert.pem(),
        serving_cert_pem: serving_cert.pem(),
        serving_key_pem: serving_key.serialize_pem(),
        sa_pub_pem: sa_key.public_key_pem(),
        sa_key_pem: sa_key.serialize_pem(),
    })
}
