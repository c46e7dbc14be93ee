//! `fincode-sidecar store status`: the webhook queue, read straight from the store the
//! config names, so it works while the sidecar is down (when operators most need it) as
//! well as beside a running one.

use std::{
    path::Path,
    process::ExitCode,
    time::{Duration, SystemTime},
};

use clap::Subcommand;
use fincode_config::{Config, Env, StoreBackend};
use fincode_store::{StoreError, StoreStatus, sqlite_status};
use secrecy::SecretString;

/// Exit code for a config (or environment) that cannot be used, as `check` and `run`.
const INVALID_CONFIG: u8 = 2;

#[derive(Subcommand, Debug, Clone, Copy)]
pub(crate) enum StoreCommand {
    /// Print the queue depth (pending events), the dead letters, the delivered events kept,
    /// and how long the oldest pending event has waited. Exit 0, 1 when the store cannot
    /// be read, 2 when the config is invalid.
    Status {
        /// Print one JSON object instead of lines for a terminal.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) fn run(command: StoreCommand, config_path: &Path) -> ExitCode {
    let StoreCommand::Status { json } = command;
    let env = Env::from_process();
    let config = match load_config(config_path, &env) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let secrets = match config.store_secrets(&env) {
        Ok(secrets) => secrets,
        Err(missing) => {
            for problem in &missing {
                eprintln!("{problem}");
            }
            return ExitCode::from(INVALID_CONFIG);
        }
    };
    let runtime = match crate::cli_runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    match runtime.block_on(read(&config.store, secrets.store_password.as_ref())) {
        Ok(status) => {
            let report = Report::new(&config.store, &status, SystemTime::now());
            if json {
                println!("{}", report.json());
            } else {
                print!("{}", report.text());
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The config at `config_path`, or the exit code after printing why it cannot be used
/// (every problem, and how to list them): what the one-shot commands reading the
/// sidecar's state (`store status`, `support-bundle`) start with.
pub(crate) fn load_config(config_path: &Path, env: &Env) -> Result<Config, ExitCode> {
    match Config::load(config_path, env) {
        Ok((config, _warnings)) => Ok(config),
        Err(error) => {
            eprintln!("{error}");
            eprintln!(
                "{}: invalid ({} error(s)); `fincode-sidecar check --config {}` lists every problem",
                config_path.display(),
                crate::config_errors(&error),
                config_path.display()
            );
            Err(ExitCode::from(INVALID_CONFIG))
        }
    }
}

/// The status of the configured store: SQLite read from the file beside (or without) the
/// sidecar; Postgres through the store itself, as any client may connect beside the
/// sidecars.
pub(crate) async fn read(
    store: &StoreBackend,
    password: Option<&SecretString>,
) -> Result<StoreStatus, StoreError> {
    match store {
        StoreBackend::Sqlite { path } => sqlite_status(path).await,
        StoreBackend::Postgres(config) => {
            let store = crate::run::open_postgres(config, password).await?;
            StoreStatus::of(store.as_ref()).await
        }
    }
}

/// What is printed, in both forms.
struct Report {
    backend: &'static str,
    /// The file, or the URL (which never holds a password) and schema.
    location: String,
    status: StoreStatus,
    /// How long the oldest pending event has waited (zero if its time is ahead of this
    /// machine's clock).
    oldest_age: Option<Duration>,
}

impl Report {
    fn new(store: &StoreBackend, status: &StoreStatus, now: SystemTime) -> Self {
        let (backend, location) = match store {
            StoreBackend::Sqlite { path } => ("sqlite", path.display().to_string()),
            StoreBackend::Postgres(config) => (
                "postgres",
                format!("{} (schema {})", config.url, config.schema),
            ),
        };
        Self {
            backend,
            location,
            status: *status,
            oldest_age: status
                .oldest_pending
                .map(|since| now.duration_since(since).unwrap_or_default()),
        }
    }

    fn text(&self) -> String {
        let counts = &self.status.counts;
        let oldest = match (self.status.oldest_pending, self.oldest_age) {
            (Some(since), Some(age)) => format!(
                "oldest pending for {} (since {})",
                humantime::format_duration(Duration::from_secs(age.as_secs())),
                humantime::format_rfc3339_seconds(since)
            ),
            _ => "none pending".to_owned(),
        };
        format!(
            "store:     {} {}\n\
             pending:   {} ({oldest})\n\
             dead:      {} (dead letters; `fincode-sidecar webhooks list --status dead`)\n\
             delivered: {} (kept for webhooks.retention)\n",
            self.backend, self.location, counts.pending, counts.dead, counts.delivered
        )
    }

    fn json(&self) -> serde_json::Value {
        let counts = &self.status.counts;
        serde_json::json!({
            "store": self.backend,
            "location": self.location,
            "pending": counts.pending,
            "dead": counts.dead,
            "delivered": counts.delivered,
            "oldest_pending_since": self
                .status
                .oldest_pending
                .map(|since| humantime::format_rfc3339_millis(since).to_string()),
            "oldest_pending_age_seconds": self.oldest_age.map(|age| age.as_secs_f64()),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use fincode_config::PostgresStoreConfig;
    use fincode_store::Counts;

    use super::*;

    fn status(oldest: Option<SystemTime>) -> StoreStatus {
        StoreStatus {
            counts: Counts {
                pending: 3,
                delivered: 7,
                dead: 1,
            },
            oldest_pending: oldest,
        }
    }

    #[test]
    fn the_report_shows_each_count_and_the_oldest_age() {
        // 2027-01-15T08:00:00Z.
        let since = SystemTime::UNIX_EPOCH + Duration::from_hours(500_000);
        let now = since + Duration::from_millis(95_500);
        let sqlite = StoreBackend::Sqlite {
            path: "/data/events.db".into(),
        };
        let report = Report::new(&sqlite, &status(Some(since)), now);
        assert_eq!(
            report.text(),
            "store:     sqlite /data/events.db\n\
             pending:   3 (oldest pending for 1m 35s (since 2027-01-15T08:00:00Z))\n\
             dead:      1 (dead letters; `fincode-sidecar webhooks list --status dead`)\n\
             delivered: 7 (kept for webhooks.retention)\n"
        );
        let json = report.json();
        assert_eq!(json["pending"], 3);
        assert_eq!(json["dead"], 1);
        assert_eq!(json["delivered"], 7);
        assert_eq!(json["oldest_pending_since"], "2027-01-15T08:00:00.000Z");
        assert_eq!(json["oldest_pending_age_seconds"], 95.5);

        // Nothing pending; a clock behind the store's is no negative age.
        let postgres = StoreBackend::Postgres(PostgresStoreConfig::new("postgres://db/p"));
        let report = Report::new(&postgres, &status(None), now);
        assert!(
            report.text().contains("(none pending)"),
            "{}",
            report.text()
        );
        assert!(report.json()["oldest_pending_since"].is_null());
        assert_eq!(
            report.json()["location"],
            "postgres://db/p (schema fincode_sidecar)"
        );
        let ahead = Report::new(&sqlite, &status(Some(now + Duration::from_secs(5))), now);
        assert_eq!(ahead.json()["oldest_pending_age_seconds"], 0.0);
    }
}
