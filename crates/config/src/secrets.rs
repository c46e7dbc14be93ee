//! Secrets: recognising one written into the file (refused, never echoed), and reading the
//! ones the configuration names from the environment, in one place.

use secrecy::SecretString;

use crate::env::Env;
use crate::problem::{Problem, Severity, Source};
use crate::schema::{AuthMode, Config, StoreBackend};

/// Fragments that make a key name look like it holds a secret. Deliberately broad: a false
/// positive costs a rename, a false negative leaks a credential into a ConfigMap.
const SECRET_FRAGMENTS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "private_key",
    "privatekey",
    "credential",
];

/// Header names whose values are credentials even though the name holds no secret fragment.
const CREDENTIAL_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "x-auth-token",
    "x-api-key",
];

/// The longest environment variable name we accept; real names are short, and a long "name" is
/// more likely a pasted secret.
const MAX_ENV_NAME_LEN: usize = 128;

/// Whether a config key (one path segment) looks like it would hold a secret value.
///
/// `*_env` keys are exempt: they hold the *name* of the variable with the secret, which is the
/// pattern we want people to use.
pub(crate) fn is_secret_key(key: &str) -> bool {
    let lower = key.to_ascii_lowercase().replace('-', "_");
    !lower.ends_with("_env") && has_secret_fragment(&lower)
}

/// Whether sending a header with this name would mean writing a credential in the file.
pub(crate) fn is_credential_header(name: &str, auth_header: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower == auth_header.to_ascii_lowercase()
        || CREDENTIAL_HEADERS.contains(&lower.as_str())
        || has_secret_fragment(&lower.replace('-', "_"))
}

/// Whether `name` is a plausible environment variable name (`^[A-Za-z_][A-Za-z0-9_]*$`, at most
/// 128 characters). Anything else in a `*_env` key is probably the secret itself.
pub(crate) fn is_env_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    name.len() <= MAX_ENV_NAME_LEN
        && (first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn has_secret_fragment(lower: &str) -> bool {
    // "pin" only as a whole word: as a substring it would flag "shipping" and "ping".
    SECRET_FRAGMENTS.iter().any(|f| lower.contains(f))
        || lower
            .split(|c: char| !c.is_ascii_alphanumeric())
            .any(|word| word == "pin")
}

/// Every secret the configuration names, read from the environment once.
///
/// [`Config::secrets`] is the one place that reads a `*_env` variable and says "not set":
/// `check`, `run`, a reload and the tools that open the store all go through it, so they
/// refuse the same configurations. A field is `None` when the configuration names no
/// variable for it, or does not use it (webhook secrets while webhooks are off). `Debug`
/// shows no value.
#[derive(Debug, Default)]
pub struct Secrets {
    /// `auth.token_env`, in static mode.
    pub api_token: Option<SecretString>,
    /// `auth.email_env`, in login mode.
    pub login_email: Option<SecretString>,
    /// `auth.password_env`, in login mode.
    pub login_password: Option<SecretString>,
    /// `auth.public_key_env`, in login mode (not secret, but read the same way).
    pub public_key: Option<SecretString>,
    /// `webhooks.secret_envs`, in order, when webhooks are on.
    pub webhook_secrets: Vec<SecretString>,
    /// `webhooks.signing_secret_env`, when webhooks are on.
    pub webhook_signing_secret: Option<SecretString>,
    /// `webhooks.admin_token_env`, when webhooks are on.
    pub admin_token: Option<SecretString>,
    /// `audit.signing_key_env`, when the trail is on.
    pub audit_signing_key: Option<SecretString>,
    /// `redact.hash_key_env`: the redactor needs it whenever it is named.
    pub hash_key: Option<SecretString>,
    /// `store.password_env`, when the store is opened (see [`Config::secrets`]).
    pub store_password: Option<SecretString>,
}

/// Which uses of the configuration the secrets are read for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Needs {
    /// Everything `run` reads.
    Run,
    /// Only the store's password (`store status` and other tools that open the store).
    Store,
}

// === impl Config ===

impl Config {
    /// Reads every secret the configuration uses from `env`: those of the auth mode; the
    /// redactor's hash key; when webhooks are on, their verification, signing and admin
    /// secrets and the store's password (the store is opened only for webhooks); when the
    /// audit trail is on, its signing key.
    ///
    /// Every variable that is unset or blank is reported at once, as a [`Severity::Error`]
    /// naming the key that names it. The values are never read into a problem.
    pub fn secrets(&self, env: &Env) -> Result<Secrets, Vec<Problem>> {
        finish(self.resolve(env, Needs::Run))
    }

    /// Like [`Config::secrets`], but keeps what is set alongside the problems: for the
    /// tools that report on each secret or use only some of them (`preflight`,
    /// `support-bundle`) instead of refusing at the first unset variable. An unset
    /// variable's field is `None` (or missing from `webhook_secrets`, which then holds
    /// the set ones, in order); a [`Problem`] names it, keyed as [`Config::secrets`] keys it.
    pub fn partial_secrets(&self, env: &Env) -> (Secrets, Vec<Problem>) {
        self.resolve(env, Needs::Run)
    }

    /// Like [`Config::secrets`], for the store's password only, whether or not webhooks
    /// are on: for tools that open the store themselves, such as `store status`.
    pub fn store_secrets(&self, env: &Env) -> Result<Secrets, Vec<Problem>> {
        finish(self.resolve(env, Needs::Store))
    }

    /// The problems of [`Config::secrets`]: empty when every variable is set.
    pub fn check_environment(&self, env: &Env) -> Vec<Problem> {
        self.secrets(env).err().unwrap_or_default()
    }

    /// The problems of [`Config::store_secrets`].
    pub fn check_store_environment(&self, env: &Env) -> Vec<Problem> {
        self.store_secrets(env).err().unwrap_or_default()
    }

    fn resolve(&self, env: &Env, needs: Needs) -> (Secrets, Vec<Problem>) {
        let mut reader = Reader {
            env,
            problems: Vec::new(),
        };
        let mut secrets = Secrets::default();
        let store_password = match &self.store {
            StoreBackend::Postgres(postgres) => postgres.password_env.as_deref(),
            StoreBackend::Sqlite { .. } => None,
        };
        if needs == Needs::Store {
            secrets.store_password = reader.read("store.password_env", store_password);
            return (secrets, reader.problems);
        }
        let auth = &self.auth;
        match auth.mode {
            AuthMode::None => {}
            AuthMode::Static => {
                secrets.api_token = reader.read("auth.token_env", auth.token_env.as_deref());
            }
            AuthMode::Login => {
                secrets.login_email = reader.read("auth.email_env", auth.email_env.as_deref());
                secrets.login_password =
                    reader.read("auth.password_env", auth.password_env.as_deref());
                secrets.public_key =
                    reader.read("auth.public_key_env", auth.public_key_env.as_deref());
            }
        }
        let webhooks = &self.webhooks;
        if webhooks.enabled {
            for (index, var) in webhooks.secret_envs.iter().enumerate() {
                let key = format!("webhooks.secret_envs[{index}]");
                secrets.webhook_secrets.extend(reader.read(&key, Some(var)));
            }
            secrets.webhook_signing_secret = reader.read(
                "webhooks.signing_secret_env",
                webhooks.signing_secret_env.as_deref(),
            );
            secrets.admin_token = reader.read(
                "webhooks.admin_token_env",
                webhooks.admin_token_env.as_deref(),
            );
        }
        if self.audit.enabled {
            secrets.audit_signing_key = reader.read(
                "audit.signing_key_env",
                self.audit.signing_key_env.as_deref(),
            );
        }
        secrets.hash_key = reader.read("redact.hash_key_env", self.redact.hash_key_env.as_deref());
        if webhooks.enabled {
            secrets.store_password = reader.read("store.password_env", store_password);
        }
        (secrets, reader.problems)
    }
}

/// Reads variables, noting each one that is not set.
struct Reader<'e> {
    env: &'e Env,
    problems: Vec<Problem>,
}

impl Reader<'_> {
    /// The value of `var` (named by `key`), if one is named; a problem when it is unset or
    /// blank. Names only: the value is never read into a problem.
    fn read(&mut self, key: &str, var: Option<&str>) -> Option<SecretString> {
        let var = var?;
        if let Some(value) = self.env.get(var).filter(|value| !value.trim().is_empty()) {
            return Some(SecretString::from(value.to_owned()));
        }
        self.problems.push(Problem {
            severity: Severity::Error,
            key: key.to_owned(),
            source: Source::File,
            value: Some(toml::Value::String(var.to_owned()).to_string()),
            message: format!("environment variable {var} (named by {key}) is not set"),
            fix: format!("set {var} in the sidecar's environment (e.g. from a Kubernetes Secret)"),
        });
        None
    }
}

/// The secrets when every variable is set, else every problem.
fn finish((secrets, problems): (Secrets, Vec<Problem>)) -> Result<Secrets, Vec<Problem>> {
    if problems.is_empty() {
        Ok(secrets)
    } else {
        Err(problems)
    }
}
