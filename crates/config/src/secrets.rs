//! Recognising secrets, so that a secret written into the file is refused and never echoed.

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
