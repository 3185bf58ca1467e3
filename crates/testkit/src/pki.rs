//! A test PKI made with rcgen: a root CA, an intermediate it signs, and server certificates the
//! intermediate issues for `localhost` and `127.0.0.1`. Clients trust the root only, so a server
//! whose certificate file lacks the intermediate fails their handshake.
//!
//! Shared by the server's and the CLI's TLS tests. It panics rather than returning errors:
//! rcgen fails only on parameters, and these are fixed.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
    SerialNumber,
};
use std::path::{Path, PathBuf};

/// A root CA and an intermediate CA.
pub struct Pki {
    root: CertifiedIssuer<'static, KeyPair>,
    intermediate: CertifiedIssuer<'static, KeyPair>,
}

/// A server certificate and its key, as the PEM a server is given.
pub struct Leaf {
    /// The certificate, then the intermediate.
    pub chain_pem: String,
    /// The private key (PKCS#8).
    pub key_pem: String,
    /// The server's certificate (DER), as a client sees it.
    pub der: Vec<u8>,
}

fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

impl Default for Pki {
    fn default() -> Pki {
        Pki::new()
    }
}

impl Pki {
    /// A fresh root and intermediate, with new keys: no two tests trust each other's.
    pub fn new() -> Pki {
        let root = CertifiedIssuer::self_signed(
            ca_params("resumable test root CA"),
            KeyPair::generate().expect("root key"),
        )
        .expect("root CA");
        let intermediate = CertifiedIssuer::signed_by(
            ca_params("resumable test intermediate CA"),
            KeyPair::generate().expect("intermediate key"),
            &root,
        )
        .expect("intermediate CA");
        Pki { root, intermediate }
    }

    /// The root certificate (PEM): what clients trust.
    pub fn root_pem(&self) -> String {
        self.root.pem()
    }

    /// A server certificate for `localhost` and `127.0.0.1`, named `name`, with this serial.
    pub fn issue(&self, name: &str, serial: u64) -> Leaf {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.serial_number = Some(SerialNumber::from(serial));
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.intermediate).expect("leaf");
        Leaf {
            chain_pem: cert.pem() + &self.intermediate.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }
}

impl Leaf {
    /// Writes `cert.pem` and `key.pem` into `dir` (replacing what is there) and returns their
    /// paths.
    pub fn write_to(&self, dir: &Path) -> (PathBuf, PathBuf) {
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, &self.chain_pem).expect("write cert.pem");
        std::fs::write(&key, &self.key_pem).expect("write key.pem");
        (cert, key)
    }
}
