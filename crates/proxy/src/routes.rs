//! Route templates: the bounded names requests are counted, limited and audited under.
//!
//! A metric label or a log field must never be a raw path (ids make cardinality
//! unbounded and can be personal data), so every path maps to one of a fixed set of
//! templates such as `/transactionmanagement/transactions/{id}`, or to `other`.

/// The FinCode routes the sidecar knows by name (defined with the config, which
/// validates `rate_limit.routes` against them). `{id}` matches one path segment.
const TEMPLATES: [&str; 8] = fincode_config::ROUTE_TEMPLATES;

/// The known template spelled `route`, as the `'static` label value it is counted under.
pub fn known(route: &str) -> Option<&'static str> {
    TEMPLATES
        .iter()
        .copied()
        .find(|template| *template == route)
}

/// Every known template, for error messages.
pub fn templates() -> &'static [&'static str] {
    &TEMPLATES
}

/// The template for paths that match none.
pub const OTHER: &str = "other";

/// The create-transaction route, whose business outcome is counted.
pub const CREATE_TRANSACTION: &str = fincode_config::CREATE_TRANSACTION_ROUTE;

/// Maps request paths to route templates.
#[derive(Clone, Debug)]
pub struct RouteTable {
    base_path: String,
}

/// The route template of a request, stored in its extensions by the observe layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route(pub &'static str);

// === impl RouteTable ===

impl RouteTable {
    /// A table for an upstream whose base path is `base_path` (`/api/v6/services`); the
    /// app may call paths with or without it.
    pub fn new(base_path: &str) -> Self {
        Self {
            base_path: base_path.trim_end_matches('/').to_owned(),
        }
    }

    /// The template for `path`, or [`OTHER`]; letter case is ignored.
    pub fn template(&self, path: &str) -> &'static str {
        let path = crate::path::strip_base(path, &self.base_path).unwrap_or(path);
        let path = path.trim_end_matches('/');
        TEMPLATES
            .iter()
            .find(|template| matches(template, path))
            .copied()
            .unwrap_or(OTHER)
    }
}

/// Segment by segment, in any ASCII letter case (as the guard reads paths): a path that
/// FinCode may route like a template must count, and be limited, as that template.
fn matches(template: &str, path: &str) -> bool {
    let mut want = template.split('/');
    let mut got = path.split('/');
    loop {
        match (want.next(), got.next()) {
            (None, None) => return true,
            (Some("{id}"), Some(segment)) if !segment.is_empty() => {}
            (Some(w), Some(g)) if w.eq_ignore_ascii_case(g) => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_paths_to_bounded_templates() {
        let table = RouteTable::new("/api/v6/services");
        assert_eq!(
            table.template("/transactionmanagement/transactions/TXN-42"),
            "/transactionmanagement/transactions/{id}"
        );
        assert_eq!(
            table.template("/api/v6/services/transactionmanagement/create-transaction"),
            CREATE_TRANSACTION
        );
        assert_eq!(
            table.template("/transactionmanagement/transactions/"),
            "/transactionmanagement/transactions"
        );
        assert_eq!(
            table.template("/transactionmanagement/transactions/a/b"),
            OTHER
        );
        assert_eq!(table.template("/customer/4111111111111111"), OTHER);
        assert_eq!(table.template("/"), OTHER);
    }

    /// The guard reads paths in any letter case; so must the route, or
    /// `/TransactionManagement/Create-Transaction` escapes create-transaction's rate limit.
    #[test]
    fn templates_and_the_base_path_match_in_any_letter_case() {
        let table = RouteTable::new("/api/v6/services");
        for path in [
            "/TransactionManagement/Create-Transaction",
            "/TRANSACTIONMANAGEMENT/CREATE-TRANSACTION/",
            "/API/V6/Services/transactionmanagement/create-transaction",
            "/Api/v6/SERVICES/TransactionManagement/create-TRANSACTION",
        ] {
            assert_eq!(table.template(path), CREATE_TRANSACTION, "{path}");
        }
        assert_eq!(
            table.template("/TransactionManagement/Transactions/TXN-42"),
            "/transactionmanagement/transactions/{id}"
        );
        assert_eq!(
            table.template("/api/v6/servicesX/transactionmanagement/create-transaction"),
            OTHER,
            "the base path ends at a segment boundary"
        );
        assert_eq!(
            table.template("/transactionmanagement/create-transactioN2"),
            OTHER
        );
        // Non-ASCII never matches an ASCII template (and never panics mid-character).
        assert_eq!(
            table.template("/transactionmanagement/créate-transaction"),
            OTHER
        );
        assert_eq!(table.template("/é"), OTHER);
        assert_eq!(
            RouteTable::new("/api/v6/services").template("/api/v6/servicé"),
            OTHER
        );
    }
}
