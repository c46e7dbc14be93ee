//! Fault injection: rules that delay, fail or reset FinCode API requests.
//!
//! Rules are evaluated in order, under one lock, so `times` is exact even under concurrency:
//! "the next 3 requests get 503" means exactly three, whichever connections they arrive on.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What a fault does to a matching request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultKind {
    /// Sleep `latency_ms`, then carry on (later rules still apply).
    Latency,
    /// Answer with `status` instead of the real response.
    Status,
    /// Abort the connection (TCP RST) without sending a response byte.
    Reset,
    /// Send the response head at once, then hold the body back for `latency_ms` (forever
    /// when unset). After the handler (`phase = "after"`) it holds the real response's body;
    /// before, a `status` answer's (default 200, body `body` or `{}`). A client that bounds
    /// only the wait for the head hangs on it.
    Stall,
}

/// When a fault applies relative to the real handler.
///
/// `after` is a sandbox extension: the real handler runs first (so a transaction *is* created and
/// its side effect counted) and only then is the response replaced, delayed or lost. That is the
/// case a retrying client must survive without paying twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultPhase {
    /// Before the handler: FinCode never saw the request (the default).
    #[default]
    Before,
    /// After the handler: FinCode acted on the request, the client never hears about it.
    After,
}

/// One fault rule, as posted to the admin API's `POST /faults`.
///
/// ```
/// use fincode_sandbox::FaultRule;
/// // The next three transaction calls get 503 with `Retry-After: 1`.
/// let rule = FaultRule::status(503)
///     .times(3)
///     .path_prefix("/transactionmanagement")
///     .retry_after("1");
/// assert_eq!(rule.times, Some(3));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRule {
    /// What to do.
    pub kind: FaultKind,
    /// Probability in `0.0..=1.0` that a matching request is affected; 1 is deterministic.
    #[serde(default = "default_rate")]
    pub rate: f64,
    /// At most this many applications, then the rule stays inert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times: Option<u64>,
    /// Matches paths below `/api/v6/services` starting with this, e.g. `/transactionmanagement`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// Matches this HTTP method only (case-insensitive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// For `latency`: how long to sleep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// For `status`: the status code (default 503).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// For `status`: the `Retry-After` header value, e.g. `"2"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<String>,
    /// For `status`: the JSON body (default FinCode's error shape for the status).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<serde_json::Value>,
    /// Before (default) or after the real handler runs.
    #[serde(default)]
    pub phase: FaultPhase,
}

fn default_rate() -> f64 {
    1.0
}

// === impl FaultRule ===

impl FaultRule {
    fn new(kind: FaultKind) -> Self {
        Self {
            kind,
            rate: 1.0,
            times: None,
            path_prefix: None,
            method: None,
            latency_ms: None,
            status: None,
            retry_after: None,
            body: None,
            phase: FaultPhase::Before,
        }
    }

    /// A rule that delays matching requests by `delay`.
    pub fn latency(delay: Duration) -> Self {
        Self {
            latency_ms: Some(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX)),
            ..Self::new(FaultKind::Latency)
        }
    }

    /// A rule that answers matching requests with `status`.
    pub fn status(status: u16) -> Self {
        Self {
            status: Some(status),
            ..Self::new(FaultKind::Status)
        }
    }

    /// A rule that resets the connection of matching requests.
    pub fn reset() -> Self {
        Self::new(FaultKind::Reset)
    }

    /// A rule that sends the head of matching requests' responses, then holds their body
    /// back for `hold` (forever when `None`).
    pub fn stall_body(hold: Option<Duration>) -> Self {
        Self {
            latency_ms: hold.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            ..Self::new(FaultKind::Stall)
        }
    }

    /// Applies at most `times` times.
    #[must_use]
    pub fn times(mut self, times: u64) -> Self {
        self.times = Some(times);
        self
    }

    /// Applies with probability `rate`.
    #[must_use]
    pub fn rate(mut self, rate: f64) -> Self {
        self.rate = rate;
        self
    }

    /// Only for paths (below `/api/v6/services`) starting with `prefix`.
    #[must_use]
    pub fn path_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.path_prefix = Some(prefix.into());
        self
    }

    /// Only for this method.
    #[must_use]
    pub fn method(mut self, method: impl Into<String>) -> Self {
        self.method = Some(method.into());
        self
    }

    /// Sets `Retry-After` on a status fault.
    #[must_use]
    pub fn retry_after(mut self, value: impl Into<String>) -> Self {
        self.retry_after = Some(value.into());
        self
    }

    /// Sets the JSON body of a status fault.
    #[must_use]
    pub fn body(mut self, body: serde_json::Value) -> Self {
        self.body = Some(body);
        self
    }

    /// Applies after the real handler ran (see [`FaultPhase::After`]).
    #[must_use]
    pub fn after_handler(mut self) -> Self {
        self.phase = FaultPhase::After;
        self
    }

    /// Rejects rules that could never do what their author meant.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.rate) {
            return Err("rate must be between 0 and 1".to_owned());
        }
        match self.kind {
            FaultKind::Latency if self.latency_ms.is_none() => {
                Err("a latency fault needs latency_ms".to_owned())
            }
            FaultKind::Status | FaultKind::Stall
                if self.status.is_some_and(|s| !(100..=599).contains(&s)) =>
            {
                Err("status must be between 100 and 599".to_owned())
            }
            _ => Ok(()),
        }
    }

    fn matches(&self, method: &str, path: &str, phase: FaultPhase) -> bool {
        self.phase == phase
            && self
                .method
                .as_deref()
                .is_none_or(|m| m.eq_ignore_ascii_case(method))
            && self
                .path_prefix
                .as_deref()
                .is_none_or(|p| path.starts_with(p))
    }
}

/// A rule plus how often it has fired; what `GET /faults` lists.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ActiveRule {
    #[serde(flatten)]
    rule: FaultRule,
    applied: u64,
}

/// The terminal action chosen for a request, if any.
#[derive(Debug, Clone)]
pub(crate) enum FaultAction {
    Status {
        status: u16,
        retry_after: Option<String>,
        body: Option<serde_json::Value>,
    },
    Reset,
    Stall {
        /// `None`: forever.
        hold: Option<Duration>,
        status: u16,
        body: Option<serde_json::Value>,
    },
}

/// The outcome of evaluating every rule for one request.
#[derive(Debug, Default)]
pub(crate) struct FaultDecision {
    pub(crate) delay: Duration,
    pub(crate) action: Option<FaultAction>,
    pub(crate) applied: Vec<FaultKind>,
}

/// The ordered rule list.
#[derive(Debug, Default)]
pub(crate) struct FaultBook {
    rules: Vec<ActiveRule>,
}

// === impl FaultBook ===

impl FaultBook {
    pub(crate) fn push(&mut self, rule: FaultRule) {
        self.rules.push(ActiveRule { rule, applied: 0 });
    }

    pub(crate) fn clear(&mut self) {
        self.rules.clear();
    }

    pub(crate) fn list(&self) -> Vec<ActiveRule> {
        self.rules.clone()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Runs the rules in order: latencies add up, the first status or reset rule ends the walk.
    pub(crate) fn decide(&mut self, method: &str, path: &str, phase: FaultPhase) -> FaultDecision {
        let mut decision = FaultDecision::default();
        for active in &mut self.rules {
            let rule = &active.rule;
            if !rule.matches(method, path, phase)
                || rule.times.is_some_and(|t| active.applied >= t)
                || !(rule.rate >= 1.0 || rand::random::<f64>() < rule.rate)
            {
                continue;
            }
            active.applied += 1;
            decision.applied.push(rule.kind);
            match rule.kind {
                FaultKind::Latency => {
                    decision.delay += Duration::from_millis(rule.latency_ms.unwrap_or(0));
                }
                FaultKind::Status => {
                    decision.action = Some(FaultAction::Status {
                        status: rule.status.unwrap_or(503),
                        retry_after: rule.retry_after.clone(),
                        body: rule.body.clone(),
                    });
                    break;
                }
                FaultKind::Reset => {
                    decision.action = Some(FaultAction::Reset);
                    break;
                }
                FaultKind::Stall => {
                    decision.action = Some(FaultAction::Stall {
                        hold: rule.latency_ms.map(Duration::from_millis),
                        status: rule.status.unwrap_or(200),
                        body: rule.body.clone(),
                    });
                    break;
                }
            }
        }
        decision
    }
}
