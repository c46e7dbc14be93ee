//! The open-files limit: raised at start-up, and checked against what the listeners may
//! hold.
//!
//! The default caps sum to 2112 connections (egress 1024, admin 64, webhooks 1024), above
//! the 1024 soft limit many container runtimes give. Past it `accept` fails with EMFILE,
//! and the first to notice is the kubelet, whose probes on the admin port go unanswered.
//! The soft limit may be raised to the hard one without privilege, so it is; what is
//! still short is logged with the keys that lower the need.

use fincode_config::ListenersConfig;
use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// Files the process needs besides listener connections: the upstream pool, the store,
/// audit segments, logs, the runtime's own descriptors.
pub(crate) const MARGIN: u64 = 256;

/// What start-up found and did about the open-files limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FdLimit {
    /// The soft limit now in force (`None`: unlimited).
    pub(crate) soft: Option<u64>,
    /// Descriptors the config may need at once.
    pub(crate) needed: u64,
}

// === impl FdLimit ===

impl FdLimit {
    /// Whether the limit is below what the config may need.
    pub(crate) fn is_short(&self) -> bool {
        self.soft.is_some_and(|soft| soft < self.needed)
    }
}

/// Descriptors the listeners may need at once: every cap full, plus [`MARGIN`].
pub(crate) fn needed(listeners: &ListenersConfig, webhooks_enabled: bool) -> u64 {
    let webhooks = if webhooks_enabled {
        listeners.webhooks.max_connections
    } else {
        0
    };
    [
        listeners.egress.max_connections,
        listeners.admin.max_connections,
        webhooks,
    ]
    .into_iter()
    .map(|n| u64::try_from(n).unwrap_or(u64::MAX))
    .fold(MARGIN, u64::saturating_add)
}

/// The soft limit to ask for: the hard one (`None` = unlimited). Never lowers it.
pub(crate) fn target(soft: Option<u64>, hard: Option<u64>) -> Option<u64> {
    Some(soft?.max(hard?))
}

/// Raises the soft open-files limit to the hard one and reports whether it covers
/// `needed`. Failing to read or raise it is logged, never fatal.
pub(crate) fn raise(needed: u64) -> FdLimit {
    let Rlimit { current, maximum } = getrlimit(Resource::Nofile);
    let wanted = target(current, maximum);
    let soft = if wanted == current {
        current
    } else {
        match setrlimit(
            Resource::Nofile,
            Rlimit {
                current: wanted,
                maximum,
            },
        ) {
            Ok(()) => wanted,
            Err(error) => {
                tracing::warn!(%error, "could not raise the open-files limit to the hard limit");
                current
            }
        }
    };
    FdLimit { soft, needed }
}

/// Logs a warning naming the keys to lower when `limit` is short.
pub(crate) fn warn_if_short(limit: FdLimit) {
    if limit.is_short() {
        tracing::warn!(
            open_files_limit = limit.soft,
            needed = limit.needed,
            "the open-files limit is below the listeners' connection caps plus a margin of \
             {MARGIN}: past it accepts fail (EMFILE) and probes go unanswered; raise the \
             container's nofile limit or lower listeners.egress.max_connections, \
             listeners.admin.max_connections and listeners.webhooks.max_connections"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_caps_need_more_than_a_common_container_limit() {
        let listeners = ListenersConfig::default();
        assert_eq!(needed(&listeners, true), 1024 + 64 + 1024 + MARGIN);
        assert_eq!(needed(&listeners, false), 1024 + 64 + MARGIN);
        let short = FdLimit {
            soft: Some(1024),
            needed: needed(&listeners, true),
        };
        assert!(short.is_short());
        let raised = FdLimit {
            soft: target(Some(1024), Some(1_048_576)),
            needed: needed(&listeners, true),
        };
        assert!(!raised.is_short());
        assert!(
            !FdLimit {
                soft: None,
                needed: u64::MAX
            }
            .is_short(),
            "unlimited is never short"
        );
    }

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one_and_never_lowered() {
        assert_eq!(target(Some(1024), Some(4096)), Some(4096));
        assert_eq!(target(Some(1024), None), None);
        assert_eq!(target(None, Some(4096)), None);
        assert_eq!(target(Some(4096), Some(4096)), Some(4096));
    }

    #[test]
    fn raising_in_this_process_never_lowers_the_limit() {
        let before = getrlimit(Resource::Nofile).current;
        let after = raise(0).soft;
        assert!(after.zip(before).is_none_or(|(a, b)| a >= b));
    }
}
