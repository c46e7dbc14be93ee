//! From [`PostgresOptions`] to a connection configuration and a TLS connector.

use std::time::Duration;

use fincode_server::tls;
use secrecy::ExposeSecret;
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::schema::is_plain_identifier;
use super::{PostgresOptions, PostgresTls};
use crate::StoreError;

/// How long opening one connection (TCP, TLS, authentication) may take.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// `application_name` when the URL sets none: what `pg_stat_activity` shows.
pub(super) const DEFAULT_APPLICATION_NAME: &str = "fincode-sidecar";

/// What [`prepare`] builds.
pub(super) struct Prepared {
    pub(super) config: tokio_postgres::Config,
    pub(super) tls: MakeRustlsConnect,
    /// The database, for messages: `postgres://user@host:port/dbname (schema s)`.
    pub(super) shown: String,
}

/// Parses the URL, adds the password, the schema's `search_path` and timeouts, and
/// builds the TLS connector. Errors are [`StoreError::Open`] naming the URL (which holds
/// no password) and the fix.
pub(super) fn prepare(options: &PostgresOptions) -> Result<Prepared, StoreError> {
    let open_error = |shown: &str, detail: String| StoreError::open(shown, detail);
    let mut config: tokio_postgres::Config = options.url.parse().map_err(|error| {
        open_error(
            "the Postgres URL",
            format!(
                "it is not a valid postgres://user@host:port/dbname URL ({error}); fix the \
                 store's Postgres URL"
            ),
        )
        .caused_by(error)
    })?;
    let shown = format!("{} (schema {})", describe(&config), options.schema);
    if config.get_password().is_some() {
        // The caller refuses such URLs; never carry (or echo) one all the same.
        return Err(open_error(
            &shown,
            "the URL holds a password; put it in the variable store.password_env names \
             instead"
                .to_owned(),
        ));
    }
    if !is_plain_identifier(&options.schema) {
        return Err(open_error(
            &shown,
            "the schema name must be lowercase ASCII letters, digits and underscores, \
             starting with a letter or underscore, at most 63 characters"
                .to_owned(),
        ));
    }
    if let Some(password) = &options.password {
        config.password(password.expose_secret());
    }
    // Every statement names tables unqualified; the schema comes from here.
    let search_path = format!("-c search_path={}", options.schema);
    let startup_options = match config.get_options() {
        Some(existing) if !existing.is_empty() => format!("{existing} {search_path}"),
        _ => search_path,
    };
    config.options(&startup_options);
    if config.get_application_name().is_none() {
        config.application_name(DEFAULT_APPLICATION_NAME);
    }
    config.connect_timeout(CONNECT_TIMEOUT);
    // Notice a silently dropped connection (a NAT, a failed-over database) in about a
    // minute instead of the kernel's two hours.
    config.keepalives(true);
    config.keepalives_idle(Duration::from_secs(30));
    let roots = match &options.tls {
        PostgresTls::Disable => {
            config.ssl_mode(SslMode::Disable);
            rustls::RootCertStore::empty()
        }
        PostgresTls::VerifyFull { ca_file } => {
            config.ssl_mode(SslMode::Require);
            root_store(ca_file.as_deref(), &shown)?
        }
    };
    // rustls's safe default versions; no ALPN (Postgres negotiates none).
    let tls = tls::client_config(roots, rustls::DEFAULT_VERSIONS, &[]).map_err(|error| {
        open_error(&shown, format!("cannot set up TLS: {error}")).caused_by(error)
    })?;
    Ok(Prepared {
        config,
        tls: MakeRustlsConnect::new(tls),
        shown,
    })
}

/// The CA certificates to trust: the PEM file's (every one must be usable), or the
/// webpki roots without one.
fn root_store(
    ca_file: Option<&std::path::Path>,
    shown: &str,
) -> Result<rustls::RootCertStore, StoreError> {
    let Some(path) = ca_file else {
        return Ok(tls::webpki_roots());
    };
    let unreadable = |error: &dyn std::fmt::Display| {
        StoreError::open(
            shown,
            format!(
                "cannot read the CA file {}: {error}; point the store's CA file at a PEM \
                 file of the CA that signed the server's certificate",
                path.display()
            ),
        )
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in tls::read_ca_file(path).map_err(|e| unreadable(&e).caused_by(e))? {
        roots.add(cert).map_err(|e| unreadable(&e).caused_by(e))?;
    }
    if roots.is_empty() {
        return Err(unreadable(&"it holds no certificate"));
    }
    Ok(roots)
}

/// `postgres://user@host:port/dbname`, from the parsed configuration (so nothing the
/// URL carried beyond these is ever shown).
pub(super) fn describe(config: &tokio_postgres::Config) -> String {
    let user = config.get_user().unwrap_or("");
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .zip(
            config
                .get_ports()
                .iter()
                .copied()
                .chain(std::iter::repeat(5432)),
        )
        .map(|(host, port)| match host {
            Host::Tcp(name) => format!("{name}:{port}"),
            Host::Unix(path) => format!("{}:{port}", path.display()),
        })
        .collect();
    let dbname = config.get_dbname().unwrap_or("");
    format!("postgres://{user}@{}/{dbname}", hosts.join(","))
}
