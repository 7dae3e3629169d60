//! The agents' TLS: a certificate authority of the user's, each agent's certificate signed by
//! it for the agent's address, and the configurations both ends use. Only TLS 1.3 and 1.2 with
//! rustls's safe defaults; the coordinator trusts nothing but the given CA, and checks that the
//! agent's certificate names the address it dialled.
//!
//! `relapse agent certs` makes the files with [`make_certs`]; with openssl, the equivalent is a
//! self-signed CA (`openssl req -x509 -new -key ca-key.pem -subj /CN=relapse-agents-ca
//! -addext basicConstraints=critical,CA:TRUE`) and per agent a key and a certificate signed by
//! it with `subjectAltName = IP:ADDRESS` (docs/agents.md gives the lines).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// The ALPN name of HTTP/2: both ends insist on it.
const H2: &[u8] = b"h2";

/// Why TLS material could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: {reason}")]
    Pem { path: PathBuf, reason: String },
    #[error("certificate: {0}")]
    Make(#[from] rcgen::Error),
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The CA's fixed parameters: the same every time, so that an issuer can be rebuilt from the
/// CA's key alone to sign another agent's certificate later.
fn ca_params() -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "relapse agents CA");
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

/// The files [`make_certs`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    pub ca: PathBuf,
    pub ca_key: PathBuf,
    /// Per agent: its name, certificate and key.
    pub agents: Vec<(String, PathBuf, PathBuf)>,
}

/// Writes, into `dir`: `ca.pem` and `ca-key.pem` (made if `ca-key.pem` is absent, else reused),
/// and for each `(name, address)` `NAME.pem` and `NAME-key.pem`, a certificate for that address
/// (an IP or a DNS name) signed by the CA. Keys are written readable by their owner only.
pub fn make_certs(dir: &Path, agents: &[(String, String)]) -> Result<CertFiles, TlsError> {
    std::fs::create_dir_all(dir).map_err(|source| TlsError::File {
        path: dir.to_path_buf(),
        source,
    })?;
    let ca_key_path = dir.join("ca-key.pem");
    let ca_path = dir.join("ca.pem");
    let ca_key = if ca_key_path.exists() {
        let pem = read(&ca_key_path)?;
        KeyPair::from_pem(&pem).map_err(|e| TlsError::Pem {
            path: ca_key_path.clone(),
            reason: e.to_string(),
        })?
    } else {
        let key = KeyPair::generate()?;
        let cert = ca_params()?.self_signed(&key)?;
        write(&ca_path, &cert.pem(), false)?;
        write(&ca_key_path, &key.serialize_pem(), true)?;
        key
    };
    let issuer = Issuer::new(ca_params()?, &ca_key);
    let mut written = Vec::new();
    for (name, address) in agents {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![address.clone()])?;
        params
            .distinguished_name
            .push(DnType::CommonName, format!("relapse agent {name}"));
        let cert = params.signed_by(&key, &issuer)?;
        let cert_path = dir.join(format!("{name}.pem"));
        let key_path = dir.join(format!("{name}-key.pem"));
        write(&cert_path, &cert.pem(), false)?;
        write(&key_path, &key.serialize_pem(), true)?;
        written.push((name.clone(), cert_path, key_path));
    }
    Ok(CertFiles {
        ca: ca_path,
        ca_key: ca_key_path,
        agents: written,
    })
}

fn read(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|source| TlsError::File {
        path: path.to_path_buf(),
        source,
    })
}

fn write(path: &Path, text: &str, secret: bool) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mode = if secret { 0o600 } else { 0o644 };
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|source| TlsError::File {
            path: path.to_path_buf(),
            source,
        })
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Pem {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_path_buf(),
            reason: "no certificate in the file".into(),
        });
    }
    Ok(certs)
}

/// The agent's side: its certificate (with any chain) and key; HTTP/2 only.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = certificates(cert)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Pem {
        path: key.to_path_buf(),
        reason: e.to_string(),
    })?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![H2.to_vec()];
    Ok(Arc::new(config))
}

/// The coordinator's side: trusts only the CA in `ca`; HTTP/2 only.
pub fn client_config(ca: &Path) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(ca)? {
        roots.add(cert)?;
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![H2.to_vec()];
    Ok(Arc::new(config))
}
