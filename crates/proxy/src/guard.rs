//! The guard: requests the sidecar refuses to forward at all, answered before they
//! cost a slot, a token of the rate limit or a breaker sample.
//!
//! - A path the ingress layer refused ([`PathRefused`]): 400 `bad_path`.
//! - FinCode's security management (`/securitymanagement/*`: login, refresh-token,
//!   logout) when the sidecar owns the credentials (`auth.mode` `login` or `static`):
//!   403 `forbidden_route`. The app has no credentials to log in with, and a logout
//!   through the sidecar would carry the sidecar's own token and revoke it under every
//!   other request: in login mode until the next login, in static mode (a dashboard
//!   token, which no refresh brings back) until an operator mints a new one. With
//!   `auth.mode = "none"` the app manages its own credentials and these routes pass.
//!
//! It runs on the normalised path, case-insensitively and with or without the base
//! path, so `/SecurityManagement//logout` and `/api/v6/services/securitymanagement/logout`
//! are the same route here as they may be to FinCode.

use std::sync::Arc;

use http::Request;

use crate::{
    ErrorKind, SidecarError,
    check::{Check, CheckLayer, Checked},
    path::PathRefused,
};

/// The FinCode service that issues and revokes tokens.
const SECURITY_MANAGEMENT: &str = "securitymanagement";

/// Adds [`Guard`] to a stack.
pub type GuardLayer = CheckLayer<Arc<Rules>>;

/// Refuses bad paths and routes reserved for the sidecar.
pub type Guard<S> = Checked<S, Arc<Rules>>;

/// What the guard refuses; built by [`GuardLayer::new`].
#[derive(Debug)]
pub struct Rules {
    /// `upstream.base_url`'s path, without the trailing `/`.
    base_path: String,
    /// Whether the sidecar owns the credentials (security management is refused).
    owns_credentials: bool,
    /// The configured login, refresh and logout paths (they may lie outside
    /// `/securitymanagement`), without a trailing `/`.
    auth_paths: Vec<String>,
}

// === impl GuardLayer ===

impl GuardLayer {
    /// `base_path` is `upstream.base_url`'s path; `auth_paths` the configured login,
    /// refresh and logout paths, refused (with `/securitymanagement/*`) when
    /// `owns_credentials`.
    pub fn new<'a>(
        base_path: &str,
        owns_credentials: bool,
        auth_paths: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        Self {
            check: Arc::new(Rules {
                base_path: base_path.trim_end_matches('/').to_owned(),
                owns_credentials,
                auth_paths: auth_paths
                    .into_iter()
                    .map(|p| p.trim_end_matches('/').to_owned())
                    .collect(),
            }),
        }
    }
}

// === impl Rules ===

impl Rules {
    fn verify<B>(&self, req: &Request<B>) -> Result<(), SidecarError> {
        if let Some(PathRefused(why)) = req.extensions().get::<PathRefused>() {
            return Err(SidecarError::new(ErrorKind::BadPath, why.to_string()));
        }
        if self.owns_credentials && self.is_reserved(req.uri().path()) {
            return Err(SidecarError::new(
                ErrorKind::ForbiddenRoute,
                "the sidecar owns the FinCode credentials (auth.mode): it logs in, refreshes \
                 and logs out itself, so the app may not call /securitymanagement/*",
            ));
        }
        Ok(())
    }

    /// Whether `path` (normalised) is a security-management route, below the base path
    /// or not, in any letter case.
    fn is_reserved(&self, path: &str) -> bool {
        let path = path.trim_end_matches('/');
        let below = crate::path::strip_base(path, &self.base_path).unwrap_or(path);
        let first = below
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or("");
        first.eq_ignore_ascii_case(SECURITY_MANAGEMENT)
            || self
                .auth_paths
                .iter()
                .any(|p| below.eq_ignore_ascii_case(p))
    }
}

impl<B> Check<B> for Rules {
    type Body = B;

    fn check(&self, req: Request<B>) -> Result<Request<B>, SidecarError> {
        self.verify(&req)?;
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path::PathError;

    fn rules(owns_credentials: bool) -> Rules {
        Rules {
            base_path: "/api/v6/services".to_owned(),
            owns_credentials,
            auth_paths: vec!["/auth/v2/login".to_owned()],
        }
    }

    fn check(rules: &Rules, path: &str) -> Result<(), ErrorKind> {
        let req = Request::put(path).body(()).unwrap();
        rules.verify(&req).map_err(|e| e.kind())
    }

    #[test]
    fn security_management_is_reserved_when_the_sidecar_owns_credentials() {
        let rules = rules(true);
        for path in [
            "/securitymanagement/logout",
            "/securitymanagement/login",
            "/securitymanagement/refresh-token",
            "/securitymanagement",
            "/securitymanagement/",
            "/SecurityManagement/LOGOUT",
            "/api/v6/services/securitymanagement/logout",
            "/API/V6/Services/securitymanagement/logout",
            "/auth/v2/login",
            "/api/v6/services/auth/v2/login/",
        ] {
            assert_eq!(
                check(&rules, path),
                Err(ErrorKind::ForbiddenRoute),
                "{path}"
            );
        }
        for path in [
            "/transactionmanagement/transactions",
            "/securitymanagementx/logout",
            "/transactionmanagement/securitymanagement",
            "/auth/v2/login-history",
            "/api/v6/servicessecuritymanagement/logout",
            "/",
        ] {
            assert_eq!(check(&rules, path), Ok(()), "{path}");
        }
    }

    #[test]
    fn security_management_passes_when_the_app_owns_credentials() {
        assert_eq!(check(&rules(false), "/securitymanagement/logout"), Ok(()));
    }

    #[test]
    fn refused_paths_get_bad_path_with_the_reason() {
        let mut req = Request::get("/a/..;/b").body(()).unwrap();
        req.extensions_mut()
            .insert(PathRefused(PathError::PathParameter));
        let error = rules(false).verify(&req).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::BadPath);
        assert!(error.detail().contains("';'"), "{}", error.detail());
    }
}
