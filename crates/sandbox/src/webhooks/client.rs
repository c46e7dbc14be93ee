//! The delivery client: one HTTP/1.1 keep-alive pool per batch, each request bounded in time.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt as _, Full};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;

/// One request, connection included, may take this long before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle pooled connections are closed after this long.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

pub(super) type PooledClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Sends one request and reads the whole response, so the connection goes back to the pool.
pub(super) async fn deliver(
    client: &PooledClient,
    request: Request<Full<Bytes>>,
) -> (Option<u16>, Option<String>) {
    let exchange = async {
        let response = client
            .request(request)
            .await
            .map_err(|e| (None, error_chain(&e)))?;
        let status = response.status().as_u16();
        match response.into_body().collect().await {
            Ok(_) => Ok(status),
            Err(e) => Err((
                Some(status),
                format!("reading the response: {}", error_chain(&e)),
            )),
        }
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
        Ok(Ok(status)) => (Some(status), None),
        Ok(Err((status, error))) => (status, Some(error)),
        Err(_) => (
            None,
            Some(format!("timed out after {}s", REQUEST_TIMEOUT.as_secs())),
        ),
    }
}

/// hyper's client errors say little at the top ("client error (Connect)"): the cause, such as
/// "Connection refused", is further down the chain.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// An HTTP/1.1 keep-alive pool; https trusts the webpki roots plus the CAs in `ca_file`.
pub(super) async fn build_client(ca_file: Option<&Path>) -> Result<PooledClient, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        let pem = tokio::fs::read(path)
            .await
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| format!("parsing {}: {e}", path.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("trusting {}: {e}", path.display()))?;
        }
    }
    // ring only, as in tls.rs: no reliance on a process-wide default provider.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS client configuration: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .build(connector))
}
