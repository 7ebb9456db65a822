//! Certificates for a Basalt cluster (rcgen): a cluster CA, node certificates (server and client
//! use: nodes dial each other) and client certificates, as PEM. `basalt certs` and the tests use
//! these; any other CA works as well, as long as every node and client certificate chains to the
//! `ca.pem` the nodes are given.
//!
//! Files in a certificate directory: `ca.pem`, `ca.key`, and `<name>.pem`, `<name>.key` per node
//! or client. Keys are written with mode 0600. Validity is rcgen's default (long-lived): rotate
//! by issuing new certificates from the same CA.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::TransportError;

/// Organizational unit of node certificates.
pub const NODE_UNIT: &str = "basalt-node";
/// Organizational unit of client certificates.
pub const CLIENT_UNIT: &str = "basalt-client";

/// A cluster CA: its certificate and the key that signs node and client certificates.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    key_pem: String,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .finish_non_exhaustive()
    }
}

/// A certificate issued by the CA, with its private key, as PEM.
#[derive(Clone, Debug)]
pub struct IssuedCert {
    /// The name it was issued for (its common name, and its file stem).
    pub name: String,
    /// The certificate.
    pub cert_pem: String,
    /// The private key (PKCS#8).
    pub key_pem: String,
}

impl CertificateAuthority {
    /// The CA certificate (what nodes and clients trust).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA's private key.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// Loads a CA from its certificate and key.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<CertificateAuthority, TransportError> {
        let key = KeyPair::from_pem(key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)?;
        Ok(CertificateAuthority {
            issuer,
            cert_pem: cert_pem.to_owned(),
            key_pem: key_pem.to_owned(),
        })
    }

    fn issue(
        &self,
        name: &str,
        unit: &str,
        sans: &[String],
        purposes: &[ExtendedKeyUsagePurpose],
    ) -> Result<IssuedCert, TransportError> {
        let mut params = CertificateParams::new(sans.to_vec())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params
            .distinguished_name
            .push(DnType::OrganizationalUnitName, unit);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = purposes.to_vec();
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(IssuedCert {
            name: name.to_owned(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// Generates a new cluster CA named `common_name`.
pub fn generate_ca(common_name: &str) -> Result<CertificateAuthority, TransportError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    let key_pem = key.serialize_pem();
    Ok(CertificateAuthority {
        cert_pem: cert.pem(),
        key_pem,
        issuer: Issuer::new(params, key),
    })
}

/// Issues a node certificate for `name`, valid for the DNS names and IP addresses in `sans`
/// (strings that parse as IP addresses become IP entries). A node dials its peers by IP address
/// unless told a server name, so list the addresses the node listens on.
pub fn issue_node_cert(
    ca: &CertificateAuthority,
    name: &str,
    sans: &[String],
) -> Result<IssuedCert, TransportError> {
    ca.issue(
        name,
        NODE_UNIT,
        sans,
        &[
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
    )
}

/// Issues a client certificate for `name` (client authentication only).
pub fn issue_client_cert(
    ca: &CertificateAuthority,
    name: &str,
) -> Result<IssuedCert, TransportError> {
    ca.issue(
        name,
        CLIENT_UNIT,
        &[],
        &[ExtendedKeyUsagePurpose::ClientAuth],
    )
}

fn write_file(path: PathBuf, text: &str, mode: u32) -> Result<(), TransportError> {
    let file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&path);
    file.and_then(|mut f| f.write_all(text.as_bytes()).and_then(|()| f.sync_all()))
        .map_err(|source| TransportError::File { path, source })
}

pub(crate) fn read_file(path: &Path) -> Result<String, TransportError> {
    fs::read_to_string(path).map_err(|source| TransportError::File {
        path: path.to_owned(),
        source,
    })
}

/// Writes `ca.pem` and `ca.key` (mode 0600) into `dir`.
pub fn write_ca(dir: &Path, ca: &CertificateAuthority) -> Result<(), TransportError> {
    write_file(dir.join("ca.pem"), &ca.cert_pem, 0o644)?;
    write_file(dir.join("ca.key"), &ca.key_pem, 0o600)
}

/// Reads the CA from `dir/ca.pem` and `dir/ca.key`.
pub fn read_ca(dir: &Path) -> Result<CertificateAuthority, TransportError> {
    let cert = read_file(&dir.join("ca.pem"))?;
    let key = read_file(&dir.join("ca.key"))?;
    CertificateAuthority::from_pem(&cert, &key)
}

/// Writes `<name>.pem` and `<name>.key` (mode 0600) into `dir`.
pub fn write_cert(dir: &Path, cert: &IssuedCert) -> Result<(), TransportError> {
    write_file(
        dir.join(format!("{}.pem", cert.name)),
        &cert.cert_pem,
        0o644,
    )?;
    write_file(dir.join(format!("{}.key", cert.name)), &cert.key_pem, 0o600)
}

/// A node certificate to issue: its name and the DNS names / IP addresses it is valid for.
#[derive(Clone, Debug)]
pub struct NodeCertSpec {
    /// File stem and common name (say `node1`).
    pub name: String,
    /// DNS names and IP addresses.
    pub sans: Vec<String>,
}

/// What `basalt certs` does: in `dir` (created if missing), uses the CA found there
/// (`ca.pem`/`ca.key`) or generates one named `ca_name`, then issues and writes a certificate
/// and key per node and per client. Returns the CA.
pub fn write_cert_dir(
    dir: &Path,
    ca_name: &str,
    nodes: &[NodeCertSpec],
    clients: &[String],
) -> Result<CertificateAuthority, TransportError> {
    fs::create_dir_all(dir).map_err(|source| TransportError::File {
        path: dir.to_owned(),
        source,
    })?;
    let ca = if dir.join("ca.pem").exists() && dir.join("ca.key").exists() {
        read_ca(dir)?
    } else {
        let ca = generate_ca(ca_name)?;
        write_ca(dir, &ca)?;
        ca
    };
    for n in nodes {
        write_cert(dir, &issue_node_cert(&ca, &n.name, &n.sans)?)?;
    }
    for c in clients {
        write_cert(dir, &issue_client_cert(&ca, c)?)?;
    }
    Ok(ca)
}
