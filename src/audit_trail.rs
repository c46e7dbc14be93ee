//! Starting and stopping the audit trail for `run`: the writer thread, its metrics, the
//! checkpoint log lines, and the sidecar's own lifecycle records (start with a digest of
//! the effective config, stop).

use std::{thread::JoinHandle, time::Duration};

use fincode_audit::{AuditLog, Auditor, Fsync, Kind, Signer, WriterConfig};
use fincode_config::{AuditFsync, Config};
use fincode_redact::Redactor;
use prometheus_client::registry::Registry;
use secrecy::{ExposeSecret as _, SecretString};
use sha2::{Digest as _, Sha256};

/// The log target of checkpoint lines; `init_logging` always lets it through, whatever
/// `log.level` says, because those lines are the trail's independent copy.
pub(crate) const CHECKPOINT_TARGET: &str = "fincode_audit::checkpoint";

/// Why the trail could not be started. Names the key and the fix; never a secret.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StartError {
    /// No key was read: `Config::secrets` reports an unset variable before the trail
    /// starts, so only a caller that skipped it sees this.
    #[error("audit.signing_key_env: no signing key was read; set audit.signing_key_env")]
    KeyMissing,
    #[error("audit.signing_key_env: the variable {var}: {source}")]
    KeyInvalid {
        var: String,
        source: fincode_audit::KeyError,
    },
    #[error("audit: cannot start the writer: {0}")]
    Writer(#[from] fincode_audit::ChainError),
}

/// A running trail.
pub(crate) struct Trail {
    pub(crate) auditor: Auditor,
    thread: JoinHandle<()>,
}

/// Starts the trail when `audit.enabled`; records the start with the config's digest.
pub(crate) fn start(
    config: &Config,
    signing_key: Option<&SecretString>,
    redactor: Redactor,
    registry: &mut Registry,
) -> Result<Option<Trail>, StartError> {
    let audit = &config.audit;
    if !audit.enabled {
        return Ok(None);
    }
    let var = audit.signing_key_env.clone().unwrap_or_default();
    let seed = signing_key.ok_or(StartError::KeyMissing)?;
    let signer = Signer::from_base64_seed(seed.expose_secret())
        .map_err(|source| StartError::KeyInvalid { var, source })?;
    let writer = WriterConfig {
        dir: audit.dir.clone(),
        queue: audit.queue,
        checkpoint_every: audit.checkpoint_every,
        checkpoint_interval: audit.checkpoint_interval,
        max_segment_bytes: audit.max_segment_bytes,
        max_segment_age: audit.max_segment_age,
        retention: Some(audit.retention),
        fsync: match audit.fsync {
            AuditFsync::Batch => Fsync::Batch,
            AuditFsync::Never => Fsync::Never,
        },
    };
    let (log, thread) = AuditLog::start(
        writer,
        Some(signer),
        Box::new(|checkpoint, signature| {
            // The independent copy: `audit verify --checkpoints <log>` reads these back.
            tracing::info!(
                target: CHECKPOINT_TARGET,
                segment = checkpoint.segment,
                seq = checkpoint.seq,
                head = %checkpoint.head,
                time_ms = checkpoint.time_ms,
                signature,
                "audit checkpoint"
            );
        }),
    )?;
    log.stats().register(registry);
    if !log.is_available() {
        tracing::error!(
            dir = %audit.dir.display(),
            fail_closed = audit.fail_closed,
            "the audit trail cannot be written yet; retrying every second"
        );
    }
    let auditor = Auditor::new(log, redactor, audit.actor.clone(), audit.fail_closed);
    auditor
        .record(Kind::Sidecar, "sidecar.start")
        .outcome("success")
        .detail("version", env!("CARGO_PKG_VERSION"))
        .detail("config_sha256", config_digest(config))
        .detail("fail_closed", audit.fail_closed)
        .write();
    Ok(Some(Trail { auditor, thread }))
}

/// The SHA-256 of the effective config as TOML: which config ran, without its values
/// (secrets are never in the config; this still keeps every value out of the trail).
pub(crate) fn config_digest(config: &Config) -> String {
    hex::encode(Sha256::digest(config.to_toml_string().as_bytes()))
}

impl Trail {
    /// Records the stop, then lets the writer write what is queued, sign a last
    /// checkpoint and exit; waits at most `grace`.
    pub(crate) async fn stop(self, grace: Duration) {
        self.auditor
            .record(Kind::Sidecar, "sidecar.stop")
            .outcome("success")
            .write();
        let log = self.auditor.log().clone();
        let thread = self.thread;
        let joined = tokio::task::spawn_blocking(move || {
            log.stop();
            thread.join().is_ok()
        });
        if !matches!(tokio::time::timeout(grace, joined).await, Ok(Ok(true))) {
            tracing::error!("the audit writer did not stop cleanly within {grace:?}");
        }
    }
}
