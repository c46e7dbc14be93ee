//! Typed configuration for `fincode-sidecar`.
//!
//! The sidecar reads one TOML file (every key is documented, with its default, in
//! `config.example.toml`), overlays environment variables named
//! `FINCODE_SIDECAR__<SECTION>__<KEY>` (so a Kubernetes manifest can change one setting without a
//! new ConfigMap), and validates the result into plain data once at start-up.
//!
//! Three promises shape the API:
//!
//! - **Secrets are never in the file.** The file names environment variables
//!   (`auth.token_env = "FINCODE_API_TOKEN"`); a secret-looking key, a credential header or a URL
//!   with a password is refused, and the offending value is never echoed.
//! - **Every problem at once.** [`ConfigError::Invalid`] lists all of them, each with the key, the
//!   value (when safe to show), where it came from (file or variable) and the fix.
//! - **Defaults in one place**: the `Default` impls, which `config.example.toml` is tested against.
//!
//! ```
//! use fincode_config::{Config, Env};
//!
//! let env = Env::from_pairs([("FINCODE_SIDECAR__LOG__FORMAT", "text")]);
//! let (config, warnings) = Config::from_toml_str(
//!     "[upstream]\nbase_url = \"https://acme.fincode.tech/api/v6/services/\"\n",
//!     &env,
//! )?;
//! assert_eq!(config.upstream.base_url, "https://acme.fincode.tech/api/v6/services");
//! assert_eq!(config.log.format, fincode_config::LogFormat::Text);
//! // auth.mode defaults to "none", which works but deserves a warning.
//! assert_eq!(warnings[0].key, "auth.mode");
//! # Ok::<(), fincode_config::ConfigError>(())
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod de;
mod env;
mod load;
mod problem;
mod rules;
mod schema;
mod secrets;
mod template;
mod types;

pub use env::Env;
pub use problem::{ConfigError, Problem, Severity, Source};
pub use schema::{
    AuditConfig, AuditFsync, AuthConfig, AuthMode, BodyLevel, BreakerConfig,
    CREATE_TRANSACTION_ROUTE, Config, FieldAction, HmacAlgorithm, HmacEncoding, LimitsConfig,
    ListenConfig, ListenerLimits, ListenersConfig, LogConfig, LogFormat, OaepMgf1,
    PostgresStoreConfig, ROUTE_TEMPLATES, RateLimitConfig, RedactConfig, RetryConfig, RouteLimit,
    ShutdownConfig, StoreBackend, StoreTls, TracesConfig, UpstreamConfig, WebhookScheme,
    WebhooksConfig,
};
pub use secrets::Secrets;
pub use template::{KeyTemplate, TemplateError};

#[cfg(test)]
mod tests;
