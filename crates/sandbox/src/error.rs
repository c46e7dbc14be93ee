//! The one error type the library returns.

/// Why the sandbox could not start, or why a test helper failed.
///
/// Variants are coarse on purpose: callers are tests and the demo command, which report the
/// message rather than recover from a specific cause.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SandboxError {
    /// A file or socket operation failed; `context` says which one.
    #[error("{context}")]
    Io {
        /// What the sandbox was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The CA or leaf certificate could not be generated.
    #[error("certificate generation failed")]
    Certificate(#[from] rcgen::Error),
    /// The rustls server configuration was rejected.
    #[error("TLS configuration failed")]
    Tls(#[from] rustls::Error),
    /// The RSA login key could not be generated, read, written or used.
    #[error("RSA key error: {0}")]
    Key(String),
    /// The configuration asks for something the sandbox refuses to do.
    #[error("invalid sandbox configuration: {0}")]
    Config(String),
}

impl SandboxError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}
