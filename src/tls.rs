//! TLS material: loading PEM files, building rustls configs, and generating a
//! throwaway CA with server and client certificates in memory (for
//! `portcullis up` and the tests).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// Why TLS material could not be loaded or generated.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read certificates from {path}: {reason}")]
    Certs { path: String, reason: String },
    #[error("cannot read private key from {path}: {reason}")]
    Key { path: String, reason: String },
    #[error("no usable root certificates: {0}")]
    Roots(String),
    #[error("invalid TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
}

/// A certificate chain and its private key.
#[derive(Debug)]
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

/// `der` as a PEM block labelled `label`.
fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .filter_map(|c| std::str::from_utf8(c).ok())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

impl Identity {
    /// The certificate chain in PEM form, as [`Identity::from_pem_files`]
    /// reads it.
    pub fn chain_pem(&self) -> String {
        self.chain.iter().map(|c| pem("CERTIFICATE", c)).collect()
    }

    /// The private key in PEM form (PKCS#8).
    pub fn key_pem(&self) -> String {
        pem("PRIVATE KEY", self.key.secret_der())
    }

    /// Loads a PEM certificate chain and a PEM private key.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Identity, TlsError> {
        Ok(Identity {
            chain: load_certs(cert)?,
            key: PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
                path: key.display().to_string(),
                reason: e.to_string(),
            })?,
        })
    }
}

/// Loads every certificate in a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |reason: String| TlsError::Certs {
        path: path.display().to_string(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no certificate found".into()));
    }
    Ok(certs)
}

/// A root store from explicit CA certificates, or the system's roots.
pub fn root_store(cas: Option<&[CertificateDer<'static>]>) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    match cas {
        Some(cas) => {
            for ca in cas {
                roots
                    .add(ca.clone())
                    .map_err(|e| TlsError::Roots(e.to_string()))?;
            }
        }
        None => {
            let loaded = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(loaded.certs);
            if added == 0 {
                return Err(TlsError::Roots("the system trust store is empty".into()));
            }
        }
    }
    Ok(roots)
}

/// Server config; when `client_cas` is set, clients must present a
/// certificate issued by one of them (mTLS).
pub fn server_config(
    identity: &Identity,
    client_cas: Option<&[CertificateDer<'static>]>,
    alpn: &[&[u8]],
) -> Result<Arc<ServerConfig>, TlsError> {
    let builder = ServerConfig::builder();
    let builder = match client_cas {
        Some(cas) => {
            let verifier = WebPkiClientVerifier::builder(Arc::new(root_store(Some(cas))?))
                .build()
                .map_err(|e| TlsError::Roots(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(identity.chain.clone(), identity.key.clone_key())?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// Client config verifying servers against `cas` (or the system roots),
/// optionally presenting a client certificate.
pub fn client_config(
    cas: Option<&[CertificateDer<'static>]>,
    identity: Option<&Identity>,
    alpn: &[&[u8]],
) -> Result<Arc<ClientConfig>, TlsError> {
    let builder = ClientConfig::builder().with_root_certificates(root_store(cas)?);
    let mut config = match identity {
        Some(id) => builder.with_client_auth_cert(id.chain.clone(), id.key.clone_key())?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// A certificate authority generated in memory.
pub struct GeneratedCa {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl GeneratedCa {
    /// A new self-signed CA.
    pub fn new(name: &str) -> Result<GeneratedCa, TlsError> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let issuer = rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate()?)?;
        Ok(GeneratedCa { issuer })
    }

    /// The CA certificate.
    pub fn cert(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// The CA certificate in PEM form.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// Issues a leaf certificate for `names` (DNS names or IP addresses).
    pub fn issue(&self, names: &[&str]) -> Result<Identity, TlsError> {
        let params = rcgen::CertificateParams::new(
            names.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>(),
        )?;
        let key = rcgen::KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Identity {
            chain: vec![cert.der().clone(), self.cert()],
            key: PrivateKeyDer::try_from(key.serialize_der())
                .map_err(|e| TlsError::Roots(e.to_string()))?,
        })
    }
}
