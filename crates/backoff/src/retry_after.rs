//! `Retry-After` (RFC 9110 10.2.3): either delay-seconds or an HTTP-date.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, header};

/// How long FinCode asked us to wait, measured from `now`. A date in the past is "now";
/// anything unparseable is ignored (the normal backoff applies), since a malformed
/// header must not stall a request.
pub fn parse(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Absurdly long digit strings saturate instead of failing.
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::RETRY_AFTER, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn seconds_and_dates() {
        let now = httpdate::parse_http_date("Wed, 25 Nov 2026 10:00:00 GMT").unwrap();
        let cases = [
            ("0", Some(0)),
            ("3", Some(3)),
            (" 120 ", Some(120)),
            ("99999999999999999999999", Some(u64::MAX)),
            ("Wed, 25 Nov 2026 10:00:07 GMT", Some(7)),
            // IMF-fixdate, RFC 850 and asctime are all HTTP-dates.
            ("Wednesday, 25-Nov-26 10:00:30 GMT", Some(30)),
            ("Wed Nov 25 10:01:00 2026", Some(60)),
            // In the past: go now.
            ("Wed, 25 Nov 2026 09:00:00 GMT", Some(0)),
            ("-1", None),
            ("1.5", None),
            ("soon", None),
            ("", None),
        ];
        for (value, want) in cases {
            assert_eq!(
                parse(&headers(value), now),
                want.map(Duration::from_secs),
                "{value:?}"
            );
        }
        assert_eq!(parse(&HeaderMap::new(), now), None);
    }
}
