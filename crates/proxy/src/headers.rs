//! Hop-by-hop header hygiene (RFC 9110 section 7.6.1) and sensitive-header marking.
//!
//! Hop-by-hop headers describe one connection, not the message: forwarding them would
//! let the app (or FinCode) control the sidecar's pooled connections, e.g. a
//! `Connection: close` that tears down a pooled TLS connection on every call.
//!
//! The app's `Connection` header is handled once, at ingress, before any layer reads the
//! request: the layers decide on the headers FinCode will see (the retry layer repeats a
//! POST because it carries `X-Idempotency-Key`), so nothing may remove a header after
//! that decision. And a `Connection` header naming a header the sidecar manages (the
//! idempotency key, the credential, correlation and trace headers) never removes it:
//! otherwise `Connection: x-idempotency-key` turns a keyed, retried POST into several
//! keyless ones, i.e. several payments. Towards FinCode only the fixed list is
//! stripped; FinCode's responses lose their hop-by-hop headers, `Connection`-listed ones
//! included, before the app sees them.

use http::{HeaderMap, HeaderName, header};

/// Headers that are always connection-specific (plus every `Proxy-*` header). A `static`:
/// a `const` array of `HeaderName`s is built and dropped again at every use, and this one
/// is read for every header of every request.
static HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
    HeaderName::from_static("keep-alive"),
];

/// Headers the sidecar always manages, whatever the config says.
const ALWAYS_MANAGED: [&str; 7] = [
    "x-idempotency-key",
    "x-auth-token",
    "authorization",
    "x-request-id",
    "x-correlation-id",
    "traceparent",
    "tracestate",
];

/// Request headers whose values are secrets: marked sensitive so HTTP/2 (HPACK) never
/// puts them in a compression table, where a compression oracle could guess them.
const ALWAYS_SENSITIVE: [HeaderName; 5] = [
    HeaderName::from_static("password"),
    HeaderName::from_static("pin"),
    header::COOKIE,
    header::AUTHORIZATION,
    HeaderName::from_static("x-auth-token"),
];

/// The headers a `Connection` header can never remove, and the ones marked sensitive,
/// built once from the config.
#[derive(Clone, Debug)]
pub struct HeaderPolicy {
    managed: Vec<HeaderName>,
    sensitive: Vec<HeaderName>,
}

// === impl HeaderPolicy ===

impl HeaderPolicy {
    /// The fixed managed set plus `managed` (the configured credential header, the
    /// device-id header, `platform` and the other static headers the sidecar adds);
    /// `credential` (`auth.header`) is also marked sensitive.
    pub fn new(managed: impl IntoIterator<Item = HeaderName>, credential: &HeaderName) -> Self {
        let mut names: Vec<HeaderName> = ALWAYS_MANAGED
            .iter()
            .map(|name| HeaderName::from_static(name))
            .collect();
        for name in managed.into_iter().chain([credential.clone()]) {
            if !names.contains(&name) {
                names.push(name);
            }
        }
        let mut sensitive = ALWAYS_SENSITIVE.to_vec();
        if !sensitive.contains(credential) {
            sensitive.push(credential.clone());
        }
        Self {
            managed: names,
            sensitive,
        }
    }

    /// Whether `name` is a header the sidecar manages.
    pub fn is_managed(&self, name: &HeaderName) -> bool {
        self.managed.contains(name)
    }

    /// At ingress: removes `Connection`, every header it names that the sidecar does not
    /// manage, the fixed hop-by-hop list and `Proxy-*`; marks secret headers sensitive.
    pub fn apply(&self, headers: &mut HeaderMap) {
        if headers.contains_key(header::CONNECTION) {
            // Collected first: the names borrow the map. Only requests with a
            // `Connection` header pay for the allocation.
            let listed: Vec<HeaderName> = connection_listed(headers)
                .filter(|name| !self.is_managed(name))
                .collect();
            for name in &listed {
                headers.remove(name);
            }
        }
        strip_fixed(headers);
        mark_sensitive(headers, &self.sensitive);
    }
}

/// The header names a `Connection` header lists (unparsable entries skipped).
fn connection_listed(headers: &HeaderMap) -> impl Iterator<Item = HeaderName> + '_ {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
}

/// Removes the fixed hop-by-hop headers and every `Proxy-*` header; what the upstream
/// client does to a request (the app's `Connection` list was handled at ingress).
///
/// One look at the names first: this runs three times per call and almost never finds
/// anything, and a pass over a handful of names costs less than a hashed `remove` for
/// each of the eight fixed ones.
pub(crate) fn strip_fixed(headers: &mut HeaderMap) {
    // Found names are removed one at a time (each `remove` takes every value of its
    // name): there are none or one or two (FinCode's `Connection`), so a new look per
    // name costs less than a list allocated for them.
    while let Some(name) = headers
        .keys()
        .find(|name| is_fixed_hop_by_hop(name))
        .cloned()
    {
        headers.remove(&name);
    }
}

/// In the fixed hop-by-hop list, or a `Proxy-*` header.
fn is_fixed_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name) || name.as_str().starts_with("proxy-")
}

/// FinCode's response: the fixed list, `Proxy-*`, and every header its `Connection`
/// header names (FinCode manages nothing of ours), before the app sees it.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let mut connection = headers.get_all(header::CONNECTION).iter();
    match (connection.next(), connection.next()) {
        (None, _) => {}
        // The usual case, one `Connection` line (`keep-alive`): taken out, and its names
        // removed straight from it.
        (Some(_), None) => {
            if let Some(line) = headers.remove(header::CONNECTION) {
                // By `&str`: looked up without a name allocated (an invalid one finds
                // nothing).
                for name in line.to_str().into_iter().flat_map(|v| v.split(',')) {
                    headers.remove(name.trim());
                }
            }
        }
        (Some(_), Some(_)) => {
            let listed: Vec<HeaderName> = connection_listed(headers).collect();
            for name in &listed {
                headers.remove(name);
            }
        }
    }
    strip_fixed(headers);
}

/// Marks every value of the headers `names` sensitive (HPACK never indexes them): one
/// pass over the values, no hashing and nothing allocated.
pub(crate) fn mark_sensitive(headers: &mut HeaderMap, names: &[HeaderName]) {
    for (name, value) in headers.iter_mut() {
        if names.contains(name) {
            value.set_sensitive(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn policy() -> HeaderPolicy {
        HeaderPolicy::new(
            [
                HeaderName::from_static("platform"),
                HeaderName::from_static("uuid"),
            ],
            &HeaderName::from_static("x-fincode-key"),
        )
    }

    /// A header map from an HTTP head's header lines, `name: value` one a line, in
    /// order (a repeated name is appended).
    fn head(lines: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for line in lines.lines() {
            let (name, value) = line.trim().split_once(": ").unwrap();
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        headers
    }

    /// Runs `strip` over the head's headers and checks that only `kept` is left.
    fn assert_only_kept(lines: &str, strip: impl FnOnce(&mut HeaderMap), kept: (&str, &str)) {
        let mut headers = head(lines);
        strip(&mut headers);
        assert_eq!(headers.len(), 1, "{headers:?}");
        assert_eq!(headers[kept.0], kept.1);
    }

    #[test]
    fn response_side_strips_standard_and_connection_listed_headers() {
        assert_only_kept(
            "connection: close, x-private
             x-private: 1
             keep-alive: timeout=5
             te: trailers
             transfer-encoding: chunked
             proxy-connection: keep-alive
             proxy-status: x
             x-kept: yes",
            strip_hop_by_hop,
            ("x-kept", "yes"),
        );
    }

    /// What `strip_hop_by_hop` did before it avoided allocating: every listed name
    /// collected first, then removed, then the fixed list.
    fn strip_hop_by_hop_reference(headers: &mut HeaderMap) {
        let listed: Vec<HeaderName> = connection_listed(headers).collect();
        for name in &listed {
            headers.remove(name);
        }
        let fixed: Vec<HeaderName> = headers
            .keys()
            .filter(|name| is_fixed_hop_by_hop(name))
            .cloned()
            .collect();
        for name in &fixed {
            headers.remove(name);
        }
    }

    proptest::proptest! {
        /// Any mix of `Connection` lines (none, one, several; listed names in any case,
        /// blank and invalid entries) and other headers: the same headers are left as
        /// with the reference.
        #[test]
        fn response_stripping_matches_the_reference(
            lines in proptest::collection::vec(
                (
                    proptest::sample::select(vec![
                        "connection", "keep-alive", "x-a", "x-b", "te", "proxy-x",
                        "upgrade", "x-kept", "content-type",
                    ]),
                    proptest::sample::select(vec![
                        "keep-alive", "close", "x-a", "X-B, x-a", " , te", "a b, x-b",
                        "upgrade,x-kept", "1",
                    ]),
                ),
                0..8,
            )
        ) {
            let mut headers = HeaderMap::new();
            for (name, value) in &lines {
                headers.append(
                    HeaderName::from_static(name),
                    HeaderValue::from_static(value),
                );
            }
            let mut expected = headers.clone();
            strip_hop_by_hop_reference(&mut expected);
            strip_hop_by_hop(&mut headers);
            proptest::prop_assert_eq!(headers, expected);
        }
    }

    #[test]
    fn ingress_keeps_managed_headers_named_in_connection() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static(
                "keep-alive, X-Idempotency-Key, x-auth-token, Authorization, x-request-id, \
                 x-correlation-id, traceparent, tracestate, platform, uuid, x-fincode-key",
            ),
        );
        headers.extend(head(
            "x-idempotency-key: v
             x-auth-token: v
             authorization: v
             x-request-id: v
             x-correlation-id: v
             traceparent: v
             tracestate: v
             platform: v
             uuid: v
             x-fincode-key: v",
        ));
        policy().apply(&mut headers);
        assert_eq!(headers.len(), 10, "{headers:?}");
        assert!(!headers.contains_key(header::CONNECTION));
    }

    #[test]
    fn ingress_strips_connection_listed_and_fixed_hop_by_hop_headers() {
        assert_only_kept(
            "connection: x-a, , bad name
             Connection: X-B
             x-a: 1
             x-b: 1
             upgrade: h2c
             trailer: x
             proxy-authorization: x
             proxy-connection: x
             x-idempotency-key: k",
            |headers| policy().apply(headers),
            ("x-idempotency-key", "k"),
        );
    }

    #[test]
    fn upstream_side_strips_only_the_fixed_list() {
        assert_only_kept(
            "connection: x-idempotency-key
             x-idempotency-key: k
             proxy-authorization: x",
            strip_fixed,
            ("x-idempotency-key", "k"),
        );
    }

    #[test]
    fn secrets_are_marked_sensitive_and_others_not() {
        let mut headers = head(
            "password: enc-pin
             cookie: a=1
             cookie: b=2
             x-fincode-key: t
             pin: 1234
             x-idempotency-key: k",
        );
        policy().apply(&mut headers);
        for (name, value) in &headers {
            assert_eq!(value.is_sensitive(), name != "x-idempotency-key", "{name}");
        }
        assert_eq!(headers.get_all(header::COOKIE).iter().count(), 2);
    }
}
