//! The rules that span keys, run on the configuration once every value has been read.
//!
//! Each value was checked on its own by its type (see `types.rs`); what is left is what
//! only makes sense together: two timeouts that must nest, a mode that needs a key, two
//! listeners that cannot share a port.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use http::{HeaderName, HeaderValue, Uri};

use crate::load::{Report, suggest, toml_duration, toml_string};
use crate::problem::Severity;
use crate::schema::{
    AuditConfig, AuthConfig, AuthMode, Config, ListenConfig, ListenersConfig, ROUTE_TEMPLATES,
    RedactConfig, RetryConfig, RouteLimit, StoreBackend, StoreTls, WebhookScheme, WebhooksConfig,
};
use crate::secrets::is_credential_header;
use crate::types::{is_proxy_managed_header, postgres_hosts};

// === impl Report ===

impl Report {
    /// Runs every rule on `config`; `store_given` lists the `[store]` keys the file (or the
    /// overlay) set. Normalises `auth.extra_headers` to lower-case names on the way.
    pub(crate) fn check(&mut self, config: &mut Config, store_given: &[String]) {
        self.check_listen(&config.listen);
        self.check_scheme(&config.upstream.base_url, config.upstream.allow_insecure);
        self.check_extra_headers(&mut config.auth);
        self.check_auth(&config.auth);
        self.check_retry(&config.retry);
        self.check_routes(&config.rate_limit.routes);
        self.check_webhooks(&config.webhooks, &config.listen);
        self.check_store(&config.store, store_given);
        self.check_stall_timeouts(&config.listeners, &config.retry, &config.webhooks);
        self.check_audit(&config.audit, &config.redact);
    }

    /// An enabled trail needs its signing key (unsigned checkpoints prove nothing against
    /// someone who can rewrite the files) and the redactor's hash key (resource ids are
    /// recorded only as keyed pseudonyms).
    fn check_audit(&mut self, audit: &AuditConfig, redact: &RedactConfig) {
        if !audit.enabled {
            return;
        }
        if audit.signing_key_env.is_none() {
            self.report(
                Severity::Error,
                "audit.signing_key_env",
                None,
                "is required when audit.enabled = true: checkpoints must be signed".to_owned(),
                "name the variable holding the Ed25519 seed, e.g. signing_key_env = \
                 \"FINCODE_AUDIT_SIGNING_KEY\", and set it to `openssl rand -base64 32`"
                    .to_owned(),
            );
        }
        if redact.hash_key_env.is_none() {
            self.report(
                Severity::Error,
                "redact.hash_key_env",
                None,
                "is required when audit.enabled = true: the trail records transaction ids and \
                 references only as keyed pseudonyms"
                    .to_owned(),
                "set hash_key_env = \"FINCODE_REDACT_HASH_KEY\" and that variable to at least \
                 32 random bytes; keep the key as long as the trail, `audit find` needs it"
                    .to_owned(),
            );
        }
        if audit.retention < std::time::Duration::from_hours(365 * 24) {
            self.report(
                Severity::Warning,
                "audit.retention",
                Some(humantime::format_duration(audit.retention).to_string()),
                "is shorter than a year; PCI DSS 10.5.1 asks for at least twelve months".to_owned(),
                "keep the default \"400d\" unless another copy holds the trail".to_owned(),
            );
        }
    }

    fn check_listen(&mut self, listen: &ListenConfig) {
        if !listen.egress.ip().is_loopback() {
            self.report(
                Severity::Warning,
                "listen.egress",
                Some(toml_string(&listen.egress.to_string())),
                "not a loopback address: the app's unauthenticated port is reachable from the \
                 network, and anyone who reaches it spends the merchant's credentials",
                "use \"127.0.0.1:8080\" unless a network policy restricts who can connect",
            );
        }
        let (egress, admin) = (listen.egress, listen.admin);
        if clashes(egress, admin) {
            self.report(
                Severity::Error,
                "listen.admin",
                Some(toml_string(&admin.to_string())),
                format!("clashes with listen.egress ({egress}): both listeners cannot bind it"),
                "give the admin listener its own port, e.g. \"0.0.0.0:9090\"",
            );
        }
    }

    fn check_scheme(&mut self, base_url: &Uri, allow_insecure: bool) {
        if base_url.scheme() != Some(&http::uri::Scheme::HTTP) {
            return;
        }
        // Shown without the '/' a bare host always prints, to match what the operator wrote.
        let shown = Some(toml_string(base_url.to_string().trim_end_matches('/')));
        if allow_insecure {
            self.report(
                Severity::Warning,
                "upstream.base_url",
                shown,
                "plain HTTP to FinCode: tests only; credentials cross the network in clear text",
                "use an https:// URL and remove upstream.allow_insecure outside tests",
            );
        } else {
            self.report(
                Severity::Error,
                "upstream.base_url",
                shown,
                "plain HTTP is refused; FinCode must be reached over HTTPS",
                "use an https:// URL (or set upstream.allow_insecure = true, for tests only)",
            );
        }
    }

    fn check_auth(&mut self, auth: &AuthConfig) {
        match auth.mode {
            AuthMode::Static if auth.token_env.is_none() => self.report(
                Severity::Error,
                "auth.token_env",
                None,
                "required when auth.mode = \"static\": it names the variable holding the API token",
                "set auth.token_env = \"FINCODE_API_TOKEN\" and put the token in that variable",
            ),
            AuthMode::Static => {}
            AuthMode::Login => self.check_login(auth),
            AuthMode::None => {
                self.report(
                    Severity::Warning,
                    "auth.mode",
                    Some(toml_string("none")),
                    "the sidecar injects no credentials; the app must send its own",
                    "set auth.mode = \"login\" (or \"static\" with auth.token_env)",
                );
                if auth.token_env.is_some() {
                    self.report(
                        Severity::Warning,
                        "auth.token_env",
                        None,
                        "ignored because auth.mode = \"none\"",
                        "set auth.mode = \"static\" to use it, or remove it",
                    );
                }
            }
        }
        if auth.mode != AuthMode::Login && auth.email_env.is_some() {
            self.report(
                Severity::Warning,
                "auth.email_env",
                None,
                "ignored because auth.mode is not \"login\"",
                "set auth.mode = \"login\" to use it, or remove it",
            );
        }
    }

    /// A `section`'s backoff cap below its base: the first backoff would already exceed
    /// the cap. `[cap, base]` are the section's defaults, for the fix.
    fn check_backoff(
        &mut self,
        section: &str,
        base: std::time::Duration,
        cap: std::time::Duration,
        [default_cap, default_base]: [&str; 2],
    ) {
        if cap < base {
            self.report(
                Severity::Error,
                &format!("{section}.backoff_cap"),
                Some(toml_duration(cap)),
                format!(
                    "is shorter than {section}.backoff_base ({}): the first backoff would \
                     already exceed its cap",
                    humantime::format_duration(base)
                ),
                format!(
                    "raise {section}.backoff_cap or lower {section}.backoff_base (the defaults \
                     are \"{default_cap}\" and \"{default_base}\")"
                ),
            );
        }
    }

    fn check_retry(&mut self, retry: &RetryConfig) {
        self.check_backoff(
            "retry",
            retry.backoff_base,
            retry.backoff_cap,
            ["2s", "50ms"],
        );
        if retry.per_try_timeout > retry.deadline {
            self.report(
                Severity::Error,
                "retry.per_try_timeout",
                Some(toml_duration(retry.per_try_timeout)),
                format!(
                    "is longer than retry.deadline ({}): the deadline would cut even the first \
                     try short",
                    humantime::format_duration(retry.deadline)
                ),
                "lower retry.per_try_timeout or raise retry.deadline (the defaults are \"10s\" \
                 and \"30s\")",
            );
        }
    }

    /// A stall timeout shorter than the legitimate wait with no progress would cut honest
    /// requests: an egress call waits for FinCode up to `retry.deadline`; a webhook body
    /// is read for up to `webhooks.body_read_timeout` before it is answered.
    fn check_stall_timeouts(
        &mut self,
        listeners: &ListenersConfig,
        retry: &RetryConfig,
        webhooks: &WebhooksConfig,
    ) {
        let egress = listeners.egress.stall_timeout;
        if !egress.is_zero() && egress <= retry.deadline {
            self.report(
                Severity::Error,
                "listeners.egress.stall_timeout",
                Some(toml_duration(egress)),
                format!(
                    "is not longer than retry.deadline ({}): an app call waiting for FinCode \
                     would be cut as stalled",
                    humantime::format_duration(retry.deadline)
                ),
                "set it well above retry.deadline (e.g. 15s more), or \"0s\" (the default) \
                 to turn it off",
            );
        }
        let hooks = listeners.webhooks.stall_timeout;
        if !hooks.is_zero() && hooks <= webhooks.body_read_timeout {
            self.report(
                Severity::Error,
                "listeners.webhooks.stall_timeout",
                Some(toml_duration(hooks)),
                format!(
                    "is not longer than webhooks.body_read_timeout ({}): a slow but honest \
                     body would be cut as stalled before it is answered",
                    humantime::format_duration(webhooks.body_read_timeout)
                ),
                "raise listeners.webhooks.stall_timeout (default \"1m\") or lower \
                 webhooks.body_read_timeout (default \"10s\")",
            );
        }
    }

    fn check_webhooks(&mut self, webhooks: &WebhooksConfig, listen: &ListenConfig) {
        // These hold whether or not the listener is on, so switching it on brings no surprise.
        if webhooks.delivery_timeout >= webhooks.lease {
            self.report(
                Severity::Error,
                "webhooks.delivery_timeout",
                Some(humantime::format_duration(webhooks.delivery_timeout).to_string()),
                format!(
                    "is not shorter than webhooks.lease ({}): an attempt could outlive its \
                     lease, and another sidecar (or this one after a restart) deliver the same \
                     event at the same time",
                    humantime::format_duration(webhooks.lease)
                ),
                "lower webhooks.delivery_timeout (default \"10s\") or raise webhooks.lease \
                 (default \"30s\") to a few seconds more than it",
            );
        }
        if webhooks.max_unverified_bytes < webhooks.max_body_bytes {
            self.report(
                Severity::Error,
                "webhooks.max_unverified_bytes",
                Some(webhooks.max_unverified_bytes.to_string()),
                format!(
                    "is smaller than webhooks.max_body_bytes ({}): a body of the largest allowed \
                     size could never be buffered",
                    webhooks.max_body_bytes
                ),
                "raise webhooks.max_unverified_bytes (default 8388608) or lower \
                 webhooks.max_body_bytes (default 65536)",
            );
        }
        if webhooks.paths.is_empty() {
            self.report(
                Severity::Error,
                "webhooks.paths",
                None,
                "must list at least one path: with none, every webhook would get 404",
                "list the path FinCode posts to, e.g. paths = [\"/webhooks/fincode\"]",
            );
        }
        for (index, path) in webhooks.paths.iter().enumerate() {
            if let Some(first) = webhooks.paths[..index].iter().position(|p| p == path) {
                self.report(
                    Severity::Error,
                    &format!("webhooks.paths[{index}]"),
                    Some(toml_string(path)),
                    format!("repeats webhooks.paths[{first}]"),
                    "remove the repeated path",
                );
            }
        }
        match (&webhooks.tls_cert_file, &webhooks.tls_key_file) {
            (Some(_), None) => self.report(
                Severity::Error,
                "webhooks.tls_key_file",
                None,
                "required when webhooks.tls_cert_file is set: TLS needs the certificate's \
                 private key",
                "set webhooks.tls_key_file = \"/etc/fincode-sidecar/tls/tls.key\", or remove \
                 webhooks.tls_cert_file to serve plain HTTP behind a TLS ingress",
            ),
            (None, Some(_)) => self.report(
                Severity::Error,
                "webhooks.tls_cert_file",
                None,
                "required when webhooks.tls_key_file is set: TLS needs the certificate the key \
                 belongs to",
                "set webhooks.tls_cert_file = \"/etc/fincode-sidecar/tls/tls.crt\", or remove \
                 webhooks.tls_key_file to serve plain HTTP behind a TLS ingress",
            ),
            _ => {}
        }
        self.check_backoff(
            "webhooks",
            webhooks.backoff_base,
            webhooks.backoff_cap,
            ["10m", "1s"],
        );

        if !webhooks.enabled {
            return;
        }
        if webhooks.deliver_to.is_none() {
            self.report(
                Severity::Error,
                "webhooks.deliver_to",
                None,
                "required when webhooks.enabled = true: it is where events are delivered",
                "set webhooks.deliver_to to the app's webhook endpoint, e.g. \
                 \"http://127.0.0.1:3000/webhooks/fincode\"",
            );
        }
        if webhooks.signing_secret_env.is_none() {
            self.report(
                Severity::Error,
                "webhooks.signing_secret_env",
                None,
                "required when webhooks.enabled = true: deliveries are signed with it, so the \
                 app can tell they come from the sidecar",
                "set webhooks.signing_secret_env = \"FINCODE_SIDECAR_WEBHOOK_SIGNING_SECRET\" \
                 and put a whsec_... secret in that variable",
            );
        }
        if webhooks.scheme == WebhookScheme::None {
            if webhooks.allow_ips.is_empty() {
                self.report(
                    Severity::Error,
                    "webhooks.allow_ips",
                    None,
                    "required when webhooks.scheme = \"none\": with neither a signature nor an \
                     address allow-list, anyone who can reach the listener could post fake \
                     payment events",
                    "list FinCode's published source addresses, e.g. allow_ips = \
                     [\"203.0.113.0/24\"], or use a signature scheme such as \"hmac\"",
                );
            }
            if !webhooks.confirm_by_query {
                self.report(
                    Severity::Warning,
                    "webhooks.confirm_by_query",
                    Some("false".to_owned()),
                    "unsigned events (webhooks.scheme = \"none\") are delivered unconfirmed: \
                     only their source address vouches for them",
                    "set webhooks.confirm_by_query = true, so each event is checked against \
                     FinCode before it is delivered",
                );
            }
        } else if webhooks.secret_envs.is_empty() {
            self.report(
                Severity::Error,
                "webhooks.secret_envs",
                None,
                "required unless webhooks.scheme = \"none\": it names the variables holding the \
                 secret the sender signs with",
                "set webhooks.secret_envs = [\"FINCODE_WEBHOOK_SECRET\"] and put FinCode's \
                 webhook secret in that variable",
            );
        }
        for (key, other) in [
            ("listen.egress", listen.egress),
            ("listen.admin", listen.admin),
        ] {
            if clashes(webhooks.listen, other) {
                self.report(
                    Severity::Error,
                    "webhooks.listen",
                    Some(toml_string(&webhooks.listen.to_string())),
                    format!("clashes with {key} ({other}): both listeners cannot bind it"),
                    "give the webhook listener its own port, e.g. \"0.0.0.0:8081\"",
                );
            }
        }
    }

    fn check_login(&mut self, auth: &AuthConfig) {
        if auth.email_env.is_none() {
            self.report(
                Severity::Error,
                "auth.email_env",
                None,
                "required when auth.mode = \"login\": it names the variable holding the login email",
                "set auth.email_env = \"FINCODE_EMAIL\" and put the email in that variable",
            );
        }
        if auth.password_env.is_none() {
            self.report(
                Severity::Error,
                "auth.password_env",
                None,
                "required when auth.mode = \"login\": it names the variable holding the password",
                "set auth.password_env = \"FINCODE_PASSWORD\" and put the password in that variable",
            );
        }
        match (&auth.public_key_file, &auth.public_key_env) {
            (None, None) => self.report(
                Severity::Error,
                "auth.public_key_file",
                None,
                "login mode needs the tenant's RSA public key to encrypt the password",
                "set auth.public_key_file = \"/etc/fincode/public_key.pem\" (or auth.public_key_env)",
            ),
            (Some(_), Some(_)) => self.report(
                Severity::Error,
                "auth.public_key_env",
                None,
                "both auth.public_key_file and auth.public_key_env are set; which key is meant?",
                "keep one of them",
            ),
            _ => {}
        }
        if auth.refresh_before >= auth.token_lifetime {
            self.report(
                Severity::Error,
                "auth.refresh_before",
                None,
                "must be shorter than auth.token_lifetime, or every token is refreshed at once",
                "keep the default \"5m\" (FinCode tokens live about an hour)",
            );
        }
        if auth.login_backoff_initial > auth.login_backoff_max {
            self.report(
                Severity::Error,
                "auth.login_backoff_initial",
                None,
                "is longer than auth.login_backoff_max",
                "keep the defaults \"2s\" and \"5m\"",
            );
        }
        if auth.login_retry_after_rejection < auth.login_backoff_max {
            self.report(
                Severity::Error,
                "auth.login_retry_after_rejection",
                None,
                "is shorter than auth.login_backoff_max: a login FinCode rejected (bad credentials, \
                 locked, unknown user) would be retried sooner than one that merely failed",
                "keep the default \"1h\", or at least auth.login_backoff_max",
            );
        }
        if auth.renew_on_401_min_age >= auth.token_lifetime {
            self.report(
                Severity::Error,
                "auth.renew_on_401_min_age",
                None,
                "must be shorter than auth.token_lifetime, or a 401 never renews a token",
                "keep the default \"10s\"",
            );
        }
    }

    /// `auth.extra_headers`: non-secret headers only (a credential header's value is a secret
    /// written in the file), none the proxy manages, each valid and given once. Each entry is
    /// reported under its own key; the names are kept lower-case.
    fn check_extra_headers(&mut self, auth: &mut AuthConfig) {
        let mut headers = BTreeMap::new();
        for (name, value) in std::mem::take(&mut auth.extra_headers) {
            let key = format!("auth.extra_headers.{name}");
            if is_credential_header(&name, auth.header.as_str()) {
                self.report(
                    Severity::Error,
                    &key,
                    None,
                    "a credential header's value is a secret, and secrets are never written in \
                     the config file",
                    "remove it; the sidecar injects the credential itself (auth.mode = \"static\" \
                     with auth.token_env = \"FINCODE_API_TOKEN\")",
                );
                continue;
            }
            let Ok(parsed) = HeaderName::try_from(name.as_str()) else {
                self.report(
                    Severity::Error,
                    &key,
                    None,
                    "not a valid HTTP header name",
                    "use letters, digits and '-', e.g. \"x-merchant-id\"",
                );
                continue;
            };
            if is_proxy_managed_header(parsed.as_str()) {
                self.report(
                    Severity::Error,
                    &key,
                    None,
                    "the proxy manages this header itself",
                    "remove it",
                );
                continue;
            }
            if HeaderValue::from_str(&value).is_err() {
                self.report(
                    Severity::Error,
                    &key,
                    Some(toml_string(&value)),
                    "not a valid HTTP header value",
                    "use visible ASCII characters and spaces only",
                );
                continue;
            }
            if headers.insert(parsed.as_str().to_owned(), value).is_some() {
                self.report(
                    Severity::Error,
                    &key,
                    None,
                    "the same header is given twice (header names ignore case)",
                    "keep one of them",
                );
            }
        }
        auth.extra_headers = headers;
    }

    /// `rate_limit.routes` may name only the routes the sidecar knows: a limit on any other
    /// path would never apply.
    fn check_routes(&mut self, routes: &BTreeMap<String, RouteLimit>) {
        for route in routes.keys() {
            let key = format!("rate_limit.routes.{}", toml_string(route));
            if !route.starts_with('/') {
                self.report(
                    Severity::Error,
                    &key,
                    None,
                    "a route template must start with '/'",
                    format!("write it as the path below upstream.base_url, e.g. \"/{route}\""),
                );
            } else if !ROUTE_TEMPLATES.contains(&route.as_str()) {
                let known: Vec<String> = ROUTE_TEMPLATES.iter().map(|r| (*r).to_owned()).collect();
                let fix = match suggest(route, &known) {
                    Some(near) => format!(
                        "did you mean \"{near}\"? The known routes are {}",
                        known.join(", ")
                    ),
                    None => format!("use one of {}", known.join(", ")),
                };
                self.report(
                    Severity::Error,
                    &key,
                    None,
                    "not a route the sidecar knows, so the limit would never apply",
                    fix,
                );
            }
        }
    }

    /// `[store]`: setting both backends' keys is refused rather than one silently winning:
    /// an operator who believes replicas share Postgres while each writes its own file loses
    /// the leasing that keeps two replicas from delivering one event at once.
    fn check_store(&mut self, store: &StoreBackend, given: &[String]) {
        const POSTGRES_ONLY: [&str; 5] = ["password_env", "tls", "ca_file", "pool_size", "schema"];
        let given = |key: &str| given.iter().any(|g| g == key);
        if !given("url") {
            for key in POSTGRES_ONLY.into_iter().filter(|key| given(key)) {
                self.report(
                    Severity::Warning,
                    &format!("store.{key}"),
                    None,
                    "ignored: store.url is not set, so events are kept in the SQLite file \
                     (store.sqlite_path)",
                    "set store.url to keep them in Postgres, or remove it",
                );
            }
            return;
        }
        if given("sqlite_path") {
            self.report(
                Severity::Error,
                "store.sqlite_path",
                None,
                "is set together with store.url: events are kept either in one SQLite file or \
                 in Postgres, not both",
                "drop store.sqlite_path to use Postgres (replicas sharing webhooks), or drop \
                 store.url to keep the SQLite file (one pod)",
            );
        }
        let StoreBackend::Postgres(postgres) = store else {
            return;
        };
        if postgres.tls != StoreTls::Disable {
            return;
        }
        if given("ca_file") {
            self.report(
                Severity::Error,
                "store.ca_file",
                None,
                "is set but store.tls = \"disable\": nothing would check the server's \
                 certificate against it",
                "set store.tls = \"verify-full\" to use the CA, or remove store.ca_file",
            );
        }
        if !postgres_hosts(&postgres.url)
            .into_iter()
            .all(is_loopback_host)
        {
            self.report(
                Severity::Warning,
                "store.tls",
                Some(toml_string("disable")),
                "the connection to a Postgres server off this host is not encrypted: webhook \
                 bodies (payment events, personal data) and the password cross the network in \
                 clear text",
                "set store.tls = \"verify-full\" (and store.ca_file to the server's CA if it \
                 is private); keep \"disable\" only for a server on loopback",
            );
        }
    }
}

/// Whether a URL's host is this machine: `localhost` or a loopback address.
fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Whether two listeners would try to bind the same socket.
fn clashes(a: SocketAddr, b: SocketAddr) -> bool {
    let overlap = a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified();
    // Port 0 asks the OS for any free port, so two of them never clash.
    a.port() == b.port() && a.port() != 0 && overlap
}
