#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]
//! Inbound FinCode webhooks (DESIGN.md 5.3): verify, deduplicate, durably acknowledge,
//! and deliver to the app with retries and dead letters.
//!
//! - [`listener`]: the ack path, from FinCode's POST to our 200 (checks, durable commit).
//! - [`verify`]: the signature schemes, over the raw bytes, in constant time.
//! - [`keys`]: dedupe and ordering keys from the config's templates.
//! - [`dispatcher`] and [`delivery`]: delivery to the app, signed by the sidecar, with
//!   backoff, `Retry-After`, and dead letters.
//! - [`admin`]: listing and replaying events on the admin port; [`cli`] for operators.
//! - `audit`: each event's fate and each admin replay, into the audit trail.
//!
//! [`Webhooks::from_config`] builds all of it once from `[webhooks]`.

pub mod admin;
mod audit;
pub mod cli;
pub mod delivery;
pub mod dispatcher;
pub mod keys;
pub mod listener;
mod metrics;
pub mod server;
pub mod verify;

#[cfg(test)]
mod delivery_tests;
#[cfg(test)]
mod tests;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use fincode_audit::Auditor;
use fincode_backoff::Backoff;
use fincode_config::{Config, HmacAlgorithm, HmacEncoding, Secrets, WebhookScheme};
use fincode_redact::Redactor;
use fincode_store::EventStore;
use http::HeaderName;
use prometheus_client::registry::Registry;
use secrecy::SecretString;
use tokio::{net::TcpListener, sync::Notify};
use tokio_rustls::TlsAcceptor;

pub use self::audit::event_resource_ids;
pub use self::metrics::WebhookMetrics;
use self::{
    audit::Audit,
    delivery::{Confirm, HttpDelivery},
    dispatcher::{Clock, Dispatcher, Policy},
    listener::Listener,
    verify::{Algorithm, Encoding, Scheme, Verifier},
};

/// Why the webhook parts could not be built from a valid config. Names the key and the
/// fix, never a secret.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The key names a variable, and the [`Secrets`] given hold no value for it.
    ///
    /// `Config::secrets` reports an unset variable itself (naming it), so this means the
    /// secrets were not resolved from the same configuration.
    #[error(
        "{0}: no value was resolved for it; resolve the secrets with Config::secrets from this configuration"
    )]
    Unresolved(&'static str),
    /// The verification secrets or scheme cannot be used.
    #[error("webhooks.secret_envs: {0}")]
    Verifier(#[from] verify::VerifierError),
    /// The sidecar's own signing secret is not a Standard Webhooks secret.
    #[error(
        "webhooks.signing_secret_env: the value of {0} must be a Standard Webhooks secret, \
         \"whsec_\" followed by base64 (e.g. `echo whsec_$(head -c 32 /dev/urandom | base64)`)"
    )]
    SigningSecret(String),
    /// A required key is missing (the loader checks these; programmatic configs may not).
    #[error("{0} is required when webhooks.enabled = true")]
    Missing(&'static str),
    /// The listener's TLS files cannot be used.
    #[error(transparent)]
    Tls(#[from] server::TlsError),
}

/// The webhook parts, built from `[webhooks]`.
pub struct Webhooks {
    listen: SocketAddr,
    listener: Arc<Listener>,
    tls: Option<TlsAcceptor>,
    dispatcher: Dispatcher,
    admin: admin::Admin,
}

// === impl Webhooks ===

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks")
            .field("listen", &self.listen)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl Webhooks {
    /// Builds the listener, dispatcher and admin routes over `store`, or `None` when
    /// `webhooks.enabled` is false. The secrets are those `Config::secrets` resolved from
    /// `config` (the one place that reads the environment). `egress` is
    /// the egress listener's bound address, which confirm-by-query calls. `audit` records
    /// every event's fate and every admin replay; `None` records nothing, at no cost.
    pub fn from_config(
        config: &Config,
        secrets: &Secrets,
        egress: SocketAddr,
        store: Arc<dyn EventStore>,
        redactor: Redactor,
        registry: &mut Registry,
        audit: Option<Auditor>,
    ) -> Result<Option<Self>, BuildError> {
        let c = &config.webhooks;
        if !c.enabled {
            return Ok(None);
        }
        // One secret per variable named, or the secrets were not resolved from this config.
        if secrets.webhook_secrets.len() != c.secret_envs.len() {
            return Err(BuildError::Unresolved("webhooks.secret_envs"));
        }
        let verifier = Verifier::new(scheme(c), secrets.webhook_secrets.clone(), c.tolerance)?;
        let secret_header = match verifier.scheme() {
            Scheme::SharedSecret { header } => Some(header.clone()),
            _ => None,
        };
        let metrics = WebhookMetrics::register(registry);
        let wake = Arc::new(Notify::new());
        // Events stored by other replicas (a shared Postgres) wake this dispatcher too.
        store.watch_inserts(wake.clone());
        // One clock for the listener, the dispatcher and the admin routes.
        let clock = Clock::new();
        let listener = Arc::new(Listener {
            paths: c.paths.clone(),
            max_body: c.max_body_bytes,
            body_read_timeout: c.body_read_timeout,
            unverified: Arc::new(tokio::sync::Semaphore::new(
                c.max_unverified_bytes
                    .min(tokio::sync::Semaphore::MAX_PERMITS),
            )),
            allow_ips: c.allow_ips.clone(),
            trusted_proxies: c.trusted_proxies.clone(),
            verifier,
            secret_header,
            dedupe: c.dedupe_key.clone(),
            order: c.order_key.clone(),
            store: store.clone(),
            metrics: metrics.clone(),
            wake: wake.clone(),
            audit: Audit::new(audit.clone()),
            clock,
        });
        let tls = match (&c.tls_cert_file, &c.tls_key_file) {
            (Some(cert), Some(key)) => Some(server::tls_acceptor(cert, key)?),
            _ => None,
        };

        let deliver_to = c
            .deliver_to
            .clone()
            .ok_or(BuildError::Missing("webhooks.deliver_to"))?;
        let signing_var = c
            .signing_secret_env
            .as_deref()
            .ok_or(BuildError::Missing("webhooks.signing_secret_env"))?;
        let signing = resolved(
            secrets.webhook_signing_secret.as_ref(),
            "webhooks.signing_secret_env",
        )?;
        // Sign once now, so a malformed secret fails at start-up, not at the first event.
        if verify::sign(
            &Scheme::StandardWebhooks,
            &signing,
            b"",
            std::time::SystemTime::now(),
            "msg_startup_check",
        )
        .is_err()
        {
            return Err(BuildError::SigningSecret(signing_var.to_owned()));
        }
        let confirm = if c.confirm_by_query {
            Some(Confirm {
                egress: format!("http://{}", loopback(egress)),
                path: c.confirm_path.clone(),
                status_pointer: c.confirm_status_pointer.clone(),
            })
        } else {
            None
        };
        let delivery = Arc::new(HttpDelivery::new(
            deliver_to,
            signing,
            c.delivery_timeout,
            confirm,
        ));
        let policy = Policy {
            max_attempts: c.max_attempts,
            max_age: c.max_age,
            backoff: Backoff::full_jitter(c.backoff_base, c.backoff_cap),
            backoff_cap: c.backoff_cap,
            concurrency: c.delivery_concurrency,
            // Longer than an attempt (the config refuses delivery_timeout >= lease), so an
            // attempt ends before anyone else may claim its event; short enough that a
            // crashed replica's events are picked up again soon. (A single SQLite sidecar
            // voids old leases at start-up.)
            lease: c.lease,
            retention: c.retention,
            dedupe_retention: c.dedupe_retention,
        };
        let dispatcher = Dispatcher::new(
            store.clone(),
            delivery,
            policy,
            metrics,
            wake.clone(),
            clock,
            audit.clone(),
        );
        let token = c
            .admin_token_env
            .as_ref()
            .map(|_| resolved(secrets.admin_token.as_ref(), "webhooks.admin_token_env"))
            .transpose()?;
        let admin = admin::Admin::new(store, redactor, token, wake, audit, clock);
        Ok(Some(Self {
            listen: c.listen,
            listener,
            tls,
            dispatcher,
            admin,
        }))
    }

    /// Where the listener binds (`webhooks.listen`).
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
    }

    /// The admin routes, for the admin port.
    pub fn admin(&self) -> admin::Admin {
        self.admin.clone()
    }

    /// Splits into the listener (serve it on a socket) and the dispatcher (run it).
    pub fn into_parts(self) -> (ListenerTask, Dispatcher) {
        (
            ListenerTask {
                listener: self.listener,
                tls: self.tls,
            },
            self.dispatcher,
        )
    }
}

/// The listener, ready to serve.
pub struct ListenerTask {
    listener: Arc<Listener>,
    tls: Option<TlsAcceptor>,
}

impl std::fmt::Debug for ListenerTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerTask")
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl ListenerTask {
    /// Serves webhooks on `socket` with `server`'s limits (`[listeners.webhooks]`) until
    /// `shutdown` is cancelled, then drains for up to `drain` (each request in flight is
    /// either committed and answered, or not answered at all).
    pub async fn serve(
        self,
        server: fincode_server::Server,
        socket: TcpListener,
        shutdown: fincode_server::CancellationToken,
        drain: Duration,
    ) {
        let listener = self.listener;
        let service = tower::service_fn(move |req: http::Request<hyper::body::Incoming>| {
            let listener = listener.clone();
            async move {
                let peer = req.extensions().get::<fincode_server::Peer>().map_or(
                    SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, 0)),
                    |peer| peer.0,
                );
                Ok::<_, std::convert::Infallible>(listener.handle(req, peer).await)
            }
        });
        server
            .with_tls(self.tls)
            .serve(socket, service, shutdown, drain)
            .await;
    }
}

/// The verification scheme `[webhooks]` describes.
/// The resolved secret `key` names, or why there is none.
fn resolved(secret: Option<&SecretString>, key: &'static str) -> Result<SecretString, BuildError> {
    secret.cloned().ok_or(BuildError::Unresolved(key))
}

fn scheme(c: &fincode_config::WebhooksConfig) -> Scheme {
    let header = |default: &'static str| {
        c.signature_header
            .as_deref()
            .and_then(|h| HeaderName::try_from(h.to_ascii_lowercase()).ok())
            .unwrap_or_else(|| HeaderName::from_static(default))
    };
    match c.scheme {
        WebhookScheme::Hmac => Scheme::Hmac {
            algorithm: match c.hmac_algorithm {
                HmacAlgorithm::Sha256 => Algorithm::Sha256,
                HmacAlgorithm::Sha512 => Algorithm::Sha512,
            },
            encoding: match c.hmac_encoding {
                HmacEncoding::Hex => Encoding::Hex,
                HmacEncoding::Base64 => Encoding::Base64,
            },
            header: header("x-fincode-signature"),
            prefix: c.signature_prefix.clone(),
        },
        WebhookScheme::StandardWebhooks => Scheme::StandardWebhooks,
        WebhookScheme::Stripe => Scheme::Stripe {
            header: header("stripe-signature"),
        },
        WebhookScheme::SharedSecret => Scheme::SharedSecret {
            header: header("x-webhook-secret"),
        },
        WebhookScheme::None => Scheme::None,
    }
}

/// The egress address as the dispatcher dials it: an unspecified bind address is
/// reached on loopback.
fn loopback(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), addr.port())
    } else {
        addr
    }
}
