//! What is wrong with a configuration, said so an operator can fix it in one pass.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

/// How bad a [`Problem`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The sidecar refuses to start with this configuration.
    Error,
    /// The sidecar starts, but the operator should know (usually a weaker security posture).
    Warning,
}

/// Where a configuration value came from, so the operator edits the right place.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The TOML file (or a default, when the key was not given at all).
    File,
    /// The `FINCODE_SIDECAR__*` environment variable with this name.
    Env(String),
}

/// One thing wrong with a configuration: the key, the offending value and how to fix it.
///
/// Never carries a secret: `value` is `None` whenever the value might be one (secret-looking keys,
/// URLs with user info, `*_env` values that are not variable names, unknown keys, tables), and
/// `message`/`fix` are written without the value. `Debug` and `Display` are therefore safe to log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// Whether the sidecar can still start.
    pub severity: Severity,
    /// The dotted key, e.g. `upstream.base_url`.
    pub key: String,
    /// Where the value came from.
    pub source: Source,
    /// The offending value as TOML (e.g. `"five"`, `-1`), or `None` when it may be secret or
    /// there is no single value to show.
    pub value: Option<String>,
    /// What is wrong.
    pub message: String,
    /// What to do about it.
    pub fix: String,
}

/// A configuration that cannot be used, with everything wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all.
    #[error("error: cannot read config file {}: {source}\n  fix: check the path and that the sidecar's user can read it", path.display())]
    Read {
        /// The path that was tried.
        path: PathBuf,
        /// Why the OS refused.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML. Nothing else is checked, since nothing else can be trusted.
    #[error("error: {}line {line}, column {column}: invalid TOML: {message}\n  fix: fix the TOML syntax", path.as_ref().map(|p| format!("{}: ", p.display())).unwrap_or_default())]
    Syntax {
        /// The file, when loaded from one.
        path: Option<PathBuf>,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column (in characters) of the error.
        column: usize,
        /// The parser's description, without the source line (which could hold a secret).
        message: String,
    },
    /// The file parsed but the configuration is invalid. Holds every problem found, errors
    /// first, warnings after, so one run shows the operator everything to fix.
    #[error("{}", ProblemList(problems))]
    Invalid {
        /// All problems found; at least one is an [`Severity::Error`].
        problems: Vec<Problem>,
    },
}

// === impl Problem ===

impl Problem {
    /// Whether this problem stops the sidecar from starting.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Error => "error",
            Self::Warning => "warning",
        })
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.severity, self.key)?;
        if let Source::Env(var) = &self.source {
            write!(f, " (from {var})")?;
        }
        if let Some(value) = &self.value {
            write!(f, " = {value}")?;
        }
        write!(f, ": {}\n  fix: {}", self.message, self.fix)
    }
}

// === impl ConfigError ===

impl ConfigError {
    /// The validation problems, errors first; empty for [`ConfigError::Read`] and
    /// [`ConfigError::Syntax`], which stop loading before validation.
    pub fn problems(&self) -> &[Problem] {
        match self {
            Self::Invalid { problems } => problems,
            Self::Read { .. } | Self::Syntax { .. } => &[],
        }
    }
}

struct ProblemList<'a>(&'a [Problem]);

impl fmt::Display for ProblemList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let errors = self.0.iter().filter(|p| p.is_error()).count();
        let warnings = self.0.len() - errors;
        write!(
            f,
            "invalid configuration: {errors} error{}, {warnings} warning{}",
            plural(errors),
            plural(warnings)
        )?;
        for problem in self.0 {
            write!(f, "\n{problem}")?;
        }
        Ok(())
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
