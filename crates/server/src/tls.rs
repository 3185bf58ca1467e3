//! TLS with rustls (the `ring` provider), and a certificate that can be replaced while the
//! server runs.
//!
//! [`Tls::load`] reads a PEM certificate chain and its private key (PKCS#8, RSA or EC). The
//! rustls configuration asks a resolver of ours for the certificate on every handshake, and
//! [`Tls::reload`] swaps what that resolver hands out: connections already established keep the
//! session they have (nothing about them changes), new handshakes get the new certificate. A pair
//! that does not load (a missing file, no certificate, a key that does not match) leaves the
//! current one in place.
//!
//! ALPN offers `h2` and then `http/1.1`; the connection is served with whichever the client
//! picked (HTTP/1.1 when it picked none).

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

/// The ALPN protocol name of HTTP/2 over TLS.
pub(crate) const ALPN_H2: &[u8] = b"h2";
/// The ALPN protocol name of HTTP/1.1.
pub(crate) const ALPN_HTTP1: &[u8] = b"http/1.1";

/// A TLS server configuration whose certificate is re-read from its files on [`Tls::reload`].
pub struct Tls {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    current: Arc<CurrentCert>,
    config: Arc<rustls::ServerConfig>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Tls")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

/// The certificate handed to each new handshake.
#[derive(Debug)]
struct CurrentCert(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }
}

impl CurrentCert {
    fn get(&self) -> Arc<CertifiedKey> {
        // A swap is one assignment: a panic cannot leave the value half-written.
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set(&self, key: Arc<CertifiedKey>) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = key;
    }
}

impl Tls {
    /// Reads the certificate chain in `cert_path` (PEM, the server's own certificate first) and
    /// the private key in `key_path` (PEM: PKCS#8, PKCS#1 RSA or SEC1 EC). The error names the
    /// file and what is wrong with it.
    pub fn load(
        cert_path: impl Into<PathBuf>,
        key_path: impl Into<PathBuf>,
    ) -> Result<Tls, String> {
        let (cert_path, key_path) = (cert_path.into(), key_path.into());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = read_pair(&cert_path, &key_path, &provider)?;
        let current = Arc::new(CurrentCert(RwLock::new(Arc::new(key))));
        let mut config = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|error| format!("TLS configuration: {error}"))?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()];
        Ok(Tls {
            cert_path,
            key_path,
            provider,
            current,
            config: Arc::new(config),
        })
    }

    /// Re-reads both files; new handshakes present what they now hold. On an error the
    /// certificate in use stays.
    pub fn reload(&self) -> Result<(), String> {
        let key = read_pair(&self.cert_path, &self.key_path, &self.provider)?;
        self.current.set(Arc::new(key));
        Ok(())
    }

    /// The SHA-256 fingerprint of the certificate new handshakes get (hex, colon-separated as
    /// `openssl x509 -fingerprint -sha256` prints it), for logs.
    pub fn fingerprint(&self) -> String {
        let key = self.current.get();
        let digest = Sha256::digest(key.cert.first().map_or(&[][..], |cert| cert.as_ref()));
        let hex: Vec<String> = digest.iter().map(|byte| format!("{byte:02X}")).collect();
        hex.join(":")
    }

    /// The certificate file.
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// The key file.
    pub fn key_path(&self) -> &Path {
        &self.key_path
    }

    /// Accepts TLS connections with this configuration.
    pub(crate) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config.clone())
    }
}

/// A certificate chain and the private key it certifies, checked to belong together.
fn read_pair(
    cert_path: &Path,
    key_path: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, String> {
    let cert_file = cert_path.display();
    let key_file = key_path.display();
    let chain = CertificateDer::pem_file_iter(cert_path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|error| format!("cannot read the TLS certificate {cert_file}: {error}"))?;
    if chain.is_empty() {
        return Err(format!(
            "{cert_file} holds no certificate (PEM \"-----BEGIN CERTIFICATE-----\")"
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|error| {
        format!("cannot read the TLS private key {key_file} (PEM: PKCS#8, RSA or EC): {error}")
    })?;
    CertifiedKey::from_der(chain, key, provider).map_err(|error| match error {
        rustls::Error::InconsistentKeys(_) => {
            format!("the private key {key_file} does not belong to the certificate {cert_file}")
        }
        error => format!("cannot use the TLS key {key_file} with {cert_file}: {error}"),
    })
}
