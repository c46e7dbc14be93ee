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

/// Whether FinCode's business outcome (`"status"` in the answer) is counted for `route`:
/// the observe layer counts it, and the audit layer hands that layer its scan's verdict
/// for exactly these routes.
pub fn outcome_counted(route: &str) -> bool {
    route == CREATE_TRANSACTION
}

/// Maps request paths to route templates.
#[derive(Clone, Debug)]
pub struct RouteTable {
    base_path: String,
    /// Each template and its segments (the empty one before the leading `/` included),
    /// split once here rather than on every request.
    templates: Vec<(&'static str, Segments<'static>)>,
}

/// No template has more segments than this (`""`, `transactionmanagement`,
/// `transactions`, `{id}`); a path with more is `other` without a comparison.
const MAX_SEGMENTS: usize = 4;

/// A path's segments as `split('/')` gives them, when there are at most
/// [`MAX_SEGMENTS`].
#[derive(Clone, Copy, Debug, Default)]
struct Segments<'a> {
    parts: [&'a [u8]; MAX_SEGMENTS],
    len: usize,
}

// === impl RouteTable ===

impl RouteTable {
    /// A table for an upstream whose base path is `base_path` (`/api/v6/services`); the
    /// app may call paths with or without it.
    pub fn new(base_path: &str) -> Self {
        Self {
            base_path: base_path.trim_end_matches('/').to_owned(),
            templates: TEMPLATES
                .iter()
                .map(|template| {
                    let segments = Segments::of(template);
                    debug_assert!(segments.is_some(), "{template} has too many segments");
                    (*template, segments.unwrap_or_default())
                })
                .collect(),
        }
    }

    /// The template for `path`, or [`OTHER`]; letter case is ignored.
    ///
    /// Segment by segment, in any ASCII letter case (as the guard reads paths): a path
    /// that FinCode may route like a template must count, and be limited, as that
    /// template. The path is split once, by bytes: `str::split` against every template
    /// cost about 5 000 instructions a request (`benches/README.md`).
    pub fn template(&self, path: &str) -> &'static str {
        let path = crate::path::strip_base(path, &self.base_path).unwrap_or(path);
        let Some(got) = Segments::of(path.trim_end_matches('/')) else {
            return OTHER;
        };
        self.templates
            .iter()
            .find(|(_, want)| want.matched_by(&got))
            .map_or(OTHER, |(template, _)| template)
    }
}

// === impl Segments ===

impl<'a> Segments<'a> {
    /// `path` split on `/`, or `None` when it has more than [`MAX_SEGMENTS`] segments.
    fn of(path: &'a str) -> Option<Self> {
        let mut segments = Self::default();
        for part in path.as_bytes().split(|byte| *byte == b'/') {
            *segments.parts.get_mut(segments.len)? = part;
            segments.len += 1;
        }
        Some(segments)
    }

    /// Whether these, a template's segments, match `got`'s: as many, and each the same in
    /// any ASCII letter case, `{id}` standing for any non-empty segment.
    fn matched_by(&self, got: &Segments<'_>) -> bool {
        self.len == got.len
            && self.parts[..self.len]
                .iter()
                .zip(&got.parts[..got.len])
                .all(|(want, got)| {
                    if *want == b"{id}" {
                        !got.is_empty()
                    } else {
                        want.eq_ignore_ascii_case(got)
                    }
                })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plain `split('/')` reading, template by template, that the table's one split
    /// of the path replaced.
    fn split_template(path: &str) -> &'static str {
        let path = crate::path::strip_base(path, "/api/v6/services").unwrap_or(path);
        let path = path.trim_end_matches('/');
        let matches = |template: &str| {
            let (mut want, mut got) = (template.split('/'), path.split('/'));
            loop {
                match (want.next(), got.next()) {
                    (None, None) => return true,
                    (Some("{id}"), Some(segment)) if !segment.is_empty() => {}
                    (Some(w), Some(g)) if w.eq_ignore_ascii_case(g) => {}
                    _ => return false,
                }
            }
        };
        templates()
            .iter()
            .find(|template| matches(template))
            .copied()
            .unwrap_or(OTHER)
    }

    #[test]
    fn the_table_agrees_with_splitting_on_slashes() {
        let table = RouteTable::new("/api/v6/services");
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
            "/transactionmanagement/transactions/x/y",
            "/TRANSACTIONMANAGEMENT/Transactions/é",
            "transactionmanagement/transactions/x",
            "/transactionmanagement/create-transaction",
            "/transactionmanagement/create-transaction/x",
            "/api/v6/services/sandbox/ping",
            "/api/v6/services//sandbox/ping",
            "/customer",
            "/é/é",
        ];
        for path in paths {
            assert_eq!(table.template(path), split_template(path), "{path}");
        }
    }

    proptest::proptest! {
        /// Paths made of the templates' own segments, the base path's, empty ones and odd
        /// ones, in any case.
        #[test]
        fn the_table_agrees_with_splitting_on_any_path(
            segments in proptest::collection::vec(
                proptest::sample::select(vec![
                    "", "transactionmanagement", "Transactions", "create-transaction",
                    "CUSTOMER", "x", "é", "{id}", "webhook", "sandbox", "PING", "api", "v6",
                    "services",
                ]),
                0..8,
            ),
        ) {
            let path = segments.join("/");
            let table = RouteTable::new("/api/v6/services");
            proptest::prop_assert_eq!(table.template(&path), split_template(&path), "{}", path);
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
