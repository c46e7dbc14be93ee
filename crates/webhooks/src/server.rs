//! The webhook listener's TLS: plain HTTP (TLS terminated by the ingress) or TLS with
//! rustls from `webhooks.tls_cert_file` / `tls_key_file`, HTTP/1.1 and HTTP/2 by ALPN.
//! Connections are served by [`fincode_server`] with `[listeners.webhooks]`' limits (the
//! handshake counts against its header-read timeout).

use std::{net::SocketAddr, path::Path, sync::Arc};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tokio_rustls::TlsAcceptor;

/// Why TLS could not be set up; names the key and the file. The message says what the
/// cause said (operators read it alone); the cause is also kept as its `source()`.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds nothing usable.
    #[error("{key} = {path:?}: {source}")]
    File {
        /// The config key.
        key: &'static str,
        /// The configured path.
        path: String,
        /// What was wrong: the PEM reader's error, or what the file lacks.
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// rustls refused the pair (e.g. the key does not match the certificate).
    #[error("webhooks.tls_cert_file / tls_key_file: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A rustls acceptor from PEM files.
pub fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    let file_error =
        |key: &'static str, path: &Path, source: Box<dyn std::error::Error + Send + Sync>| {
            TlsError::File {
                key,
                path: path.display().to_string(),
                source,
            }
        };
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(|e| file_error("webhooks.tls_cert_file", cert, e.into()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error("webhooks.tls_cert_file", cert, e.into()))?;
    if certs.is_empty() {
        return Err(file_error(
            "webhooks.tls_cert_file",
            cert,
            "no certificate in it".into(),
        ));
    }
    let private = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| file_error("webhooks.tls_key_file", key, e.into()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, private)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The peer type the listener sees, re-exported for tests.
pub type Peer = SocketAddr;
