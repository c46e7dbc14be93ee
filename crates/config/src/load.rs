//! Turning TOML text plus the environment into a [`Config`], collecting every problem on the way.
//!
//! The file is parsed into a `toml::Table`, the env overlay is written into it, and each known
//! key is then *removed* from the table by a typed field parser. A parser failure records a
//! problem and falls back to the default, so one pass finds everything. Whatever is left in the
//! table afterwards is unknown: a typo (we suggest the nearest key) or a secret (refused).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use http::{HeaderName, HeaderValue, Uri};
use toml::{Table, Value};

use crate::env::{Env, Origins, apply_overlay};
use crate::fields::{self, Parse, Refusal};
use crate::problem::{ConfigError, Problem, Severity, Source};
use crate::schema::{
    AuditConfig, AuthConfig, AuthMode, BreakerConfig, CREATE_TRANSACTION_ROUTE, Config,
    LimitsConfig, ListenConfig, ListenerLimits, ListenersConfig, LogConfig, PostgresStoreConfig,
    ROUTE_TEMPLATES, RateLimitConfig, RedactConfig, RetryConfig, RouteLimit, ShutdownConfig,
    StoreBackend, StoreTls, TracesConfig, UpstreamConfig, WebhookScheme, WebhooksConfig,
    default_extra_headers,
};
use crate::secrets::{is_credential_header, is_secret_key};

/// Echoed values are cut to this many characters; a config value longer than that is not
/// something a human needs to see in full.
const MAX_ECHO_CHARS: usize = 120;

const EXAMPLE_BASE_URL: &str = "https://acme.fincode.tech/api/v6/services";

// === impl Config ===

impl Config {
    /// Reads the TOML file at `path`, overlays `FINCODE_SIDECAR__*` variables from `env` and
    /// validates the result.
    ///
    /// Returns the configuration with its warnings, or every problem found at once.
    pub fn load(path: &Path, env: &Env) -> Result<(Config, Vec<Problem>), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml_str(&text, env).map_err(|err| match err {
            ConfigError::Syntax {
                line,
                column,
                message,
                ..
            } => ConfigError::Syntax {
                path: Some(path.to_owned()),
                line,
                column,
                message,
            },
            other => other,
        })
    }

    /// Like [`Config::load`], from TOML text already in memory.
    pub fn from_toml_str(text: &str, env: &Env) -> Result<(Config, Vec<Problem>), ConfigError> {
        let mut root: Table = text.parse().map_err(|err| syntax_error(text, &err))?;
        seed_extra_headers(&mut root);
        let mut problems = Vec::new();
        let origins = apply_overlay(&mut root, env, &mut problems);
        let mut reader = Reader {
            root,
            origins,
            problems,
            known: Vec::new(),
            leftovers: Vec::new(),
        };
        let config = reader.read_config();
        let mut problems = reader.problems;
        // Errors first, then grouped by section in schema order (unknown sections last), so
        // the report reads like the file; within a section, in the order found.
        let sections: Vec<&str> = reader
            .known
            .iter()
            .filter(|k| !k.contains('.'))
            .map(String::as_str)
            .collect();
        problems.sort_by_key(|p| {
            let section = p.key.split('.').next().unwrap_or_default();
            let rank = sections
                .iter()
                .position(|s| *s == section)
                .unwrap_or(sections.len());
            (p.severity, rank)
        });
        match config {
            Some(config) if !problems.iter().any(Problem::is_error) => Ok((config, problems)),
            _ => Err(ConfigError::Invalid { problems }),
        }
    }

    /// Checks that every environment variable the configuration names is set and non-empty:
    /// those of the auth mode, and, when webhooks are enabled, their verification, signing and
    /// admin secrets and the store's password.
    ///
    /// Kept apart from loading because `check` may run where the secrets are not mounted: the
    /// binary reports these as warnings in `check` and errors in `run`. They are returned as
    /// [`Severity::Error`]. The variables' values are never read into a problem.
    pub fn check_environment(&self, env: &Env) -> Vec<Problem> {
        let named = self
            .auth
            .secret_env_vars()
            .into_iter()
            .map(|(key, var)| (key.to_owned(), var))
            .chain(webhook_secret_env_vars(&self.webhooks))
            .chain(audit_secret_env_vars(self))
            .chain(
                // The store is opened only for webhooks.
                self.webhooks
                    .enabled
                    .then(|| self.store.secret_env_vars())
                    .into_iter()
                    .flatten()
                    .map(|(key, var)| (key.to_owned(), var)),
            );
        unset_variables(named, env)
    }

    /// Like [`Config::check_environment`], for the store's variables only (the Postgres
    /// password), whether or not webhooks are on: for tools that open the store
    /// themselves, such as `store status`.
    pub fn check_store_environment(&self, env: &Env) -> Vec<Problem> {
        unset_variables(
            self.store
                .secret_env_vars()
                .into_iter()
                .map(|(key, var)| (key.to_owned(), var)),
            env,
        )
    }

    /// The configuration as a TOML file that [`Config::load`] reads back to an equal `Config`.
    pub fn to_toml_string(&self) -> String {
        // Every field is a string, bool, i64-range integer or string map, all of which TOML can
        // hold, so this cannot fail; if it ever did, the comment makes the file fail to load
        // (no base_url) with the reason visible, rather than crashing the caller.
        toml::to_string(self)
            .unwrap_or_else(|err| format!("# fincode-sidecar could not write this config: {err}\n"))
    }

    /// The dotted keys whose values differ between `self` and `other`, sorted: what a
    /// reload changes. Names only, never values. A key set in one and unset in the other
    /// counts as changed; map entries are named `section.map."entry"`.
    pub fn changed_keys(&self, other: &Config) -> Vec<String> {
        let (Ok(old), Ok(new)) = (toml::Value::try_from(self), toml::Value::try_from(other)) else {
            // Cannot happen (see `to_toml_string`); claim everything changed rather than nothing.
            return vec![String::new()];
        };
        let mut changed = Vec::new();
        diff_keys(String::new(), Some(&old), Some(&new), &mut changed);
        changed.sort();
        changed
    }
}

/// Appends to `out` every leaf key under `prefix` that differs between `old` and `new`.
fn diff_keys(
    prefix: String,
    old: Option<&toml::Value>,
    new: Option<&toml::Value>,
    out: &mut Vec<String>,
) {
    use toml::Value::Table;
    match (old, new) {
        (Some(Table(old)), Some(Table(new))) => {
            let keys: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
            for key in keys {
                let name = if key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    key.clone()
                } else {
                    format!("{key:?}")
                };
                let path = if prefix.is_empty() {
                    name
                } else {
                    format!("{prefix}.{name}")
                };
                diff_keys(path, old.get(key), new.get(key), out);
            }
        }
        (old, new) if old == new => {}
        _ => out.push(prefix),
    }
}

/// A problem for each `(key, variable)` whose variable is unset or blank. Names only:
/// the values are never read into a problem.
fn unset_variables<'a>(
    named: impl IntoIterator<Item = (String, &'a str)>,
    env: &Env,
) -> Vec<Problem> {
    named
        .into_iter()
        .filter(|(_, var)| env.get(var).is_none_or(|v| v.trim().is_empty()))
        .map(|(key, var)| Problem {
            severity: Severity::Error,
            message: format!("environment variable {var} (named by {key}) is not set"),
            key,
            source: Source::File,
            value: Some(toml_string(var)),
            fix: format!("set {var} in the sidecar's environment (e.g. from a Kubernetes Secret)"),
        })
        .collect()
}

/// The `(key, variable)` pairs naming the audit trail's keys; none when it is off.
fn audit_secret_env_vars(config: &Config) -> Vec<(String, &str)> {
    if !config.audit.enabled {
        return Vec::new();
    }
    let mut vars = Vec::new();
    if let Some(var) = &config.audit.signing_key_env {
        vars.push(("audit.signing_key_env".to_owned(), var.as_str()));
    }
    if let Some(var) = &config.redact.hash_key_env {
        vars.push(("redact.hash_key_env".to_owned(), var.as_str()));
    }
    vars
}

/// The `(key, variable)` pairs naming secrets the webhooks read; none when they are off.
fn webhook_secret_env_vars(webhooks: &WebhooksConfig) -> Vec<(String, &str)> {
    if !webhooks.enabled {
        return Vec::new();
    }
    let verification = webhooks
        .secret_envs
        .iter()
        .enumerate()
        .map(|(index, var)| (format!("webhooks.secret_envs[{index}]"), var.as_str()));
    let own = [
        ("webhooks.signing_secret_env", &webhooks.signing_secret_env),
        ("webhooks.admin_token_env", &webhooks.admin_token_env),
    ]
    .into_iter()
    .filter_map(|(key, var)| Some((key.to_owned(), var.as_deref()?)));
    verification.chain(own).collect()
}

/// Every dotted key the schema knows (sections included), in schema order. Derived by running
/// the loader, so the list cannot drift from what is actually read.
#[cfg(test)]
pub(crate) fn known_keys() -> Vec<String> {
    let mut reader = Reader {
        root: Table::new(),
        origins: Origins::default(),
        problems: Vec::new(),
        known: Vec::new(),
        leftovers: Vec::new(),
    };
    reader.read_config();
    reader.known
}

/// Makes the default `extra_headers` explicit before the overlay, so that
/// `FINCODE_SIDECAR__AUTH__EXTRA_HEADERS__X=...` adds to the defaults instead of replacing them.
fn seed_extra_headers(root: &mut Table) {
    let auth = root
        .entry("auth")
        .or_insert_with(|| Value::Table(Table::new()));
    if let Value::Table(auth) = auth {
        auth.entry("extra_headers").or_insert_with(|| {
            Value::Table(
                default_extra_headers()
                    .into_iter()
                    .map(|(k, v)| (k, Value::String(v)))
                    .collect(),
            )
        });
    }
}

/// Builds the syntax error from the parser's message and span only. toml's own `Display` quotes
/// the offending line, which could be `password = "..."`.
fn syntax_error(text: &str, err: &toml::de::Error) -> ConfigError {
    let offset = err.span().map_or(0, |span| span.start).min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .unwrap_or_default()
        .chars()
        .count()
        + 1;
    ConfigError::Syntax {
        path: None,
        line,
        column,
        message: err.message().trim().replace('\n', "; "),
    }
}

/// The loader's state: what is left of the table, and what has been found so far.
struct Reader {
    root: Table,
    origins: Origins,
    problems: Vec<Problem>,
    /// Dotted keys (and section names) the schema asked for, for suggestions.
    known: Vec<String>,
    /// Keys nobody asked for, reported once everything known has been taken.
    leftovers: Vec<(String, Value)>,
}

/// One `[section]` being read. Taking a field removes it, so the rest is unknown.
struct Section<'r> {
    reader: &'r mut Reader,
    name: &'static str,
    table: Table,
}

// === impl Reader ===

impl Reader {
    /// Reads every section; `None` only when a required key is missing or invalid (problems
    /// say why). The table of fields, in the order they are documented.
    fn read_config(&mut self) -> Option<Config> {
        let mut s = self.section("listen");
        let defaults = ListenConfig::default();
        let listen = ListenConfig {
            egress: s.field("egress", fields::socket_addr, defaults.egress),
            admin: s.field("admin", fields::socket_addr, defaults.admin),
        };
        s.finish();
        let listeners = self.listeners();

        let mut s = self.section("upstream");
        let base_url = s.required(
            "base_url",
            fields::base_url,
            &format!("base_url = \"{EXAMPLE_BASE_URL}\""),
        );
        let defaults = UpstreamConfig::new(Uri::from_static(EXAMPLE_BASE_URL));
        let upstream = UpstreamConfig {
            base_url: defaults.base_url,
            ca_file: s.optional("ca_file", fields::pem_file),
            allow_insecure: s.field("allow_insecure", fields::boolean, defaults.allow_insecure),
            connect_timeout: s.field(
                "connect_timeout",
                fields::duration,
                defaults.connect_timeout,
            ),
            request_timeout: s.field(
                "request_timeout",
                fields::duration,
                defaults.request_timeout,
            ),
            pool_idle_timeout: s.field(
                "pool_idle_timeout",
                fields::duration,
                defaults.pool_idle_timeout,
            ),
            pool_max_idle_per_host: s.field(
                "pool_max_idle_per_host",
                fields::count,
                defaults.pool_max_idle_per_host,
            ),
            http2: s.field("http2", fields::boolean, defaults.http2),
        };
        s.finish();

        let mut s = self.section("limits");
        let defaults = LimitsConfig::default();
        let limits = LimitsConfig {
            max_request_body_bytes: s.field(
                "max_request_body_bytes",
                fields::body_bytes,
                defaults.max_request_body_bytes,
            ),
            max_request_header_bytes: s.field(
                "max_request_header_bytes",
                fields::header_bytes,
                defaults.max_request_header_bytes,
            ),
            max_concurrent_requests: s.field(
                "max_concurrent_requests",
                fields::positive_count,
                defaults.max_concurrent_requests,
            ),
        };
        s.finish();

        let mut s = self.section("auth");
        let defaults = AuthConfig::default();
        let mode = s.field("mode", fields::auth_mode, defaults.mode);
        let header = s.field("header", fields::header_name, defaults.header);
        let token_env = s.optional("token_env", fields::env_var_name);
        let extra_headers = s.extra_headers(&header);
        let auth = AuthConfig {
            mode,
            header,
            token_env,
            extra_headers,
            email_env: s.optional("email_env", fields::env_var_name),
            password_env: s.optional("password_env", fields::env_var_name),
            public_key_file: s.optional("public_key_file", fields::public_key_file),
            public_key_env: s.optional("public_key_env", fields::env_var_name),
            oaep_mgf1: s.field("oaep_mgf1", fields::oaep_mgf1, defaults.oaep_mgf1),
            device_id_header: s.field(
                "device_id_header",
                fields::header_name,
                defaults.device_id_header,
            ),
            device_id: s.field("device_id", fields::header_value, defaults.device_id),
            refresh_before: s.field("refresh_before", fields::duration, defaults.refresh_before),
            token_lifetime: s.field("token_lifetime", fields::duration, defaults.token_lifetime),
            login_backoff_initial: s.field(
                "login_backoff_initial",
                fields::duration,
                defaults.login_backoff_initial,
            ),
            login_backoff_max: s.field(
                "login_backoff_max",
                fields::duration,
                defaults.login_backoff_max,
            ),
            login_retry_after_rejection: s.field(
                "login_retry_after_rejection",
                fields::duration,
                defaults.login_retry_after_rejection,
            ),
            renew_on_401_min_age: s.field(
                "renew_on_401_min_age",
                fields::duration_or_zero,
                defaults.renew_on_401_min_age,
            ),
            logout_timeout: s.field("logout_timeout", fields::duration, defaults.logout_timeout),
            login_path: s.field("login_path", fields::api_path, defaults.login_path),
            refresh_path: s.field("refresh_path", fields::api_path, defaults.refresh_path),
            logout_path: s.field("logout_path", fields::api_path, defaults.logout_path),
        };
        s.finish();

        let mut s = self.section("log");
        let defaults = LogConfig::default();
        let log = LogConfig {
            level: s.field("level", fields::log_level, defaults.level),
            format: s.field("format", fields::log_format, defaults.format),
            bodies: s.field("bodies", fields::boolean, defaults.bodies),
            body_level: s.field("body_level", fields::body_level, defaults.body_level),
            max_body_bytes: s.field("max_body_bytes", fields::count, defaults.max_body_bytes),
        };
        s.finish();

        let mut s = self.section("redact");
        let redact = RedactConfig {
            headers: s.field("headers", fields::name_list, Vec::new()),
            query_params: s.field("query_params", fields::name_list, Vec::new()),
            fields: s.field("fields", fields::field_actions, BTreeMap::new()),
            hash_key_env: s.optional("hash_key_env", fields::env_var_name),
        };
        s.finish();

        let mut s = self.section("traces");
        let defaults = TracesConfig::default();
        let traces = TracesConfig {
            otlp_endpoint: s.optional("otlp_endpoint", fields::otlp_endpoint),
            sample_ratio: s.field("sample_ratio", fields::ratio, defaults.sample_ratio),
            service_name: s.field("service_name", fields::string, defaults.service_name),
            export_timeout: s.field("export_timeout", fields::duration, defaults.export_timeout),
        };
        s.finish();

        let mut s = self.section("retry");
        let defaults = RetryConfig::default();
        let retry = RetryConfig {
            max_attempts: s.field("max_attempts", fields::max_attempts, defaults.max_attempts),
            backoff_base: s.field("backoff_base", fields::duration, defaults.backoff_base),
            backoff_cap: s.field("backoff_cap", fields::duration, defaults.backoff_cap),
            per_try_timeout: s.field(
                "per_try_timeout",
                fields::duration,
                defaults.per_try_timeout,
            ),
            deadline: s.field("deadline", fields::duration, defaults.deadline),
            retry_after_cap: s.field(
                "retry_after_cap",
                fields::duration,
                defaults.retry_after_cap,
            ),
            budget_ratio: s.field("budget_ratio", fields::ratio, defaults.budget_ratio),
            budget_min_per_second: s.field(
                "budget_min_per_second",
                fields::count_u32,
                defaults.budget_min_per_second,
            ),
            budget_window: s.field(
                "budget_window",
                fields::budget_window,
                defaults.budget_window,
            ),
            max_replay_body: s.field(
                "max_replay_body",
                fields::byte_count,
                defaults.max_replay_body,
            ),
            mint_idempotency_key: s.field(
                "mint_idempotency_key",
                fields::boolean,
                defaults.mint_idempotency_key,
            ),
        };
        s.finish();

        let mut s = self.section("breaker");
        let defaults = BreakerConfig::default();
        let breaker = BreakerConfig {
            enabled: s.field("enabled", fields::boolean, defaults.enabled),
            consecutive_failures: s.field(
                "consecutive_failures",
                fields::positive_count_u32,
                defaults.consecutive_failures,
            ),
            failure_ratio: s.field(
                "failure_ratio",
                fields::failure_ratio,
                defaults.failure_ratio,
            ),
            min_requests: s.field(
                "min_requests",
                fields::positive_count_u32,
                defaults.min_requests,
            ),
            window: s.field("window", fields::window, defaults.window),
            open_for: s.field("open_for", fields::duration, defaults.open_for),
            half_open_probes: s.field(
                "half_open_probes",
                fields::positive_count_u32,
                defaults.half_open_probes,
            ),
        };
        s.finish();

        let mut s = self.section("rate_limit");
        let defaults = RateLimitConfig::default();
        let rate_limit = RateLimitConfig {
            per_second: s.field("per_second", fields::count_u32, defaults.per_second),
            burst: s.field("burst", fields::positive_count_u32, defaults.burst),
            max_wait: s.field("max_wait", fields::duration_or_zero, defaults.max_wait),
            upstream_backoff: s.field(
                "upstream_backoff",
                fields::duration,
                defaults.upstream_backoff,
            ),
            routes: s.route_limits(defaults.routes),
        };
        s.finish();

        let mut s = self.section("webhooks");
        let defaults = WebhooksConfig::default();
        let webhooks = WebhooksConfig {
            enabled: s.field("enabled", fields::boolean, defaults.enabled),
            listen: s.field("listen", fields::socket_addr, defaults.listen),
            paths: s.list("paths", fields::webhook_path, defaults.paths),
            max_body_bytes: s.field(
                "max_body_bytes",
                fields::webhook_body_bytes,
                defaults.max_body_bytes,
            ),
            max_unverified_bytes: s.field(
                "max_unverified_bytes",
                fields::unverified_bytes,
                defaults.max_unverified_bytes,
            ),
            body_read_timeout: s.field(
                "body_read_timeout",
                fields::duration,
                defaults.body_read_timeout,
            ),
            tls_cert_file: s.optional("tls_cert_file", fields::tls_cert_file),
            tls_key_file: s.optional("tls_key_file", fields::tls_key_file),
            allow_ips: s.list("allow_ips", fields::ip_net, defaults.allow_ips),
            trusted_proxies: s.list("trusted_proxies", fields::ip_net, defaults.trusted_proxies),
            scheme: s.field("scheme", fields::webhook_scheme, defaults.scheme),
            secret_envs: s.list("secret_envs", fields::env_var_name, defaults.secret_envs),
            hmac_algorithm: s.field(
                "hmac_algorithm",
                fields::hmac_algorithm,
                defaults.hmac_algorithm,
            ),
            hmac_encoding: s.field(
                "hmac_encoding",
                fields::hmac_encoding,
                defaults.hmac_encoding,
            ),
            signature_header: s.optional("signature_header", fields::signature_header),
            signature_prefix: s.field(
                "signature_prefix",
                fields::signature_prefix,
                defaults.signature_prefix,
            ),
            tolerance: s.field("tolerance", fields::signature_tolerance, defaults.tolerance),
            dedupe_key: s.field("dedupe_key", fields::key_template, defaults.dedupe_key),
            order_key: s.optional("order_key", fields::key_template),
            deliver_to: s.optional("deliver_to", fields::deliver_to),
            signing_secret_env: s.optional("signing_secret_env", fields::env_var_name),
            delivery_timeout: s.field(
                "delivery_timeout",
                fields::duration,
                defaults.delivery_timeout,
            ),
            lease: s.field("lease", fields::duration, defaults.lease),
            delivery_concurrency: s.field(
                "delivery_concurrency",
                fields::delivery_concurrency,
                defaults.delivery_concurrency,
            ),
            max_attempts: s.field(
                "max_attempts",
                fields::delivery_attempts,
                defaults.max_attempts,
            ),
            max_age: s.field("max_age", fields::event_max_age, defaults.max_age),
            retention: s.field("retention", fields::retention, defaults.retention),
            dedupe_retention: s.field(
                "dedupe_retention",
                fields::dedupe_retention,
                defaults.dedupe_retention,
            ),
            backoff_base: s.field("backoff_base", fields::duration, defaults.backoff_base),
            backoff_cap: s.field("backoff_cap", fields::duration, defaults.backoff_cap),
            confirm_by_query: s.field(
                "confirm_by_query",
                fields::boolean,
                defaults.confirm_by_query,
            ),
            confirm_path: s.field("confirm_path", fields::confirm_path, defaults.confirm_path),
            confirm_status_pointer: s.field(
                "confirm_status_pointer",
                fields::json_pointer,
                defaults.confirm_status_pointer,
            ),
            admin_token_env: s.optional("admin_token_env", fields::env_var_name),
        };
        s.finish();

        let store = self.store();

        let mut s = self.section("audit");
        let defaults = AuditConfig::default();
        let audit = AuditConfig {
            enabled: s.field("enabled", fields::boolean, defaults.enabled),
            dir: s.field("dir", fields::audit_dir, defaults.dir),
            signing_key_env: s.optional("signing_key_env", fields::env_var_name),
            actor: s.optional("actor", fields::header_value),
            fsync: s.field("fsync", fields::audit_fsync, defaults.fsync),
            fail_closed: s.field("fail_closed", fields::boolean, defaults.fail_closed),
            queue: s.field("queue", fields::positive_count, defaults.queue),
            checkpoint_every: s.field(
                "checkpoint_every",
                fields::positive_u64,
                defaults.checkpoint_every,
            ),
            checkpoint_interval: s.field(
                "checkpoint_interval",
                fields::duration,
                defaults.checkpoint_interval,
            ),
            max_segment_bytes: s.field(
                "max_segment_bytes",
                fields::positive_u64,
                defaults.max_segment_bytes,
            ),
            max_segment_age: s.field(
                "max_segment_age",
                fields::duration,
                defaults.max_segment_age,
            ),
            retention: s.field("retention", fields::audit_retention, defaults.retention),
        };
        s.finish();

        let mut s = self.section("shutdown");
        let defaults = ShutdownConfig::default();
        let shutdown = ShutdownConfig {
            grace: s.field("grace", fields::shutdown_grace, defaults.grace),
        };
        s.finish();

        for (key, value) in std::mem::take(&mut self.root) {
            self.leftovers.push((key, value));
        }
        for (dotted, value) in std::mem::take(&mut self.leftovers) {
            self.report_unknown(&dotted, &value);
        }

        self.check_listen(&listen);
        if let Some(base_url) = &base_url {
            self.check_scheme(base_url, upstream.allow_insecure);
        }
        self.check_auth(&auth);
        self.check_retry(&retry);
        self.check_webhooks(&webhooks, &listen);
        self.check_stall_timeouts(&listeners, &retry, &webhooks);
        self.check_audit(&audit, &redact);

        Some(Config {
            listen,
            listeners,
            upstream: UpstreamConfig {
                base_url: base_url?,
                ..upstream
            },
            limits,
            auth,
            log,
            redact,
            traces,
            retry,
            breaker,
            rate_limit,
            webhooks,
            store,
            audit,
            shutdown,
        })
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

    /// `[store]`: Postgres when `url` is set, else the SQLite file at `sqlite_path` (or its
    /// default). Setting both is refused rather than one silently winning: an operator who
    /// believes replicas share Postgres while each writes its own file loses the leasing
    /// that keeps two replicas from delivering one event at once.
    fn store(&mut self) -> StoreBackend {
        const POSTGRES_ONLY: [&str; 5] = ["password_env", "tls", "ca_file", "pool_size", "schema"];
        let mut s = self.section("store");
        let url_given = s.table.contains_key("url");
        let sqlite_given = s.table.contains_key("sqlite_path");
        let postgres_only_given: Vec<&str> = POSTGRES_ONLY
            .into_iter()
            .filter(|key| s.table.contains_key(*key))
            .collect();
        let sqlite_path = s.optional("sqlite_path", fields::sqlite_path);
        let url = s.optional("url", fields::postgres_url);
        let defaults = PostgresStoreConfig::new(String::new());
        let password_env = s.optional("password_env", fields::env_var_name);
        let tls = s.field("tls", fields::store_tls, defaults.tls);
        let ca_file = s.optional("ca_file", fields::pem_file);
        let pool_size = s.field("pool_size", fields::pool_size, defaults.pool_size);
        let schema = s.field("schema", fields::sql_identifier, defaults.schema);
        s.finish();

        if !url_given {
            for key in postgres_only_given {
                self.report(
                    Severity::Warning,
                    &format!("store.{key}"),
                    None,
                    "ignored: store.url is not set, so events are kept in the SQLite file \
                     (store.sqlite_path)",
                    "set store.url to keep them in Postgres, or remove it",
                );
            }
            return StoreBackend::Sqlite {
                path: sqlite_path.unwrap_or_else(|| PathBuf::from("fincode-sidecar.db")),
            };
        }
        if sqlite_given {
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
        let tls = match (tls, ca_file) {
            (StoreTls::VerifyFull { .. }, ca_file) => StoreTls::VerifyFull { ca_file },
            (StoreTls::Disable, Some(_)) => {
                self.report(
                    Severity::Error,
                    "store.ca_file",
                    None,
                    "is set but store.tls = \"disable\": nothing would check the server's \
                     certificate against it",
                    "set store.tls = \"verify-full\" to use the CA, or remove store.ca_file",
                );
                StoreTls::Disable
            }
            (StoreTls::Disable, None) => StoreTls::Disable,
        };
        let Some(url) = url else {
            // Invalid, and reported: the config is refused, so any backend will do.
            return StoreBackend::default();
        };
        if tls == StoreTls::Disable
            && !fields::postgres_hosts(&url)
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
        StoreBackend::Postgres(PostgresStoreConfig {
            url,
            password_env,
            tls,
            pool_size,
            schema,
        })
    }

    /// `[listeners.egress]`, `[listeners.admin]`, `[listeners.webhooks]`: the same keys for
    /// each, with per-listener defaults.
    fn listeners(&mut self) -> ListenersConfig {
        self.known.push("listeners".to_owned());
        let mut table = match self.root.remove("listeners") {
            None => Table::new(),
            Some(Value::Table(table)) => table,
            Some(other) => {
                self.refuse(
                    "listeners",
                    &other,
                    Refusal {
                        message: "expected a table".to_owned(),
                        fix: "write it as [listeners.egress], [listeners.admin] and \
                              [listeners.webhooks] sections"
                            .to_owned(),
                        echo: false,
                    },
                );
                Table::new()
            }
        };
        let defaults = ListenersConfig::default();
        let mut read = |reader: &mut Self, leaf: &str, name: &'static str, d: ListenerLimits| {
            reader.known.push(name.to_owned());
            let sub = match table.remove(leaf) {
                None => Table::new(),
                Some(Value::Table(sub)) => sub,
                Some(other) => {
                    reader.refuse(
                        name,
                        &other,
                        Refusal {
                            message: "expected a table".to_owned(),
                            fix: format!("write it as a [{name}] section"),
                            echo: false,
                        },
                    );
                    Table::new()
                }
            };
            let mut s = Section {
                reader,
                name,
                table: sub,
            };
            let limits = s.listener_limits(&d);
            s.finish();
            limits
        };
        let listeners = ListenersConfig {
            egress: read(self, "egress", "listeners.egress", defaults.egress),
            admin: read(self, "admin", "listeners.admin", defaults.admin),
            webhooks: read(self, "webhooks", "listeners.webhooks", defaults.webhooks),
        };
        for (key, value) in table {
            self.leftovers.push((format!("listeners.{key}"), value));
        }
        listeners
    }

    fn section(&mut self, name: &'static str) -> Section<'_> {
        self.known.push(name.to_owned());
        let table = match self.root.remove(name) {
            None => Table::new(),
            Some(Value::Table(table)) => table,
            Some(other) => {
                self.refuse(
                    name,
                    &other,
                    Refusal {
                        message: "expected a table".to_owned(),
                        fix: format!("write it as a [{name}] section"),
                        echo: false,
                    },
                );
                Table::new()
            }
        };
        Section {
            reader: self,
            name,
            table,
        }
    }

    fn report(
        &mut self,
        severity: Severity,
        key: &str,
        value: Option<String>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) {
        // A list item (`webhooks.allow_ips[2]`) comes from wherever its list did. Only item
        // keys end in ']': TOML keys holding brackets are quoted, so they end in '"'.
        let source_key = key
            .strip_suffix(']')
            .and_then(|k| k.rsplit_once('['))
            .map_or(key, |(list, _)| list);
        self.problems.push(Problem {
            severity,
            key: key.to_owned(),
            source: self.origins.source_of(source_key),
            value,
            message: message.into(),
            fix: fix.into(),
        });
    }

    fn refuse(&mut self, key: &str, value: &Value, refusal: Refusal) {
        let shown = refusal.echo.then(|| echo(value)).flatten();
        self.report(Severity::Error, key, shown, refusal.message, refusal.fix);
    }

    /// A key the schema does not have. Secret-looking names are refused as secrets (the worse
    /// mistake); others get a "did you mean". Values are never echoed: they could be anything.
    fn report_unknown(&mut self, dotted: &str, value: &Value) {
        let leaf = dotted.rsplit('.').next().unwrap_or(dotted);
        if is_secret_key(leaf) {
            self.refuse_secret(dotted);
            return;
        }
        for nested in secret_keys_within(dotted, value) {
            self.refuse_secret(&nested);
        }
        let what = if dotted.contains('.') || !value.is_table() {
            "key"
        } else {
            "section"
        };
        let (message, fix) = match suggest(dotted, &self.known) {
            Some(known) => (
                format!("unknown {what}; did you mean `{known}`?"),
                format!("rename it to `{known}`"),
            ),
            None => (
                format!("unknown {what}"),
                "remove it; config.example.toml documents every key".to_owned(),
            ),
        };
        self.report(Severity::Error, dotted, None, message, fix);
    }

    fn refuse_secret(&mut self, dotted: &str) {
        let section = dotted.split_once('.').map(|(section, _)| section);
        let tailored = format!("{dotted}_env");
        let fix = if self.known.contains(&tailored) {
            format!(
                "put the value in an environment variable and name it: set {tailored} = \"{}\"",
                suggested_var(&tailored)
            )
        } else if section == Some("auth") {
            "put the value in an environment variable and name it: set auth.token_env = \
             \"FINCODE_API_TOKEN\""
                .to_owned()
        } else {
            "remove it; secrets come from environment variables named by *_env keys (for the \
             FinCode API token: set auth.token_env = \"FINCODE_API_TOKEN\")"
                .to_owned()
        };
        self.report(
            Severity::Error,
            dotted,
            None,
            "secrets are never written in the config file",
            fix,
        );
    }

    // --- rules that span keys ---

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

    fn check_retry(&mut self, retry: &RetryConfig) {
        if retry.backoff_cap < retry.backoff_base {
            self.report(
                Severity::Error,
                "retry.backoff_cap",
                Some(toml_duration(retry.backoff_cap)),
                format!(
                    "is shorter than retry.backoff_base ({}): the first backoff would already \
                     exceed its cap",
                    humantime::format_duration(retry.backoff_base)
                ),
                "raise retry.backoff_cap or lower retry.backoff_base (the defaults are \"2s\" \
                 and \"50ms\")",
            );
        }
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
        if webhooks.backoff_cap < webhooks.backoff_base {
            self.report(
                Severity::Error,
                "webhooks.backoff_cap",
                Some(toml_duration(webhooks.backoff_cap)),
                format!(
                    "is shorter than webhooks.backoff_base ({}): the first backoff would already \
                     exceed its cap",
                    humantime::format_duration(webhooks.backoff_base)
                ),
                "raise webhooks.backoff_cap or lower webhooks.backoff_base (the defaults are \
                 \"10m\" and \"1s\")",
            );
        }

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
}

// === impl Section ===

impl Section<'_> {
    fn dotted(&self, key: &str) -> String {
        format!("{}.{key}", self.name)
    }

    /// Takes `key`, or `default` when it is absent or invalid (the problem is recorded).
    fn field<T>(&mut self, key: &'static str, parse: Parse<T>, default: T) -> T {
        self.optional(key, parse).unwrap_or(default)
    }

    /// Takes `key` if present; `None` when absent or invalid (the problem is recorded).
    fn optional<T>(&mut self, key: &'static str, parse: Parse<T>) -> Option<T> {
        let dotted = self.dotted(key);
        self.reader.known.push(dotted.clone());
        let value = self.table.remove(key)?;
        match parse(&value) {
            Ok(parsed) => Some(parsed),
            Err(refusal) => {
                // An env value that read as TOML of the wrong type may be meant as a string
                // (`FINCODE_SIDECAR__LOG__LEVEL=inf`): give the raw text a second chance.
                let raw = self
                    .reader
                    .origins
                    .raw_of(&dotted)
                    .filter(|_| !value.is_str());
                if let Some(Ok(parsed)) = raw.map(|raw| parse(&Value::String(raw.to_owned()))) {
                    return Some(parsed);
                }
                self.reader.refuse(&dotted, &value, refusal);
                None
            }
        }
    }

    /// Takes a key that has no default; its absence is an error.
    fn required<T>(&mut self, key: &'static str, parse: Parse<T>, example: &str) -> Option<T> {
        if !self.table.contains_key(key) {
            let dotted = self.dotted(key);
            let var = format!("FINCODE_SIDECAR__{}", dotted.replace('.', "__")).to_uppercase();
            self.reader.report(
                Severity::Error,
                &dotted,
                None,
                "missing required key",
                format!("add {example} under [{}] (or set {var})", self.name),
            );
        }
        self.optional(key, parse)
    }

    /// Takes a list read item by item, so a bad item is reported under its own key
    /// (`webhooks.allow_ips[2]`). Like [`Section::field`], gives `default` when the list is
    /// absent or anything in it is invalid.
    fn list<T>(&mut self, key: &'static str, item: Parse<T>, default: Vec<T>) -> Vec<T> {
        let dotted = self.dotted(key);
        self.reader.known.push(dotted.clone());
        let Some(value) = self.table.remove(key) else {
            return default;
        };
        let items = match fields::items(&value) {
            Ok(items) => items,
            Err(refusal) => {
                self.reader.refuse(&dotted, &value, refusal);
                return default;
            }
        };
        let mut parsed = Vec::with_capacity(items.len());
        let mut all_valid = true;
        for (index, value) in items.iter().enumerate() {
            match item(value) {
                Ok(one) => parsed.push(one),
                Err(refusal) => {
                    all_valid = false;
                    self.reader
                        .refuse(&format!("{dotted}[{index}]"), value, refusal);
                }
            }
        }
        if all_valid { parsed } else { default }
    }

    /// `auth.extra_headers`: a map, so each entry is checked (and reported) under its own key.
    fn extra_headers(&mut self, auth_header: &HeaderName) -> BTreeMap<String, String> {
        let dotted = self.dotted("extra_headers");
        self.reader.known.push(dotted.clone());
        let table = match self.table.remove("extra_headers") {
            None => return default_extra_headers(),
            Some(Value::Table(table)) => table,
            Some(other) => {
                self.reader.refuse(
                    &dotted,
                    &other,
                    Refusal {
                        message: "expected a table of header names to string values".to_owned(),
                        fix: "write it as extra_headers = { platform = \"fincode\" }".to_owned(),
                        echo: false,
                    },
                );
                return default_extra_headers();
            }
        };
        let mut headers = BTreeMap::new();
        for (name, value) in table {
            let key = format!("{dotted}.{name}");
            if let Some((name, value)) = self.extra_header(&key, &name, &value, auth_header)
                && headers.insert(name, value).is_some()
            {
                self.reader.report(
                    Severity::Error,
                    &key,
                    None,
                    "the same header is given twice (header names ignore case)",
                    "keep one of them",
                );
            }
        }
        headers
    }

    fn extra_header(
        &mut self,
        key: &str,
        name: &str,
        value: &Value,
        auth_header: &HeaderName,
    ) -> Option<(String, String)> {
        let reader = &mut *self.reader;
        if is_credential_header(name, auth_header.as_str()) {
            reader.report(
                Severity::Error,
                key,
                None,
                "a credential header's value is a secret, and secrets are never written in the \
                 config file",
                "remove it; the sidecar injects the credential itself (auth.mode = \"static\" \
                 with auth.token_env = \"FINCODE_API_TOKEN\")",
            );
            return None;
        }
        let Ok(parsed_name) = HeaderName::try_from(name) else {
            reader.report(
                Severity::Error,
                key,
                None,
                "not a valid HTTP header name",
                "use letters, digits and '-', e.g. \"x-merchant-id\"",
            );
            return None;
        };
        if fields::is_proxy_managed_header(parsed_name.as_str()) {
            reader.report(
                Severity::Error,
                key,
                None,
                "the proxy manages this header itself",
                "remove it",
            );
            return None;
        }
        let text = match fields::string(value) {
            Ok(text) => text,
            Err(refusal) => {
                reader.refuse(key, value, refusal);
                return None;
            }
        };
        if HeaderValue::from_str(&text).is_err() {
            reader.refuse(
                key,
                value,
                Refusal {
                    message: "not a valid HTTP header value".to_owned(),
                    fix: "use visible ASCII characters and spaces only".to_owned(),
                    echo: true,
                },
            );
            return None;
        }
        Some((parsed_name.as_str().to_owned(), text))
    }

    /// `rate_limit.routes`: a map, so each route is checked (and reported) under its own key.
    /// When given at all it replaces `default`: an operator who lists routes means exactly those
    /// (an empty table lifts every per-route limit).
    fn route_limits(
        &mut self,
        default: BTreeMap<String, RouteLimit>,
    ) -> BTreeMap<String, RouteLimit> {
        let dotted = self.dotted("routes");
        self.reader.known.push(dotted.clone());
        let table = match self.table.remove("routes") {
            None => return default,
            Some(Value::Table(table)) => table,
            Some(other) => {
                self.reader.refuse(
                    &dotted,
                    &other,
                    Refusal {
                        message: "expected a table of route templates to limits".to_owned(),
                        fix: format!(
                            "write it as a [rate_limit.routes] section with lines such as \
                             \"{CREATE_TRANSACTION_ROUTE}\" = {{ per_second = 20, burst = 40 }}"
                        ),
                        echo: false,
                    },
                );
                return default;
            }
        };
        let mut routes = BTreeMap::new();
        for (route, value) in table {
            let key = format!("{dotted}.{}", toml_string(&route));
            if let Some(limit) = self.route_limit(&key, &route, value) {
                routes.insert(route, limit);
            }
        }
        routes
    }

    /// One `"/route" = { per_second = N, burst = M }` entry; `burst` defaults to `per_second`.
    fn route_limit(&mut self, key: &str, route: &str, value: Value) -> Option<RouteLimit> {
        let reader = &mut *self.reader;
        if !route.starts_with('/') {
            reader.report(
                Severity::Error,
                key,
                None,
                "a route template must start with '/'",
                format!("write it as the path below upstream.base_url, e.g. \"/{route}\""),
            );
            return None;
        }
        if !ROUTE_TEMPLATES.contains(&route) {
            let known: Vec<String> = ROUTE_TEMPLATES.iter().map(|r| (*r).to_owned()).collect();
            let fix = match suggest(route, &known) {
                Some(near) => format!(
                    "did you mean \"{near}\"? The known routes are {}",
                    known.join(", ")
                ),
                None => format!("use one of {}", known.join(", ")),
            };
            reader.report(
                Severity::Error,
                key,
                None,
                "not a route the sidecar knows, so the limit would never apply",
                fix,
            );
            return None;
        }
        let Value::Table(mut table) = value else {
            reader.refuse(
                key,
                &value,
                Refusal {
                    message: "expected a table with per_second and (optionally) burst".to_owned(),
                    fix: format!(
                        "write it as {} = {{ per_second = 20, burst = 40 }}",
                        toml_string(route)
                    ),
                    echo: true,
                },
            );
            return None;
        };
        let per_second_key = format!("{key}.per_second");
        let burst_key = format!("{key}.burst");
        reader.known.push(per_second_key.clone());
        reader.known.push(burst_key.clone());
        if !table.contains_key("per_second") {
            reader.report(
                Severity::Error,
                &per_second_key,
                None,
                "missing required key: a route limit needs its rate",
                "add per_second = 20 to the route's table (burst is optional and defaults to \
                 per_second)",
            );
        }
        // Both at least 1: a route at 0/s would refuse every request to it.
        let mut take = |name: &str, dotted: &str| {
            let value = table.remove(name)?;
            match fields::positive_count_u32(&value) {
                Ok(n) => Some(n),
                Err(refusal) => {
                    let refusal = Refusal {
                        fix: format!(
                            "{}; to lift this route's own limit, remove the route",
                            refusal.fix
                        ),
                        ..refusal
                    };
                    reader.refuse(dotted, &value, refusal);
                    None
                }
            }
        };
        let per_second = take("per_second", &per_second_key);
        let burst = take("burst", &burst_key);
        for (name, value) in table {
            reader.leftovers.push((format!("{key}.{name}"), value));
        }
        let per_second = per_second?;
        Some(RouteLimit {
            per_second,
            burst: burst.unwrap_or(per_second),
        })
    }

    /// One listener's limits, `d` filling what is absent.
    fn listener_limits(&mut self, d: &ListenerLimits) -> ListenerLimits {
        ListenerLimits {
            header_read_timeout: self.field(
                "header_read_timeout",
                fields::duration,
                d.header_read_timeout,
            ),
            idle_timeout: self.field("idle_timeout", fields::duration, d.idle_timeout),
            max_connections: self.field(
                "max_connections",
                fields::positive_count,
                d.max_connections,
            ),
            http2_max_concurrent_streams: self.field(
                "http2_max_concurrent_streams",
                fields::h2_streams,
                d.http2_max_concurrent_streams,
            ),
            http2_keepalive_interval: self.field(
                "http2_keepalive_interval",
                fields::duration_or_zero,
                d.http2_keepalive_interval,
            ),
            http2_keepalive_timeout: self.field(
                "http2_keepalive_timeout",
                fields::duration,
                d.http2_keepalive_timeout,
            ),
            stall_timeout: self.field("stall_timeout", fields::duration_or_zero, d.stall_timeout),
        }
    }

    /// Hands whatever was not taken to the unknown-key report.
    fn finish(self) {
        for (key, value) in self.table {
            self.reader
                .leftovers
                .push((format!("{}.{key}", self.name), value));
        }
    }
}

// --- helpers ---

/// The value as TOML for a problem message: scalars only (a table or array could hold
/// anything), cut to a readable length.
fn echo(value: &Value) -> Option<String> {
    if matches!(value, Value::Table(_) | Value::Array(_)) {
        return None;
    }
    let text = value.to_string();
    Some(if text.chars().count() > MAX_ECHO_CHARS {
        format!(
            "{}...",
            text.chars().take(MAX_ECHO_CHARS).collect::<String>()
        )
    } else {
        text
    })
}

fn toml_string(text: &str) -> String {
    Value::String(text.to_owned()).to_string()
}

fn toml_duration(duration: std::time::Duration) -> String {
    toml_string(&humantime::format_duration(duration).to_string())
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

/// Secret-looking keys anywhere inside an unknown table (or array of tables).
fn secret_keys_within(dotted: &str, value: &Value) -> Vec<String> {
    let mut found = Vec::new();
    match value {
        Value::Table(table) => {
            for (key, inner) in table {
                let nested = format!("{dotted}.{key}");
                if is_secret_key(key) {
                    found.push(nested);
                } else {
                    found.extend(secret_keys_within(&nested, inner));
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                found.extend(secret_keys_within(dotted, item));
            }
        }
        _ => {}
    }
    found
}

/// `auth.token_env` -> `FINCODE_API_TOKEN`; otherwise `FINCODE_<KEY>` from the key's leaf.
fn suggested_var(env_key: &str) -> String {
    if env_key == "auth.token_env" {
        return "FINCODE_API_TOKEN".to_owned();
    }
    let leaf = env_key.rsplit('.').next().unwrap_or(env_key);
    format!(
        "FINCODE_{}",
        leaf.trim_end_matches("_env").to_ascii_uppercase()
    )
}

/// The known key nearest to an unknown one, if it is near enough to be a typo: compares the
/// last path segment (so `[listen] base_url` finds `upstream.base_url`), preferring the same
/// section on ties.
fn suggest(unknown: &str, known: &[String]) -> Option<String> {
    let (section, leaf) = unknown.rsplit_once('.').unwrap_or(("", unknown));
    let leaf = leaf.to_ascii_lowercase();
    let threshold = (leaf.chars().count() / 3).max(1);
    known
        .iter()
        .filter(|k| k.contains('.') == unknown.contains('.') || !unknown.contains('.'))
        .map(|k| {
            let (k_section, k_leaf) = k.rsplit_once('.').unwrap_or(("", k));
            (edit_distance(&leaf, k_leaf), k_section != section, k)
        })
        .filter(|(distance, _, _)| *distance <= threshold)
        .min_by_key(|(distance, other_section, _)| (*distance, *other_section))
        .map(|(_, _, k)| k.clone())
}

/// Edits between two keys: insertions, deletions, substitutions, and swaps of neighbouring
/// letters (`burts` for `burst`, the commonest typo), each counted as one.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // d[i][j]: edits between the first i letters of a and the first j of b.
    let mut d = vec![vec![0; b.len() + 1]; a.len() + 1];
    d[0] = (0..=b.len()).collect();
    for i in 1..=a.len() {
        d[i][0] = i;
        for j in 1..=b.len() {
            let substitution = d[i - 1][j - 1] + usize::from(a[i - 1] != b[j - 1]);
            let mut best = substitution.min(d[i - 1][j] + 1).min(d[i][j - 1] + 1);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}
