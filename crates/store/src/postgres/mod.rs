//! The shared backend: Postgres, for replicas that deliver one stream of webhooks
//! between them.
//!
//! **Client: tokio-postgres behind a deadpool-postgres pool**, rather than sqlx. Both
//! are async on tokio; tokio-postgres is small (a protocol crate and a client, no query
//! macros, no runtime abstraction, no second pool) and pipelines: statements issued
//! together on one connection go out in one write, which the insert path uses (its
//! advisory lock, insert, tombstone check and NOTIFY are one round trip). Its
//! connection also yields the server's asynchronous messages, which is how LISTEN
//! works here ([`listen`]). deadpool-postgres adds what a pool must: a checkout
//! timeout, so calls fail fast on a dead database instead of hanging, recycling that
//! drops closed connections (a backend killed by `pg_terminate_backend`), and a
//! prepared statement cache per connection. TLS is rustls with the ring provider,
//! through `tokio-postgres-rustls` (its `ring` feature keeps aws-lc-rs out).
//!
//! How the trait's promises are kept with several replicas on one database:
//! - **Dedupe**: a unique `dedupe_key`, and the tombstone table checked after the
//!   insert in the same transaction (after: an insert racing a purge of its key waits
//!   for the purge's row lock, and its tombstone check then sees the purge's commit).
//! - **Per-key arrival order**: inserts of one ordering key take a transaction-scoped
//!   advisory lock on it before taking an id, so ids increase in commit order per key,
//!   whichever replica inserts.
//! - **Claims**: one `UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED)`: two
//!   replicas claiming at once skip each other's rows instead of waiting or double
//!   claiming; generation and attempts rise in the same statement.
//! - **Clock**: leases and due times follow the database's clock ([`clock`]).
//! - **Schema**: migrated at start-up under an advisory lock ([`schema`]).
//! - **Purge**: in chunks of [`PURGE_CHUNK`] rows, one transaction each, one replica at a
//!   time (a session advisory lock; the others skip their purge).
//! - **Wake-ups**: committed inserts are followed by a NOTIFY; [`EventStore::watch_inserts`]
//!   listens. Not inside the insert's transaction: a NOTIFY takes a database-wide lock
//!   at commit and holds it through the WAL flush, so every notifying commit waited for
//!   the one before it (measured on the ingest bench, 64 concurrent inserts: 950
//!   inserts/s with the NOTIFY in the transaction, 3 840/s without). One task sends the
//!   NOTIFYs instead, after the commits, coalescing those that pile up while it sends
//!   one, with `synchronous_commit` off (a notification is not data).

mod clock;
mod connect;
mod listen;
mod schema;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Row, Statement};
use tokio_postgres_rustls::MakeRustlsConnect;

use self::clock::{Clock, database_millis};
use self::schema::{MigrateError, ORDER_KEY_LOCK_CLASS, PURGE_LOCK_CLASS, SCHEMA_VERSION};
use crate::health::LastFailure;
use crate::sqlite::codec::{
    InsertRow, add_millis, decode_headers, from_millis, sql_limit, to_millis,
};
use crate::{
    Claimed, Counts, EventId, EventStore, Health, Inserted, Lease, NewEvent, Status, StoreError,
    StoredEvent, UNHEALTHY_AFTER_FAILURES,
};

/// How long a call waits for a free pooled connection (or for a new one to open) before
/// failing: a dead database fails webhook acknowledgements in seconds, not never.
const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(5);

/// Rows a purge deletes per transaction, as in SQLite: short transactions, short locks.
const PURGE_CHUNK: i64 = 1_000;

/// How a [`PostgresStore`] connects.
#[derive(Clone, Debug)]
pub struct PostgresOptions {
    /// `postgres://user@host:port/dbname` (never holds a password; the caller checks
    /// that, and [`PostgresStore::connect`] refuses one). Query parameters such as
    /// `application_name` are honoured.
    pub url: String,
    /// From the variable `store.password_env` names, if any.
    pub password: Option<secrecy::SecretString>,
    /// Whether and how to verify the server.
    pub tls: PostgresTls,
    /// Connections in the pool (at least 1).
    pub pool_size: usize,
    /// The schema holding the tables (created if missing); tests use one schema each.
    pub schema: String,
}

/// TLS to the database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PostgresTls {
    /// Plain TCP (a database on the same host or a private, encrypted network).
    Disable,
    /// TLS required, the certificate checked against the CA and the URL's host name.
    VerifyFull {
        /// A PEM file of CA certificates; `None` trusts the webpki (Mozilla) roots.
        ca_file: Option<std::path::PathBuf>,
    },
}

/// Webhook events in Postgres, shared by every replica pointed at the same schema.
///
/// **Clock.** Lease expiry and due times are judged by the database's clock, not the
/// replica's, so replicas with disagreeing clocks still agree on when a lease ran out.
/// The trait passes a caller `now` (tests move time with it, without sleeping): the
/// store reads it as the present plus an offset, and adds the measured difference
/// between the database's clock and this replica's. In production callers pass
/// `SystemTime::now()`, so the database's clock rules; a test passing `now + 1 h` moves
/// the database's "now" an hour on. The `clock` module says why the difference is
/// measured apart from the statements.
///
/// **Health.** Unhealthy after [`UNHEALTHY_AFTER_FAILURES`] failed calls in a row
/// (including calls that found no connection within the checkout timeout), healthy
/// again after one success.
///
/// ```no_run
/// # async fn example() -> Result<(), fincode_store::StoreError> {
/// use std::sync::Arc;
/// use fincode_store::{EventStore, PostgresOptions, PostgresStore, PostgresTls};
///
/// let store: Arc<dyn EventStore> = Arc::new(
///     PostgresStore::connect(PostgresOptions {
///         url: "postgres://fincode@db.internal:5432/payments".to_owned(),
///         password: None,
///         tls: PostgresTls::VerifyFull { ca_file: None },
///         pool_size: 16,
///         schema: "fincode_sidecar".to_owned(),
///     })
///     .await?,
/// );
/// println!("{:?}", store.counts().await?);
/// # Ok(())
/// # }
/// ```
pub struct PostgresStore {
    pool: Pool,
    /// For the LISTEN connections, which live outside the pool.
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    schema: String,
    /// The database and schema, for messages (no password).
    shown: String,
    clock: Clock,
    /// Operations failed in a row, and the last failure: for [`EventStore::health`].
    failures: AtomicU32,
    last_failure: LastFailure,
    /// Signalled after each committed insert; the notifier task sends the NOTIFY.
    inserted: Arc<Notify>,
    /// The notifier and LISTEN tasks, aborted on drop.
    watchers: Mutex<Vec<JoinHandle<()>>>,
}

// === impl PostgresStore ===

impl PostgresStore {
    /// Connects, creates the schema if missing and migrates it (one replica at a time),
    /// and measures the database clock.
    ///
    /// Fails with [`StoreError::Open`], naming the database (never the password) and
    /// what to fix, when the URL is malformed or holds a password, the schema name is
    /// not a plain identifier, the CA file is unreadable, the server cannot be reached,
    /// refuses TLS or the credentials, or its schema is newer than this build.
    pub async fn connect(options: PostgresOptions) -> Result<Self, StoreError> {
        let connect::Prepared { config, tls, shown } = connect::prepare(&options)?;
        let open_error = |detail: String| StoreError::open(shown.clone(), detail);
        let manager = Manager::from_config(
            config.clone(),
            tls.clone(),
            ManagerConfig {
                // A closed connection (killed backend, network error) is dropped at
                // checkout; a live one is reused without a round trip.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .wait_timeout(Some(CHECKOUT_TIMEOUT))
            .create_timeout(Some(connect::CONNECT_TIMEOUT))
            .recycle_timeout(Some(CHECKOUT_TIMEOUT))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|error| {
                open_error(format!("cannot build the connection pool: {error}")).caused_by(error)
            })?;
        let mut client = pool
            .get()
            .await
            .map_err(|error| pool_cause(open_error(connect_hint(&pool_detail(&error))), error))?;
        schema::migrate(&mut client, &options.schema)
            .await
            .map_err(|error| match error {
                MigrateError::Postgres(error) => open_error(format!(
                    "cannot create or migrate the schema: {}",
                    db_detail(&error)
                ))
                .caused_by(pg_cause(error)),
                MigrateError::TooNew(found) => open_error(format!(
                    "its schema version {found} is newer than this sidecar's \
                     ({SCHEMA_VERSION}); run a newer sidecar or use another schema"
                )),
            })?;
        let offset = measure_clock(&client).await.map_err(|error| {
            open_error(format!("cannot read the database clock: {error}"))
                .caused_by(pg_cause(error))
        })?;
        drop(client);
        tracing::info!(database = %shown, clock_offset_ms = offset, "webhook store connected");
        let inserted = Arc::new(Notify::new());
        let notifier = tokio::spawn(listen::notify_forever(
            pool.clone(),
            options.schema.clone(),
            Arc::clone(&inserted),
        ));
        Ok(Self {
            pool,
            config,
            tls,
            schema: options.schema,
            shown,
            clock: Clock::new(offset),
            failures: AtomicU32::new(0),
            last_failure: LastFailure::default(),
            inserted,
            watchers: Mutex::new(vec![notifier]),
        })
    }

    /// A pooled connection, and the clock offset (measured again on it when stale).
    async fn client(&self, operation: &'static str) -> Result<(Object, i64), StoreError> {
        let client =
            self.pool.get().await.map_err(|error| {
                pool_cause(StoreError::io(operation, pool_detail(&error)), error)
            })?;
        if self.clock.start_measuring() {
            let measured = measure_clock(&client).await;
            if let Err(error) = &measured {
                tracing::warn!(%error, "cannot read the database clock; keeping the last offset");
            }
            self.clock.measured(measured.ok());
        }
        Ok((client, self.clock.offset_ms()))
    }

    /// [`PostgresStore::client`], with `sql` prepared on the connection (from its
    /// statement cache).
    async fn prepare(
        &self,
        operation: &'static str,
        sql: &'static str,
    ) -> Result<(Object, Statement, i64), StoreError> {
        let (client, offset) = self.client(operation).await?;
        let statement = client
            .prepare_cached(sql)
            .await
            .map_err(db_error(operation))?;
        Ok((client, statement, offset))
    }

    /// Counts `result` towards [`EventStore::health`] and passes it on.
    fn observe<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        self.last_failure.observe(&self.failures, result)
    }

    async fn insert_once(&self, row: &InsertRow) -> Result<Option<Inserted>, StoreError> {
        const OP: &str = "insert";
        let (mut client, offset) = self.client(OP).await?;
        let due = row.received_at.saturating_add(offset);
        let tx = client.transaction().await.map_err(db_error(OP))?;
        let (lock, insert, tombstone, existing) = tokio::try_join!(
            tx.prepare_cached("SELECT pg_advisory_xact_lock($1, hashtext($2))"),
            tx.prepare_cached(INSERT_SQL),
            tx.prepare_cached("SELECT event_id FROM dedupe_tombstones WHERE dedupe_key = $1"),
            tx.prepare_cached("SELECT id FROM events WHERE dedupe_key = $1"),
        )
        .map_err(db_error(OP))?;
        // One round trip: the statements are sent together and run in this order. The
        // tombstone and existing-row checks come after the insert so that they see
        // whatever a concurrent insert or purge of the key committed while the insert
        // waited for it.
        let body: &[u8] = &row.body;
        let lock_params: [&(dyn ToSql + Sync); 2] = [&ORDER_KEY_LOCK_CLASS, &row.order_key];
        let insert_params: [&(dyn ToSql + Sync); 8] = [
            &row.dedupe_key,
            &row.order_key,
            &row.correlation_id,
            &body,
            &row.headers,
            &row.received_at,
            &due,
            &row.uid,
        ];
        let key_params: [&(dyn ToSql + Sync); 1] = [&row.dedupe_key];
        let (_, inserted, purged, existing) = tokio::try_join!(
            async {
                match &row.order_key {
                    Some(_) => tx.execute(&lock, &lock_params).await,
                    None => Ok(0),
                }
            },
            tx.query_opt(&insert, &insert_params),
            tx.query_opt(&tombstone, &key_params),
            tx.query_opt(&existing, &key_params),
        )
        .map_err(db_error(OP))?;
        let column = |row: &Row| row.try_get::<_, i64>(0).map_err(db_error(OP));
        let outcome = match (inserted, purged, existing) {
            // A purged event's key, still remembered: a duplicate all the same.
            (_, Some(purged), _) => Some(Inserted::Duplicate(column(&purged)?)),
            (Some(inserted), None, _) => Some(Inserted::New(column(&inserted)?)),
            (None, None, Some(existing)) => Some(Inserted::Duplicate(column(&existing)?)),
            // The conflicting row was purged (and its key forgotten) meanwhile: again.
            (None, None, None) => None,
        };
        match outcome {
            Some(Inserted::New(_)) => {
                tx.commit().await.map_err(db_error(OP))?;
                self.inserted.notify_one();
            }
            _ => tx.rollback().await.map_err(db_error(OP))?,
        }
        Ok(outcome)
    }

    /// Applies `sql` (an UPDATE fenced by id, owner, generation and pending status, with
    /// `extra` parameters from `$4`) and says whether it changed the event.
    async fn mark(
        &self,
        lease: &Lease,
        sql: &'static str,
        extra: Extra<'_>,
    ) -> Result<bool, StoreError> {
        const OP: &str = "mark";
        let (client, statement, offset) = self.prepare(OP, sql).await?;
        let generation = i64::try_from(lease.generation).unwrap_or(i64::MAX);
        let base: [&(dyn ToSql + Sync); 3] = [&lease.event, &lease.owner, &generation];
        let changed = match extra {
            Extra::None => client.execute(&statement, &base).await,
            Extra::Due(next) => {
                let next = database_millis(next, offset);
                client
                    .execute(&statement, &[base[0], base[1], base[2], &next])
                    .await
            }
            Extra::DueAndError(next, error) => {
                let next = database_millis(next, offset);
                client
                    .execute(&statement, &[base[0], base[1], base[2], &next, &error])
                    .await
            }
            Extra::Error(error) => {
                client
                    .execute(&statement, &[base[0], base[1], base[2], &error])
                    .await
            }
        }
        .map_err(db_error(OP))?;
        Ok(changed == 1)
    }

    async fn select_events(
        &self,
        operation: &'static str,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let (client, statement, offset) = self.prepare(operation, sql).await?;
        let rows = client
            .query(&statement, params)
            .await
            .map_err(db_error(operation))?;
        rows.iter()
            .map(|row| event_from_row(row, offset, operation))
            .collect()
    }

    async fn replay_where(
        &self,
        target: Option<EventId>,
        now: SystemTime,
    ) -> Result<u64, StoreError> {
        const OP: &str = "replay";
        let sql = match target {
            Some(_) => REPLAY_ONE_SQL,
            None => REPLAY_ALL_DEAD_SQL,
        };
        let (client, statement, offset) = self.prepare(OP, sql).await?;
        let pending_since = to_millis(now);
        let due = database_millis(now, offset);
        let Some(id) = target else {
            return client
                .execute(&statement, &[&due, &pending_since])
                .await
                .map_err(db_error(OP));
        };
        let found: bool = client
            .query_one(&statement, &[&due, &pending_since, &id])
            .await
            .and_then(|row| row.try_get(0))
            .map_err(db_error(OP))?;
        Ok(u64::from(found))
    }

    async fn purge(
        &self,
        before: SystemTime,
        forget_keys_before: SystemTime,
    ) -> Result<u64, StoreError> {
        const OP: &str = "purge_delivered";
        let (client, _) = self.client(OP).await?;
        let mut session = SessionLock {
            client: Some(client),
            held: true,
        };
        let client = session.client()?;
        let locked: bool = client
            .query_one(
                "SELECT pg_try_advisory_lock($1, hashtext($2))",
                &[&PURGE_LOCK_CLASS, &self.schema],
            )
            .await
            .and_then(|row| row.try_get(0))
            .map_err(db_error(OP))?;
        if !locked {
            // Another replica is purging the same rows right now: nothing to add to it.
            tracing::debug!("another replica is purging the webhook store; skipping");
            session.held = false;
            return Ok(0);
        }
        let purged = purge_chunks(client, to_millis(before), to_millis(forget_keys_before)).await;
        let unlocked = client
            .execute(
                "SELECT pg_advisory_unlock($1, hashtext($2))",
                &[&PURGE_LOCK_CLASS, &self.schema],
            )
            .await;
        session.held = unlocked.is_err();
        let purged = purged.map_err(db_error(OP))?;
        unlocked.map_err(db_error(OP))?;
        Ok(purged)
    }

    async fn scalar_i64(
        &self,
        operation: &'static str,
        sql: &'static str,
    ) -> Result<Option<i64>, StoreError> {
        let (client, statement, _) = self.prepare(operation, sql).await?;
        client
            .query_one(&statement, &[])
            .await
            .and_then(|row| row.try_get(0))
            .map_err(db_error(operation))
    }
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("database", &self.shown)
            .finish_non_exhaustive()
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        for watcher in self
            .watchers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            watcher.abort();
        }
        self.pool.close();
    }
}

#[async_trait::async_trait]
impl EventStore for PostgresStore {
    async fn insert(&self, event: NewEvent) -> Result<Inserted, StoreError> {
        let row = InsertRow::new(event)?;
        // A retry only when the row the insert collided with vanished (purged, its key
        // forgotten) between the insert and the look-up: rare, so a few tries suffice.
        for _ in 0..3 {
            match self.insert_once(&row).await {
                Ok(Some(inserted)) => return self.observe(Ok(inserted)),
                Ok(None) => {}
                Err(error) => return self.observe(Err(error)),
            }
        }
        self.observe(Err(StoreError::io(
            "insert",
            "the dedupe key kept changing hands; try again",
        )))
    }

    async fn claim_due(
        &self,
        now: SystemTime,
        limit: usize,
        lease: Duration,
        owner: &str,
    ) -> Result<Vec<Claimed>, StoreError> {
        const OP: &str = "claim_due";
        let result = async {
            if limit == 0 {
                return Ok(Vec::new());
            }
            let (client, statement, offset) = self.prepare(OP, CLAIM_SQL).await?;
            let now = database_millis(now, offset);
            let limit = sql_limit(limit);
            let lease_until = add_millis(now, lease);
            let rows = client
                .query(&statement, &[&now, &limit, &owner, &lease_until])
                .await
                .map_err(db_error(OP))?;
            let mut claimed = Vec::with_capacity(rows.len());
            for row in &rows {
                let generation: i64 = row.try_get(13).map_err(db_error(OP))?;
                let due: i64 = row.try_get(9).map_err(db_error(OP))?;
                let event = event_from_row(row, offset, OP)?;
                claimed.push((
                    due,
                    Claimed {
                        lease: Lease {
                            event: event.id,
                            owner: owner.to_owned(),
                            generation: u64::try_from(generation).unwrap_or_default(),
                        },
                        event,
                    },
                ));
            }
            // RETURNING keeps no order: put them back in claim order.
            claimed.sort_by_key(|(due, claimed)| (*due, claimed.event.id));
            Ok(claimed.into_iter().map(|(_, claimed)| claimed).collect())
        }
        .await;
        self.observe(result)
    }

    async fn mark_delivered(&self, lease: &Lease) -> Result<bool, StoreError> {
        let result = self.mark(lease, MARK_DELIVERED_SQL, Extra::None).await;
        self.observe(result)
    }

    async fn mark_failed(
        &self,
        lease: &Lease,
        next_attempt_at: SystemTime,
        error: &str,
    ) -> Result<bool, StoreError> {
        let extra = Extra::DueAndError(next_attempt_at, error);
        let result = self.mark(lease, MARK_FAILED_SQL, extra).await;
        self.observe(result)
    }

    async fn mark_superseded(
        &self,
        lease: &Lease,
        next_attempt_at: SystemTime,
    ) -> Result<bool, StoreError> {
        let extra = Extra::Due(next_attempt_at);
        let result = self.mark(lease, MARK_SUPERSEDED_SQL, extra).await;
        self.observe(result)
    }

    async fn mark_dead(&self, lease: &Lease, error: &str) -> Result<bool, StoreError> {
        let result = self.mark(lease, MARK_DEAD_SQL, Extra::Error(error)).await;
        self.observe(result)
    }

    async fn get(&self, id: EventId) -> Result<Option<StoredEvent>, StoreError> {
        let result = self.select_events("get", GET_SQL, &[&id]).await;
        self.observe(result.map(|events| events.into_iter().next()))
    }

    async fn list(
        &self,
        status: Option<Status>,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let limit = sql_limit(limit);
        // Two statements rather than `$1 IS NULL OR status = $1`, which would keep the
        // planner from the status index.
        let result = match status {
            None => self.select_events("list", LIST_ALL_SQL, &[&limit]).await,
            Some(status) => {
                let status = status.as_str();
                self.select_events("list", LIST_BY_STATUS_SQL, &[&status, &limit])
                    .await
            }
        };
        self.observe(result)
    }

    async fn replay(&self, id: EventId, now: SystemTime) -> Result<bool, StoreError> {
        let result = self.replay_where(Some(id), now).await;
        self.observe(result.map(|found| found > 0))
    }

    async fn replay_all_dead(&self, now: SystemTime) -> Result<u64, StoreError> {
        let result = self.replay_where(None, now).await;
        self.observe(result)
    }

    async fn counts(&self) -> Result<Counts, StoreError> {
        const OP: &str = "counts";
        let result = async {
            let (client, statement, _) = self.prepare(OP, COUNTS_SQL).await?;
            let rows = client.query(&statement, &[]).await.map_err(db_error(OP))?;
            let mut counts = Counts::default();
            for row in rows {
                let status: String = row.try_get(0).map_err(db_error(OP))?;
                counts.record(&status, row.try_get(1).map_err(db_error(OP))?);
            }
            Ok(counts)
        }
        .await;
        self.observe(result)
    }

    async fn count_pending(&self) -> Result<u64, StoreError> {
        let result = self.scalar_i64("count_pending", COUNT_PENDING_SQL).await;
        self.observe(result.map(|count| u64::try_from(count.unwrap_or(0)).unwrap_or_default()))
    }

    async fn oldest_pending(&self) -> Result<Option<SystemTime>, StoreError> {
        let result = self.scalar_i64("oldest_pending", OLDEST_PENDING_SQL).await;
        self.observe(result.map(|oldest| oldest.map(from_millis)))
    }

    fn health(&self) -> Health {
        if self.pool.is_closed() {
            return Health::Unhealthy("the webhook store is closed".to_owned());
        }
        let failures = self.failures.load(Ordering::Relaxed);
        if failures >= UNHEALTHY_AFTER_FAILURES {
            return Health::Unhealthy(format!(
                "the last {failures} webhook store operations on {} failed: {}",
                self.shown,
                self.last_failure.message()
            ));
        }
        Health::Healthy
    }

    async fn purge_delivered(
        &self,
        before: SystemTime,
        forget_keys_before: SystemTime,
    ) -> Result<u64, StoreError> {
        let result = self.purge(before, forget_keys_before).await;
        self.observe(result)
    }

    fn watch_inserts(&self, wake: Arc<Notify>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!("watch_inserts called outside a tokio runtime; relying on polling");
            return;
        };
        let task = runtime.spawn(listen::listen_forever(
            self.config.clone(),
            self.tls.clone(),
            self.schema.clone(),
            wake,
        ));
        self.watchers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(task);
    }
}

// === SQL ===

/// `$1..$8`: dedupe key, order key, correlation id, body, headers, received_at, due
/// (received_at in the database clock), uid.
const INSERT_SQL: &str = "INSERT INTO events (dedupe_key, order_key, correlation_id, body, \
         headers, received_at, status, attempts, next_attempt_at, uid, pending_since) \
     VALUES ($1, $2, $3, $4, $5, $6, 'pending', 0, $7, $8, $6) \
     ON CONFLICT (dedupe_key) DO NOTHING RETURNING id";

/// Pending, due, unleased events with no earlier pending, not superseded event of the
/// same ordering key, earliest due first, then oldest, locked with SKIP LOCKED so
/// concurrent claimants (other replicas) pass over each other's rows; leased to `$3`
/// until `$4` with generation and attempts raised in the same statement. `$1` now (the
/// database clock), `$2` the limit. Returns the event columns, then the generation.
///
/// A row another claimant holds locked is skipped, but still counts in the ordering
/// check (that reads the committed rows): an event never overtakes an earlier one of
/// its key, whoever is claiming it.
///
/// A MATERIALIZED CTE, not `UPDATE ... WHERE id IN (SELECT ... LIMIT)`: the planner may
/// rescan that subquery per row, and a rescan skips the rows this very statement
/// already locked and updated, so it claimed past the limit (measured: 3 of limit 2).
const CLAIM_SQL: &str = concat!(
    "WITH claimable AS MATERIALIZED ( \
         SELECT e.id AS claim_id FROM events AS e \
         WHERE e.status = 'pending' AND e.next_attempt_at <= $1 \
           AND (e.lease_until IS NULL OR e.lease_until <= $1) \
           AND (e.order_key IS NULL OR NOT EXISTS ( \
                 SELECT 1 FROM events AS earlier \
                 WHERE earlier.order_key = e.order_key AND earlier.id < e.id \
                   AND earlier.status = 'pending' AND NOT earlier.superseded)) \
         ORDER BY e.next_attempt_at, e.id \
         LIMIT $2 \
         FOR UPDATE SKIP LOCKED) \
     UPDATE events SET lease_owner = $3, lease_until = $4, \
         lease_generation = lease_generation + 1, attempts = attempts + 1 \
     FROM claimable WHERE events.id = claimable.claim_id \
     RETURNING ",
    event_columns!(),
    ", lease_generation"
);

/// The fence every mark applies under: `$1` event, `$2` owner, `$3` generation. Matched
/// on owner and generation, not `lease_until`: a lease that ran out but that nobody
/// claimed since still records its (real) outcome.
macro_rules! fenced {
    ($set:literal) => {
        concat!(
            "UPDATE events SET ",
            $set,
            ", lease_owner = NULL, lease_until = NULL \
             WHERE id = $1 AND lease_owner = $2 AND lease_generation = $3 \
               AND status = 'pending'"
        )
    };
}

const MARK_DELIVERED_SQL: &str = fenced!("status = 'delivered'");
/// `$4` next attempt (database clock), `$5` error.
const MARK_FAILED_SQL: &str = fenced!("next_attempt_at = $4, last_error = $5");
/// `$4` next attempt (database clock).
const MARK_SUPERSEDED_SQL: &str =
    fenced!("next_attempt_at = $4, last_error = 'superseded', superseded = true");
/// `$4` error.
const MARK_DEAD_SQL: &str = fenced!("status = 'dead', last_error = $4");

const GET_SQL: &str = concat!("SELECT ", event_columns!(), " FROM events WHERE id = $1");
const LIST_ALL_SQL: &str = concat!(
    "SELECT ",
    event_columns!(),
    " FROM events ORDER BY id DESC LIMIT $1"
);
const LIST_BY_STATUS_SQL: &str = concat!(
    "SELECT ",
    event_columns!(),
    " FROM events WHERE status = $1 ORDER BY id DESC LIMIT $2"
);
const COUNTS_SQL: &str = "SELECT status, COUNT(*) FROM events GROUP BY status";
const COUNT_PENDING_SQL: &str = "SELECT COUNT(*) FROM events WHERE status = 'pending'";
const OLDEST_PENDING_SQL: &str = "SELECT MIN(pending_since) FROM events WHERE status = 'pending'";

/// The reset a replay makes: `$1` due (database clock), `$2` pending since.
macro_rules! replay_reset {
    () => {
        "UPDATE events SET status = 'pending', attempts = 0, next_attempt_at = $1, \
         pending_since = $2, last_error = NULL, superseded = false, lease_owner = NULL, \
         lease_until = NULL"
    };
}
const REPLAY_ALL_DEAD_SQL: &str = concat!(replay_reset!(), " WHERE status = 'dead'");
/// `$3` the event. A pending event is left alone (already due or leased); whether the
/// event exists at all comes from the statement's snapshot, taken before the update.
const REPLAY_ONE_SQL: &str = concat!(
    "WITH replayed AS (",
    replay_reset!(),
    " WHERE id = $3 AND status <> 'pending' RETURNING id) \
     SELECT EXISTS (SELECT 1 FROM events WHERE id = $3)"
);

/// One chunk of old delivered events deleted, their keys kept as tombstones while
/// received at or after `$3`; `$1` before, `$2` the chunk size. Returns the count.
const PURGE_CHUNK_SQL: &str = "WITH chunk AS ( \
         DELETE FROM events WHERE id IN ( \
             SELECT id FROM events WHERE status = 'delivered' AND received_at < $1 \
             ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED) \
           AND status = 'delivered' \
         RETURNING id, dedupe_key, received_at), \
     kept AS ( \
         INSERT INTO dedupe_tombstones (dedupe_key, event_id, received_at) \
         SELECT dedupe_key, id, received_at FROM chunk WHERE received_at >= $3 \
         ON CONFLICT (dedupe_key) DO UPDATE \
             SET event_id = EXCLUDED.event_id, received_at = EXCLUDED.received_at) \
     SELECT COUNT(*) FROM chunk";

/// One chunk of tombstones past the key retention: `$1` forget before, `$2` chunk size.
const FORGET_CHUNK_SQL: &str = "DELETE FROM dedupe_tombstones WHERE dedupe_key IN ( \
         SELECT dedupe_key FROM dedupe_tombstones WHERE received_at < $1 LIMIT $2)";

// === helpers ===

/// A mark's parameters after the fence's three.
enum Extra<'a> {
    None,
    Due(SystemTime),
    DueAndError(SystemTime, &'a str),
    Error(&'a str),
}

/// A pooled connection that may hold the purge's session advisory lock. While `held`, it
/// is taken out of the pool when dropped (a failed or cancelled purge), so the
/// connection closes and the server drops the lock, rather than a pooled connection
/// keeping it and stopping every later purge.
struct SessionLock {
    /// `None` only during drop.
    client: Option<Object>,
    held: bool,
}

// === impl SessionLock ===

impl SessionLock {
    fn client(&self) -> Result<&Object, StoreError> {
        self.client.as_ref().ok_or(StoreError::Closed)
    }
}

impl Drop for SessionLock {
    fn drop(&mut self) {
        if self.held
            && let Some(client) = self.client.take()
        {
            drop(Object::take(client));
        }
    }
}

/// Deletes old delivered events in chunks, then forgets old tombstones in chunks; each
/// chunk is its own transaction. Returns the events deleted.
async fn purge_chunks(
    client: &Object,
    before: i64,
    forget_keys_before: i64,
) -> Result<u64, tokio_postgres::Error> {
    let purge = client.prepare_cached(PURGE_CHUNK_SQL).await?;
    let mut deleted = 0_u64;
    loop {
        let count: i64 = client
            .query_one(&purge, &[&before, &PURGE_CHUNK, &forget_keys_before])
            .await?
            .try_get(0)?;
        deleted += u64::try_from(count).unwrap_or_default();
        if count < PURGE_CHUNK {
            break;
        }
    }
    let forget = client.prepare_cached(FORGET_CHUNK_SQL).await?;
    while client
        .execute(&forget, &[&forget_keys_before, &PURGE_CHUNK])
        .await?
        >= PURGE_CHUNK as u64
    {}
    Ok(deleted)
}

/// Measures the database clock against this replica's ([`clock::SAMPLES`] samples).
async fn measure_clock(client: &Object) -> Result<i64, tokio_postgres::Error> {
    let statement = client.prepare_cached(clock::DATABASE_CLOCK_SQL).await?;
    let mut samples = Vec::with_capacity(clock::SAMPLES);
    for _ in 0..clock::SAMPLES {
        let replica_before = clock::replica_micros();
        let database: i64 = client.query_one(&statement, &[]).await?.try_get(0)?;
        let replica_after = clock::replica_micros();
        samples.push(clock::Sample {
            replica_before,
            database,
            replica_after,
        });
    }
    Ok(clock::offset_from_samples(&samples))
}

/// A row selected with `event_columns!()`; `offset` converts `next_attempt_at` from
/// the database clock back to the caller's.
fn event_from_row(
    row: &Row,
    offset: i64,
    operation: &'static str,
) -> Result<StoredEvent, StoreError> {
    let db = db_error(operation);
    let corrupt =
        |what: &str| StoreError::io(operation, format!("a stored event has a corrupt {what}"));
    let headers: Vec<u8> = row.try_get(5).map_err(&db)?;
    let status: String = row.try_get(7).map_err(&db)?;
    let attempts: i32 = row.try_get(8).map_err(&db)?;
    let next_attempt_at: i64 = row.try_get(9).map_err(&db)?;
    Ok(StoredEvent {
        id: row.try_get(0).map_err(&db)?,
        uid: row.try_get(11).map_err(&db)?,
        dedupe_key: row.try_get(1).map_err(&db)?,
        order_key: row.try_get(2).map_err(&db)?,
        correlation_id: row.try_get(3).map_err(&db)?,
        body: Bytes::from(row.try_get::<_, Vec<u8>>(4).map_err(&db)?),
        headers: decode_headers(&headers).ok_or_else(|| corrupt("headers"))?,
        received_at: from_millis(row.try_get(6).map_err(&db)?),
        pending_since: from_millis(row.try_get(12).map_err(&db)?),
        status: Status::parse(&status).ok_or_else(|| corrupt("status"))?,
        attempts: u32::try_from(attempts).map_err(|_| corrupt("attempts"))?,
        next_attempt_at: from_millis(next_attempt_at.saturating_sub(offset)),
        last_error: row.try_get(10).map_err(&db)?,
    })
}

/// Maps a failed statement to [`StoreError::Io`] naming the operation.
fn db_error(operation: &'static str) -> impl Fn(tokio_postgres::Error) -> StoreError {
    move |error| StoreError::io(operation, db_detail(&error)).caused_by(pg_cause(error))
}

/// The error with its cause (Postgres's messages name tables and constraints, not
/// values; the details that would name values are left out).
fn db_detail(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => error.to_string(),
    }
}

/// `error` as a [`StoreError`]'s cause: as it is, unless it carries a server error,
/// whose `DETAIL` may name values (a duplicate key's, say); then only what
/// [`db_detail`] shows, as [`DbFailure`].
fn pg_cause(error: tokio_postgres::Error) -> crate::BoxError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    while let Some(current) = cause {
        if current.is::<tokio_postgres::error::DbError>() {
            return Box::new(DbFailure(db_detail(&error)));
        }
        cause = current.source();
    }
    Box::new(error)
}

/// Keeps what the pool failed with behind `store_error`: the connection error of a
/// [`PoolError::Backend`] (as [`pg_cause`] redacts it), or the pool's own error
/// otherwise.
fn pool_cause(store_error: StoreError, error: PoolError) -> StoreError {
    match error {
        PoolError::Backend(error) => store_error.caused_by(pg_cause(error)),
        // A post-create hook's error may wrap a server error too: not kept.
        PoolError::PostCreateHook(_) => store_error,
        other => store_error.caused_by(other),
    }
}

/// A server error in the words [`db_detail`] uses (message and SQLSTATE), without the
/// `DETAIL` and `WHERE` parts that would name values.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct DbFailure(String);

/// A pool failure: no connection within the checkout timeout, or one that could not be
/// opened.
fn pool_detail(error: &PoolError) -> String {
    match error {
        PoolError::Timeout(_) => format!(
            "no database connection within {}s (the database is down, unreachable or \
             every pooled connection is busy)",
            CHECKOUT_TIMEOUT.as_secs()
        ),
        PoolError::Backend(error) => format!("cannot connect: {}", db_detail(error)),
        other => other.to_string(),
    }
}

/// Adds what to check to a connection failure at start-up.
fn connect_hint(detail: &str) -> String {
    format!(
        "{detail}; check the URL's host, port, user and database, the password variable \
         (store.password_env), and for TLS that the CA file signed the server's \
         certificate and the URL's host is a name in it"
    )
}
