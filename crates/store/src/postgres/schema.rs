//! The schema: created if missing and migrated at start-up, one replica at a time.

use tokio_postgres::Client;

/// Advisory lock classes (the first key of the two-key form), so the store's locks never
/// meet another application's single-key locks. The second key is per schema (or per
/// ordering key), so stores in different schemas do not wait for each other.
pub(super) const MIGRATE_LOCK_CLASS: i32 = 0x6663_0001;
/// One purge at a time per schema (see `purge_delivered`).
pub(super) const PURGE_LOCK_CLASS: i32 = 0x6663_0002;
/// Inserts of one ordering key, one at a time (see `insert`).
pub(super) const ORDER_KEY_LOCK_CLASS: i32 = 0x6663_0003;

/// Migration `n` (1-based) takes the schema from version `n - 1` to `n`. Append only: a
/// released migration is never edited. Columns mean what the SQLite schema's do (see
/// `sqlite/schema.rs` for why each exists); times are unix milliseconds, so both
/// backends keep the same precision and the conformance suite's exact times hold.
const MIGRATIONS: &[&str] = &[
    // 1: events and tombstones, in their final shape (the SQLite schema's 7 steps).
    // `next_attempt_at` and `lease_until` are in the database's clock (see `clock`).
    "CREATE TABLE events (
        id               BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        uid              UUID    NOT NULL UNIQUE,
        dedupe_key       TEXT    NOT NULL UNIQUE,
        order_key        TEXT,
        correlation_id   TEXT    NOT NULL,
        body             BYTEA   NOT NULL,
        headers          BYTEA   NOT NULL,
        received_at      BIGINT  NOT NULL,
        pending_since    BIGINT  NOT NULL,
        status           TEXT    NOT NULL CHECK (status IN ('pending', 'delivered', 'dead')),
        attempts         INTEGER NOT NULL CHECK (attempts >= 0),
        next_attempt_at  BIGINT  NOT NULL,
        last_error       TEXT,
        lease_owner      TEXT,
        lease_until      BIGINT,
        lease_generation BIGINT  NOT NULL DEFAULT 0,
        superseded       BOOLEAN NOT NULL DEFAULT false
    );
    -- claim_due: due pending rows in claim order; also the pending count and oldest.
    CREATE INDEX events_pending_due ON events (next_attempt_at, id)
        WHERE status = 'pending';
    -- claim_due's ordering check: an earlier pending, not superseded event of the key.
    CREATE INDEX events_pending_order_key ON events (order_key, id)
        WHERE status = 'pending' AND NOT superseded AND order_key IS NOT NULL;
    -- list(status), newest first; replay_all_dead; purge (delivered rows by id).
    CREATE INDEX events_status_id ON events (status, id);
    CREATE TABLE dedupe_tombstones (
        dedupe_key  TEXT   PRIMARY KEY,
        event_id    BIGINT NOT NULL,
        received_at BIGINT NOT NULL
    );
    CREATE INDEX dedupe_tombstones_received ON dedupe_tombstones (received_at);",
];

/// The schema version this build writes.
#[allow(clippy::cast_possible_wrap)] // a handful of migrations
pub(super) const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// Why the schema could not be migrated.
#[derive(Debug)]
pub(super) enum MigrateError {
    Postgres(tokio_postgres::Error),
    TooNew(i32),
}

impl From<tokio_postgres::Error> for MigrateError {
    fn from(error: tokio_postgres::Error) -> Self {
        Self::Postgres(error)
    }
}

/// Whether `name` is a schema name used as is: lowercase ASCII letters, digits and
/// underscores, not starting with a digit, at most 63 bytes (Postgres's limit). Being
/// spliced into `search_path` and never quoted, nothing else is accepted.
pub(super) fn is_plain_identifier(name: &str) -> bool {
    let mut bytes = name.bytes();
    let Some(first) = bytes.next() else {
        return false;
    };
    name.len() <= 63
        && (first.is_ascii_lowercase() || first == b'_')
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Creates `schema` if missing and applies the migrations it lacks, holding an advisory
/// lock so replicas starting together migrate one after the other: the second waits,
/// then finds the schema current. The version table lives in the schema itself.
pub(super) async fn migrate(client: &mut Client, schema: &str) -> Result<(), MigrateError> {
    client
        .execute(
            "SELECT pg_advisory_lock($1, hashtext($2))",
            &[&MIGRATE_LOCK_CLASS, &schema],
        )
        .await?;
    let migrated = migrate_locked(client, schema).await;
    let unlocked = client
        .execute(
            "SELECT pg_advisory_unlock($1, hashtext($2))",
            &[&MIGRATE_LOCK_CLASS, &schema],
        )
        .await;
    migrated?;
    unlocked?;
    Ok(())
}

async fn migrate_locked(client: &mut Client, schema: &str) -> Result<(), MigrateError> {
    // The schema name was checked by `is_plain_identifier`: safe to splice.
    client
        .batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {schema};
             CREATE TABLE IF NOT EXISTS {schema}.schema_migrations (
                 version    INTEGER     PRIMARY KEY,
                 applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
             );"
        ))
        .await?;
    let found: i32 = client
        .query_one(
            &format!("SELECT COALESCE(MAX(version), 0) FROM {schema}.schema_migrations"),
            &[],
        )
        .await?
        .get(0);
    if found > SCHEMA_VERSION {
        return Err(MigrateError::TooNew(found));
    }
    let applied = usize::try_from(found).unwrap_or(0);
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        let version = i32::try_from(index + 1).unwrap_or(i32::MAX);
        let tx = client.transaction().await?;
        // Unqualified names in the migration land in the schema.
        tx.batch_execute(&format!("SET LOCAL search_path TO {schema}"))
            .await?;
        tx.batch_execute(sql).await?;
        tx.execute(
            &format!("INSERT INTO {schema}.schema_migrations (version) VALUES ($1)"),
            &[&version],
        )
        .await?;
        tx.commit().await?;
        tracing::info!(version, schema, "webhook store schema migrated");
    }
    Ok(())
}
