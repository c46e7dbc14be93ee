//! Reading the Prometheus text exposition the admin port serves, and the two sums and
//! one quantile `status` needs from it.
//!
//! A small parser rather than a crate: the sidecar's own `/metrics` is the only input
//! (prometheus-client's output: `name{label="value",...} value`, `# HELP`/`# TYPE`/`# EOF`
//! comments), and the crates that parse the format bring a regex engine and a date
//! library for timestamps this exposition never carries. A line it cannot read is
//! skipped, never a panic: the screen shows what it could read.

/// One sample: `name{labels} value`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Sample {
    pub(crate) name: String,
    pub(crate) labels: Vec<(String, String)>,
    pub(crate) value: f64,
}

// === impl Sample ===

impl Sample {
    /// The value of label `name`, if the sample has it.
    pub(crate) fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// A parsed exposition.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Exposition {
    pub(crate) samples: Vec<Sample>,
}

// === impl Exposition ===

impl Exposition {
    /// Parses `text`, skipping comments and lines that are not samples.
    pub(crate) fn parse(text: &str) -> Self {
        Self {
            samples: text.lines().filter_map(parse_line).collect(),
        }
    }

    /// Whether any sample of `name` exists (a metric the sidecar registers only with a
    /// feature on, such as the webhook and audit families).
    pub(crate) fn has(&self, name: &str) -> bool {
        self.samples.iter().any(|sample| sample.name == name)
    }

    /// The sum of the samples of `name` whose labels include every `(key, value)` of
    /// `filter`.
    pub(crate) fn sum(&self, name: &str, filter: &[(&str, &str)]) -> f64 {
        // Folded from +0.0: an empty `f64` sum is -0.0, which prints as "-0.0 %".
        self.matching(name, filter)
            .fold(0.0, |sum, sample| sum + sample.value)
    }

    /// The largest sample of `name` (a gauge such as the breaker state), if any.
    pub(crate) fn max(&self, name: &str) -> Option<f64> {
        self.matching(name, &[])
            .map(|sample| sample.value)
            .reduce(f64::max)
    }

    /// The smallest sample of `name`, if any.
    pub(crate) fn min(&self, name: &str) -> Option<f64> {
        self.matching(name, &[])
            .map(|sample| sample.value)
            .reduce(f64::min)
    }

    /// Samples of `name` with label `key`, summed per value of it: `{kind: count}`.
    pub(crate) fn by_label(&self, name: &str, key: &str) -> Vec<(String, f64)> {
        let mut out: Vec<(String, f64)> = Vec::new();
        for sample in self.matching(name, &[]) {
            let Some(value) = sample.label(key) else {
                continue;
            };
            match out.iter_mut().find(|(k, _)| k == value) {
                Some((_, sum)) => *sum += sample.value,
                None => out.push((value.to_owned(), sample.value)),
            }
        }
        out
    }

    /// The cumulative buckets of histogram `name` (its `_bucket` samples), summed over
    /// every other label: `(upper bound, count at or below it)`, by bound.
    pub(crate) fn buckets(&self, name: &str) -> Vec<(f64, f64)> {
        let bucket = format!("{name}_bucket");
        let mut out: Vec<(f64, f64)> = Vec::new();
        for sample in self.matching(&bucket, &[]) {
            let Some(le) = sample.label("le").and_then(parse_value) else {
                continue;
            };
            match out
                .iter_mut()
                .find(|(bound, _)| bound.total_cmp(&le).is_eq())
            {
                Some((_, count)) => *count += sample.value,
                None => out.push((le, sample.value)),
            }
        }
        out.sort_by(|a, b| a.0.total_cmp(&b.0));
        out
    }

    fn matching<'a>(
        &'a self,
        name: &'a str,
        filter: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |sample| {
            sample.name == name
                && filter
                    .iter()
                    .all(|(key, value)| sample.label(key) == Some(*value))
        })
    }
}

/// `buckets` minus `earlier` bound by bound: the observations between two scrapes (a
/// bound missing from `earlier` counts from zero; a counter that went down, because the
/// sidecar restarted, counts from zero too).
pub(crate) fn bucket_delta(buckets: &[(f64, f64)], earlier: &[(f64, f64)]) -> Vec<(f64, f64)> {
    buckets
        .iter()
        .map(|&(bound, count)| {
            let before = earlier
                .iter()
                .find(|(b, _)| b.total_cmp(&bound).is_eq())
                .map_or(0.0, |(_, c)| *c);
            (bound, counter_delta(count, before))
        })
        .collect()
}

/// How much a counter grew from `before` to `now`; a reset (the sidecar restarted)
/// counts from zero, as Prometheus's `increase` does.
pub(crate) fn counter_delta(now: f64, before: f64) -> f64 {
    if now >= before { now - before } else { now }
}

/// The `q` quantile (0..=1) of the observations in cumulative `buckets` (sorted by
/// bound, the last `+Inf`), interpolated linearly inside the bucket it falls in, as
/// PromQL's `histogram_quantile` does: `None` with no observation. A quantile in the
/// `+Inf` bucket is the highest finite bound (all that is known is "more than that").
pub(crate) fn quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 || !q.is_finite() {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total;
    let mut lower_bound = 0.0;
    let mut lower_count = 0.0;
    for &(bound, count) in buckets {
        if count >= rank && count > lower_count {
            if bound.is_infinite() {
                return Some(lower_bound);
            }
            let fraction = (rank - lower_count) / (count - lower_count);
            return Some(lower_bound + (bound - lower_bound) * fraction);
        }
        if bound.is_finite() {
            lower_bound = bound;
        }
        lower_count = count;
    }
    Some(lower_bound)
}

/// One sample line; `None` for comments, blank lines and anything malformed.
fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (name, labels, rest) = match line.find(['{', ' ']) {
        Some(at) if line.as_bytes()[at] == b'{' => {
            let (labels, rest) = parse_labels(&line[at + 1..])?;
            (&line[..at], labels, rest)
        }
        Some(at) => (&line[..at], Vec::new(), &line[at..]),
        None => return None,
    };
    if name.is_empty() {
        return None;
    }
    // The value, then an optional timestamp.
    let value = parse_value(rest.split_whitespace().next()?)?;
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// `key="value",...}` and what follows the `}`. Values may hold `\\`, `\"` and `\n`.
fn parse_labels(mut text: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    loop {
        text = text.trim_start_matches([' ', ',']);
        if let Some(rest) = text.strip_prefix('}') {
            return Some((labels, rest));
        }
        let (key, rest) = text.split_once('=')?;
        let mut chars = rest.strip_prefix('"')?.char_indices();
        let mut value = String::new();
        let end = loop {
            match chars.next()? {
                (at, '"') => break at,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                (_, c) => value.push(c),
            }
        };
        labels.push((key.trim().to_owned(), value));
        text = &rest[1 + end + 1..];
    }
}

/// A sample value: a float, `+Inf`, `-Inf` or `NaN`.
fn parse_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => text.parse().ok(),
    }
}

#[cfg(test)]
#[path = "prom_tests.rs"]
mod tests;
