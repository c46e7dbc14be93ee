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
///
/// Byte slices rather than `str::split`: this runs against every template on every
/// request, and `split`'s searcher cost about 5 000 instructions a request where the
/// comparison itself needs a few hundred (`benches/README.md`).
fn matches(template: &str, path: &str) -> bool {
    let (mut want, mut got) = (template.as_bytes(), path.as_bytes());
    loop {
        let (w, want_rest) = segment(want);
        let (g, got_rest) = segment(got);
        let same = if w == b"{id}" {
            !g.is_empty()
        } else {
            w.eq_ignore_ascii_case(g)
        };
        if !same {
            return false;
        }
        match (want_rest, got_rest) {
            (None, None) => return true,
            (Some(w), Some(g)) => (want, got) = (w, g),
            _ => return false,
        }
    }
}

/// The bytes up to the first `/`, and what follows it (`None` when there is no `/`): one
/// step of `split('/')`.
fn segment(bytes: &[u8]) -> (&[u8], Option<&[u8]>) {
    match bytes.iter().position(|byte| *byte == b'/') {
        Some(at) => (&bytes[..at], Some(&bytes[at + 1..])),
        None => (bytes, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plain `split('/')` reading the byte-slice matcher replaced.
    fn split_reading(template: &str, path: &str) -> bool {
        let (mut want, mut got) = (template.split('/'), path.split('/'));
        loop {
            match (want.next(), got.next()) {
                (None, None) => return true,
                (Some("{id}"), Some(segment)) if !segment.is_empty() => {}
                (Some(w), Some(g)) if w.eq_ignore_ascii_case(g) => {}
                _ => return false,
            }
        }
    }

    /// The byte-slice matcher against the `split('/')` reading it replaced.
    #[test]
    fn matching_agrees_with_splitting_on_slashes() {
        let paths = [
            "",
            "/",
            "//",
            "/transactionmanagement",
            "/transactionmanagement/",
            "/transactionmanagement/transactions",
            "/transactionmanagement/transactions/",
            "/transactionmanagement/transactions/x",
            "/transactionmanagement/transactions//",
            "/transactionmanagement/transactions/x/",
            "/TRANSACTIONMANAGEMENT/Transactions/é",
            "transactionmanagement/transactions/x",
            "/transactionmanagement/create-transaction",
            "/transactionmanagement/create-transaction/x",
            "/customer",
            "/é/é",
        ];
        for template in templates() {
            for path in paths {
                assert_eq!(
                    matches(template, path),
                    split_reading(template, path),
                    "{template} {path}"
                );
            }
        }
    }

    proptest::proptest! {
        /// Paths made of the templates' own segments, empty ones and odd ones, in any case.
        #[test]
        fn matching_agrees_with_splitting_on_any_path(
            segments in proptest::collection::vec(
                proptest::sample::select(vec![
                    "", "transactionmanagement", "Transactions", "create-transaction",
                    "CUSTOMER", "x", "é", "{id}", "webhook",
                ]),
                0..6,
            ),
        ) {
            let path = segments.join("/");
            for template in templates() {
                proptest::prop_assert_eq!(
                    matches(template, &path),
                    split_reading(template, &path),
                    "{} {}", template, path
                );
            }
        }
    }

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
