//! TLS for every listener: rustls with the `ring` provider, a certificate
//! chain and a private key from PEM files, ALPN `h2` and `http/1.1`.
//!
//! Loading happens once at start-up; any problem is an error naming the
//! file, so a misconfigured server never starts half-secured.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// Why TLS cannot be set up; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what}: {source}")]
    Read {
        what: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

/// Protocols offered during the handshake, most preferred first.
pub const ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];

/// Builds the acceptor from a PEM certificate chain (leaf first) and a PEM
/// private key (PKCS#8, PKCS#1 or SEC1).
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    let certs = read_certs(cert)?;
    let key_der = read_key(key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| {
            TlsError::Invalid(format!(
                "the TLS provider supports no protocol version: {e}"
            ))
        })?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| {
            TlsError::Invalid(format!(
                "TLS certificate {} and key {} cannot be used together: {e}",
                cert.display(),
                key.display()
            ))
        })?;
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem_bytes = std::fs::read(path).map_err(|source| TlsError::Read {
        what: format!("the TLS certificate file {}", path.display()),
        source,
    })?;
    let certs = CertificateDer::pem_slice_iter(&pem_bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            TlsError::Invalid(format!(
                "the TLS certificate file {} is not valid PEM: {e}",
                path.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(TlsError::Invalid(format!(
            "the TLS certificate file {} holds no certificate (expected PEM \"BEGIN CERTIFICATE\" blocks)",
            path.display()
        )));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem_bytes = std::fs::read(path).map_err(|source| TlsError::Read {
        what: format!("the TLS private key file {}", path.display()),
        source,
    })?;
    // The parser's own messages can quote a line of the file; for a key file
    // that line may be key material, so only the kind of problem is named.
    PrivateKeyDer::from_pem_slice(&pem_bytes).map_err(|e| {
        let why = match e {
            pem::Error::NoItemsFound => "it holds no private key",
            pem::Error::Base64Decode(_) => "a PEM block is not valid base64",
            pem::Error::MissingSectionEnd { .. } => "a PEM block has no END line",
            pem::Error::IllegalSectionStart { .. } => "a PEM BEGIN line is malformed",
            pem::Error::SectionTooLarge => "a PEM block is too large",
            _ => "it is not a PEM private key",
        };
        TlsError::Invalid(format!(
            "the TLS private key file {} is unusable: {why} (expected a PEM PKCS#8, PKCS#1 or SEC1 key)",
            path.display()
        ))
    })
}
