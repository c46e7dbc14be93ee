//! Hot reload with rollback: on SIGHUP, or when the config file's content changes, the
//! new config is loaded and validated in full; if it is valid, its tunable settings are
//! swapped in, and if not, nothing changes and the old config keeps serving. That is the
//! rollback plan: a bad ConfigMap push is refused, logged, audited and counted
//! (`fincode_config_reloads_total{result="failure"}`, alerted on), never half-applied.
//!
//! What reloads without a restart: `rate_limit.*`, `retry.*`, `breaker.*`,
//! `limits.max_concurrent_requests` and `log.level`. Every other key (listen addresses,
//! upstream, credentials, store, webhooks, audit, ...) is built into sockets, pools and
//! files at start-up: a change to one is reported by name as waiting for a restart
//! (`fincode_config_restart_pending_keys`) and left as it is until then, while the
//! tunable keys of the same file still apply. Secrets live in the environment, which a
//! running process cannot be given anew: new credentials need a rolling restart.
//!
//! The file is polled by content, not watched by inode: a Kubernetes ConfigMap update
//! swaps a `..data` symlink over the mounted file, which an inotify watch on the file
//! itself never sees; reading the path again follows the new link.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use fincode_audit::{Auditor, Kind, Record};
use fincode_config::{Config, Env};
use fincode_proxy::reload::ProxyReloader;
use fincode_server::CancellationToken;
use fincode_telemetry::LogLevel;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use sha2::{Digest as _, Sha256};

use crate::audit_trail::config_digest;

/// How often the config file is read again to see whether it changed. The kubelet
/// refreshes a mounted ConfigMap about once a minute, so this adds little to that.
const POLL_EVERY: Duration = Duration::from_secs(2);

/// How long a changed file must stay the same before the poll loads it.
const SETTLE: Duration = Duration::from_millis(200);

/// Keys applied by a reload besides the proxy's own ([`ProxyReloader::KEYS`]).
const LOG_LEVEL: &str = "log.level";

/// Why a reload was attempted, for the log and the audit record.
#[derive(Clone, Copy, Debug)]
enum Trigger {
    Signal,
    FileChanged,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Self::Signal => "sighup",
            Self::FileChanged => "file_changed",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

/// Reload outcomes for `/metrics`.
#[derive(Clone, Debug)]
struct ReloadMetrics {
    reloads: Family<ResultLabel, Counter>,
    restart_pending: Gauge,
    failing: Gauge,
}

impl ReloadMetrics {
    fn register(registry: &mut Registry) -> Self {
        let this = Self {
            reloads: Family::default(),
            restart_pending: Gauge::default(),
            failing: Gauge::default(),
        };
        registry.register(
            "fincode_config_reloads",
            "Config reloads by result: success (applied) or failure (refused; the old config keeps serving)",
            this.reloads.clone(),
        );
        registry.register(
            "fincode_config_restart_pending_keys",
            "Changed config keys that only take effect after a restart",
            this.restart_pending.clone(),
        );
        registry.register(
            "fincode_config_reload_failing",
            "1 while the config file was last refused: the running config is not the file's, \
             and a restart would not start with that file",
            this.failing.clone(),
        );
        for result in ["success", "failure"] {
            let _ = this.reloads.get_or_create(&ResultLabel { result });
        }
        this
    }
}

/// Watches for reload requests and applies them to the running sidecar.
pub(crate) struct Reloader {
    path: PathBuf,
    env: Env,
    /// The config in effect: the start-up one with every reload's tunable keys applied.
    /// Restart-only keys keep their start-up values, so they keep being reported until
    /// the restart.
    running: Config,
    /// SHA-256 of the file bytes last looked at, so an unchanged file costs one read.
    seen: Option<[u8; 32]>,
    /// SHA-256 of the file bytes last loaded (applied or refused): the same bytes are
    /// not loaded twice, whether the poll or a SIGHUP sees them first.
    attempted: Option<[u8; 32]>,
    proxy: ProxyReloader,
    log_level: Option<LogLevel>,
    auditor: Option<Auditor>,
    metrics: ReloadMetrics,
    /// Installed in [`Self::new`], before the sidecar is ready: SIGHUP's default action
    /// is to end the process.
    hangup: Option<Hangup>,
}

// === impl Reloader ===

impl Reloader {
    pub(crate) fn new(
        path: &Path,
        env: Env,
        running: Config,
        proxy: ProxyReloader,
        log_level: Option<LogLevel>,
        auditor: Option<Auditor>,
        registry: &mut Registry,
    ) -> Self {
        let seen = std::fs::read(path).ok().map(|bytes| sha256(&bytes));
        Self {
            path: path.to_owned(),
            env,
            running,
            seen,
            attempted: seen,
            proxy,
            log_level,
            auditor,
            metrics: ReloadMetrics::register(registry),
            hangup: Some(hangup_signal()),
        }
    }

    /// Reloads on SIGHUP and on a change of the file's content until `stop`. Reading and
    /// validating the file (CA and key files included) is blocking I/O, so it runs on the
    /// blocking pool, never on a worker that serves requests.
    pub(crate) async fn watch(mut self, stop: CancellationToken) {
        let mut hangup = self.hangup.take().unwrap_or_else(hangup_signal);
        let mut poll = tokio::time::interval(POLL_EVERY);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let trigger = tokio::select! {
                () = stop.cancelled() => return,
                () = next_hangup(&mut hangup) => Some(Trigger::Signal),
                _ = poll.tick() => None,
            };
            let attempt = tokio::task::spawn_blocking(move || {
                match trigger {
                    Some(trigger) => self.reload(trigger),
                    None if self.file_changed() => self.reload(Trigger::FileChanged),
                    None => {}
                }
                self
            });
            self = match attempt.await {
                Ok(this) => this,
                Err(error) => {
                    tracing::error!(%error, "config reload failed unexpectedly; reloads are off until a restart");
                    return;
                }
            };
        }
    }

    /// Whether the file's bytes differ from the ones last looked at, and have stayed the
    /// same for [`SETTLE`]: a file being written in place (an editor, `>` in a shell) is
    /// read again at the next poll, not loaded half-written. An unreadable file (mid-swap,
    /// say) is not a change either: the next poll will tell.
    fn file_changed(&mut self) -> bool {
        let Ok(bytes) = std::fs::read(&self.path) else {
            return false;
        };
        let digest = sha256(&bytes);
        if self.seen == Some(digest) {
            return false;
        }
        std::thread::sleep(SETTLE);
        let Ok(again) = std::fs::read(&self.path) else {
            return false;
        };
        if sha256(&again) != digest {
            return false;
        }
        self.seen = Some(digest);
        self.attempted != Some(digest)
    }

    fn reload(&mut self, trigger: Trigger) {
        if let Ok(bytes) = std::fs::read(&self.path) {
            let digest = sha256(&bytes);
            self.seen = Some(digest);
            // A refused file is reported once, and a file the poll already loaded is not
            // loaded again by the SIGHUP that follows its edit.
            if self.attempted == Some(digest) {
                tracing::info!(
                    trigger = trigger.as_str(),
                    "config reload: the file is the one last loaded (applied or refused); nothing to do"
                );
                return;
            }
            self.attempted = Some(digest);
        }
        let new = match self.load() {
            Ok(new) => new,
            Err((keys, message)) => return self.refuse(trigger, &keys, &message),
        };
        let changed = self.running.changed_keys(&new);
        if changed.is_empty() {
            self.metrics.failing.set(0);
            tracing::info!(trigger = trigger.as_str(), "config reload: nothing changed");
            return;
        }
        let (applied, restart): (Vec<&String>, Vec<&String>) =
            changed.iter().partition(|key| reloadable(key));
        let pending = match self.proxy.prepare(&new) {
            Ok(pending) => pending,
            // Only the rate limiter's routes can be valid config yet unusable (a route
            // template the proxy does not know).
            Err(error) => {
                return self.refuse(trigger, &["rate_limit.routes".into()], &error.to_string());
            }
        };
        // Valid: from here on nothing can fail half-way.
        pending.apply();
        if new.log.level != self.running.log.level {
            self.set_log_level(&new.log.level);
        }
        self.running.rate_limit = new.rate_limit.clone();
        self.running.retry = new.retry.clone();
        self.running.breaker = new.breaker.clone();
        self.running.limits.max_concurrent_requests = new.limits.max_concurrent_requests;
        self.running.log.level.clone_from(&new.log.level);

        let digest = config_digest(&new);
        self.metrics
            .reloads
            .get_or_create(&ResultLabel { result: "success" })
            .inc();
        self.metrics
            .restart_pending
            .set(i64::try_from(restart.len()).unwrap_or(i64::MAX));
        self.metrics.failing.set(0);
        let applied = join(&applied);
        let restart = join(&restart);
        if restart.is_empty() {
            tracing::info!(
                trigger = trigger.as_str(),
                applied = %applied,
                config_sha256 = %digest,
                "config reloaded"
            );
        } else {
            tracing::warn!(
                trigger = trigger.as_str(),
                applied = %applied,
                restart_needed = %restart,
                config_sha256 = %digest,
                "config reloaded; some changed keys only take effect after a restart (kubectl rollout restart)"
            );
        }
        self.audit(trigger, Ok(()), |record| {
            record
                .detail("config_sha256", digest)
                .detail("applied", applied)
                .detail("restart_pending", restart)
        });
    }

    /// Loads and validates the file as `run` does, environment included. On failure:
    /// the keys at fault (names only) and the message for the log.
    fn load(&self) -> Result<Config, (Vec<String>, String)> {
        let new = Config::load(&self.path, &self.env).map_err(|error| {
            let keys = error.problems().iter().map(|p| p.key.clone()).collect();
            (keys, error.to_string())
        })?;
        let (new, _warnings) = new;
        let missing = new.check_environment(&self.env);
        if !missing.is_empty() {
            let keys = missing.iter().map(|p| p.key.clone()).collect();
            let message = missing
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ");
            return Err((keys, message));
        }
        Ok(new)
    }

    /// Counts, logs and audits a refused reload; the running config is untouched.
    fn refuse(&self, trigger: Trigger, keys: &[String], message: &str) {
        self.metrics
            .reloads
            .get_or_create(&ResultLabel { result: "failure" })
            .inc();
        self.metrics.failing.set(1);
        let keys = keys.join(",");
        tracing::error!(
            trigger = trigger.as_str(),
            path = %self.path.display(),
            keys = %keys,
            error = %message,
            "config reload refused: the running config is unchanged; fix the file (`fincode-sidecar check`) and reload again"
        );
        self.audit(trigger, Err("invalid_config"), |record| {
            record.detail("keys", keys)
        });
    }

    /// Writes a `config.reload` audit record (when the audit trail is on): its outcome
    /// (the error kind of a refused reload), its trigger, then what `details` adds.
    fn audit(
        &self,
        trigger: Trigger,
        outcome: Result<(), &'static str>,
        details: impl FnOnce(Record) -> Record,
    ) {
        let Some(auditor) = &self.auditor else {
            return;
        };
        let record = auditor.record(Kind::Sidecar, "config.reload");
        let record = match outcome {
            Ok(()) => record.outcome("success"),
            Err(kind) => record.outcome("failure").error(kind),
        };
        details(record.detail("trigger", trigger.as_str())).write();
    }

    fn set_log_level(&self, level: &str) {
        let Some(log_level) = &self.log_level else {
            return;
        };
        if LogLevel::overridden() {
            tracing::warn!(
                "log.level changed, but RUST_LOG is set and wins; unset it to use log.level"
            );
        } else if let Err(error) = log_level.set(level) {
            tracing::error!(%error, "log.level could not be applied");
        }
    }
}

/// Whether a reload applies `key` (a dotted key from [`Config::changed_keys`]).
fn reloadable(key: &str) -> bool {
    ProxyReloader::KEYS
        .iter()
        .chain(&[LOG_LEVEL])
        .any(|prefix| {
            key == *prefix
                || key
                    .strip_prefix(prefix)
                    .is_some_and(|rest| rest.starts_with('.'))
        })
}

fn join(keys: &[&String]) -> String {
    keys.iter()
        .map(|k| k.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = ();

/// Installs the SIGHUP handler.
#[cfg(unix)]
fn hangup_signal() -> Hangup {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGHUP; config reloads follow file changes only");
            None
        }
    }
}

#[cfg(not(unix))]
fn hangup_signal() -> Hangup {}

#[cfg(unix)]
async fn next_hangup(hangup: &mut Hangup) {
    match hangup {
        Some(signal) => {
            if signal.recv().await.is_none() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

#[cfg(not(unix))]
async fn next_hangup(_: &mut Hangup) {
    std::future::pending().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reloadable_keys_are_the_tunable_sections_only() {
        for key in [
            "rate_limit.per_second",
            "rate_limit.routes.\"/payment/status\".burst",
            "retry.max_attempts",
            "breaker.open_for",
            "limits.max_concurrent_requests",
            "log.level",
        ] {
            assert!(reloadable(key), "{key}");
        }
        for key in [
            "listen.egress",
            "limits.max_request_body_bytes",
            "log.format",
            "store.path",
            "upstream.base_url",
            "rate_limiter",
            "log.levels",
        ] {
            assert!(!reloadable(key), "{key}");
        }
    }
}
