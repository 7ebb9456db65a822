//! rustls configurations for mutual TLS over QUIC: a node's server side requires a client
//! certificate signed by the cluster CA (a connection without one, or with another CA's, fails
//! the handshake); every dialing side presents its own certificate and verifies the server's
//! against the same CA. The crypto provider is `ring`, set per configuration (no process-wide
//! default is installed).

use std::path::Path;
use std::sync::Arc;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;

use crate::certs::read_file;
use crate::{TransportError, ALPN};

/// A node's or client's TLS identity: the cluster CA it trusts, its certificate chain and key.
#[derive(Debug)]
pub struct TlsConfig {
    ca: CertificateDer<'static>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    server_name: Option<String>,
}

/// The TLS identity of a client (same shape as a node's).
pub type ClientTlsConfig = TlsConfig;

impl Clone for TlsConfig {
    fn clone(&self) -> TlsConfig {
        TlsConfig {
            ca: self.ca.clone(),
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            server_name: self.server_name.clone(),
        }
    }
}

fn pem_error(what: &str, e: impl std::fmt::Display) -> TransportError {
    TransportError::Pem {
        what: what.to_owned(),
        reason: e.to_string(),
    }
}

impl TlsConfig {
    /// From PEM text: the CA certificate, this side's certificate chain and its private key.
    pub fn from_pem(
        ca_pem: &str,
        cert_pem: &str,
        key_pem: &str,
    ) -> Result<TlsConfig, TransportError> {
        let ca =
            CertificateDer::from_pem_slice(ca_pem.as_bytes()).map_err(|e| pem_error("ca", e))?;
        let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pem_error("certificate", e))?;
        if chain.is_empty() {
            return Err(pem_error("certificate", "no certificate found"));
        }
        let key =
            PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| pem_error("key", e))?;
        Ok(TlsConfig {
            ca,
            chain,
            key,
            server_name: None,
        })
    }

    /// From PEM files.
    pub fn from_files(ca: &Path, cert: &Path, key: &Path) -> Result<TlsConfig, TransportError> {
        TlsConfig::from_pem(&read_file(ca)?, &read_file(cert)?, &read_file(key)?)
    }

    /// From a certificate directory as written by [`crate::certs::write_cert_dir`]:
    /// `dir/ca.pem`, `dir/<name>.pem`, `dir/<name>.key`.
    pub fn from_dir(dir: &Path, name: &str) -> Result<TlsConfig, TransportError> {
        TlsConfig::from_files(
            &dir.join("ca.pem"),
            &dir.join(format!("{name}.pem")),
            &dir.join(format!("{name}.key")),
        )
    }

    /// The name to verify servers' certificates against when dialing; by default the IP
    /// address dialed (node certificates then list their IP addresses).
    pub fn with_server_name(mut self, name: impl Into<String>) -> TlsConfig {
        self.server_name = Some(name.into());
        self
    }

    /// The name servers are verified against, if set.
    pub fn server_name(&self) -> Option<&str> {
        self.server_name.as_deref()
    }

    fn roots(&self) -> Result<Arc<RootCertStore>, TransportError> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.clone())?;
        Ok(Arc::new(roots))
    }

    /// The rustls server side: a certificate signed by the CA is required of every peer.
    pub fn rustls_server(&self) -> Result<rustls::ServerConfig, TransportError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            WebPkiClientVerifier::builder_with_provider(self.roots()?, Arc::clone(&provider))
                .build()?;
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())?;
        cfg.alpn_protocols = vec![ALPN.to_vec()];
        Ok(cfg)
    }

    /// The rustls client side: presents this certificate, verifies the server against the CA.
    pub fn rustls_client(&self) -> Result<rustls::ClientConfig, TransportError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(self.roots()?)
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())?;
        cfg.alpn_protocols = vec![ALPN.to_vec()];
        Ok(cfg)
    }

    /// The QUIC server configuration.
    pub fn quic_server(
        &self,
        transport: Arc<quinn::TransportConfig>,
    ) -> Result<quinn::ServerConfig, TransportError> {
        let crypto = QuicServerConfig::try_from(self.rustls_server()?)?;
        let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        cfg.transport_config(transport);
        Ok(cfg)
    }

    /// The QUIC client configuration.
    pub fn quic_client(
        &self,
        transport: Arc<quinn::TransportConfig>,
    ) -> Result<quinn::ClientConfig, TransportError> {
        let crypto = QuicClientConfig::try_from(self.rustls_client()?)?;
        let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
        cfg.transport_config(transport);
        Ok(cfg)
    }
}
