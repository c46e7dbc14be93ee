//! The one rustls client configuration: every client the sidecar opens (the upstream
//! to FinCode, webhook deliveries to the app, the Postgres store, the sandbox's
//! deliveries) is built here, so all use ring (never a process-wide default provider),
//! no client certificate and no key log, and differ only in what they pass: the roots
//! they trust, the TLS versions and the ALPN protocols.

use std::{path::Path, sync::Arc};

use rustls::{ClientConfig, RootCertStore, SupportedProtocolVersion};
use rustls_pki_types::{
    CertificateDer,
    pem::{self, PemObject},
};

/// TLS 1.3 and 1.2, newest first: rustls's safe defaults, and all any client offers.
pub const TLS12_AND_13: &[&SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// The public CAs (Mozilla's, from `webpki-roots`), for servers with public certificates.
pub fn webpki_roots() -> RootCertStore {
    RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    }
}

/// The certificates in the PEM file at `path`, in file order (none when it holds none;
/// each caller decides whether that is an error, and how to treat one it cannot use).
pub fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, pem::Error> {
    CertificateDer::pem_file_iter(path)?.collect()
}

/// A client configuration with ring that trusts `roots`, offers `versions` and
/// `alpn` (empty for none, as hyper-rustls requires: it sets ALPN itself from the HTTP
/// versions it enables), with no client certificate and no key log.
///
/// Fails only when ring supports none of `versions`.
///
/// ```
/// use fincode_server::tls;
///
/// let config = tls::client_config(tls::webpki_roots(), tls::TLS12_AND_13, &[b"h2"]).unwrap();
/// assert_eq!(config.alpn_protocols, [b"h2".to_vec()]);
/// ```
pub fn client_config(
    roots: RootCertStore,
    versions: &[&'static SupportedProtocolVersion],
    alpn: &[&[u8]],
) -> Result<ClientConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
    Ok(config)
}
