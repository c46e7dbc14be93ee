//! The Postgres backend against a real server: the conformance suite, one schema per
//! test, then what only a shared database brings: replicas migrating at once, TLS, a
//! refused password, backends killed under the pool, wake-ups across stores, the purge
//! lock, health.
//!
//! The server is `FINCODE_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`). Without one, each test says so on stderr
//! and passes; under `CI=true` it fails instead.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
#[path = "support/test_schema.rs"]
mod test_schema;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fincode_store::{
    EventStore, Health, Inserted, PostgresOptions, PostgresStore, PostgresTls, StoreError,
    conformance,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

use self::support::event;
use self::test_schema::{TestSchema, url};

/// The purge's advisory lock class (`schema::PURGE_LOCK_CLASS`), to hold it as another
/// replica would.
const PURGE_LOCK_CLASS: i32 = 0x6663_0002;

/// `url` with a query parameter added.
fn with_param(url: &str, param: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}{param}")
}

// === impl TestSchema ===

impl TestSchema {
    fn options(&self, application_name: &str) -> PostgresOptions {
        PostgresOptions {
            url: with_param(&url(), &format!("application_name={application_name}")),
            password: None,
            tls: PostgresTls::Disable,
            pool_size: 8,
            schema: self.name.clone(),
        }
    }

    async fn store(&self) -> Arc<PostgresStore> {
        Arc::new(
            PostgresStore::connect(self.options(&self.name))
                .await
                .unwrap(),
        )
    }
}

/// A store on a fresh schema, and the schema (dropped when the test ends); `None` without
/// a server.
async fn fresh_store() -> Option<(TestSchema, Arc<PostgresStore>)> {
    let schema = TestSchema::new().await?;
    let store = schema.store().await;
    Some((schema, store))
}

// === conformance ===

/// Runs `check` on a store of its own schema.
async fn on_a_fresh_schema(check: conformance::Check) {
    let Some((_schema, store)) = fresh_store().await else {
        return;
    };
    check(store).await;
}

support::conformance_tests!(on_a_fresh_schema);

// === start-up ===

/// Replicas starting together on a fresh schema: all connect, the schema is migrated
/// once (each version recorded once), and they share one store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_connects_migrate_a_fresh_schema_once() {
    let Some(schema) = TestSchema::new().await else {
        return;
    };
    let connects: Vec<_> = (0..4)
        .map(|n| {
            let options = schema.options(&format!("{}_{n}", schema.name));
            tokio::spawn(PostgresStore::connect(options))
        })
        .collect();
    let mut stores = Vec::new();
    for connect in connects {
        stores.push(connect.await.unwrap().expect("every replica connects"));
    }
    let rows = schema
        .rows("SELECT version FROM {schema}.schema_migrations ORDER BY version")
        .await;
    let versions: Vec<i32> = rows.iter().map(|row| row.get(0)).collect();
    let expected: Vec<i32> = (1..=i32::try_from(versions.len()).unwrap()).collect();
    assert!(!versions.is_empty());
    assert_eq!(versions, expected, "each migration applied exactly once");
    let Inserted::New(id) = stores[0].insert(event("shared")).await.unwrap() else {
        panic!("a fresh schema has no events")
    };
    assert_eq!(
        stores[3].insert(event("shared")).await.unwrap(),
        Inserted::Duplicate(id),
        "the replicas share one store"
    );
}

/// TLS with verify-full against the local server's certificate (the snakeoil cert,
/// issued to `localhost`): the connection is encrypted; a foreign CA and a host name
/// the certificate does not name are refused with errors that say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_verify_full_connects_and_refuses_a_wrong_ca_or_name() {
    let Some(schema) = TestSchema::new().await else {
        return;
    };
    let cert_file: String = schema.value("SHOW ssl_cert_file", &[]).await;
    let ssl: String = schema.value("SHOW ssl", &[]).await;
    if ssl != "on" || std::fs::metadata(&cert_file).is_err() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "the server has no readable TLS certificate ({cert_file}, ssl={ssl})"
        );
        eprintln!("SKIPPING the TLS test: ssl={ssl}, certificate {cert_file} not readable");
        return;
    }
    let config: tokio_postgres::Config = url().parse().unwrap();
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().unwrap_or("postgres");
    let dbname = config.get_dbname().unwrap_or("postgres");
    let app = format!("{}_tls", schema.name);
    let tls_url =
        |host: &str| format!("postgres://{user}@{host}:{port}/{dbname}?application_name={app}");
    let options = |host: &str, ca: &std::path::Path| PostgresOptions {
        tls: PostgresTls::VerifyFull {
            ca_file: Some(ca.to_owned()),
        },
        url: tls_url(host),
        ..schema.options(&app)
    };

    let store = PostgresStore::connect(options("localhost", std::path::Path::new(&cert_file)))
        .await
        .unwrap();
    store.insert(event("over-tls")).await.unwrap();
    let encrypted: Vec<bool> = schema
        .admin
        .query(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.application_name = $1",
            &[&app],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert!(!encrypted.is_empty(), "the store's connections are listed");
    assert!(
        encrypted.iter().all(|ssl| *ssl),
        "every connection uses TLS"
    );
    drop(store);

    // A CA that did not sign the server's certificate.
    let dir = tempfile::tempdir().unwrap();
    let foreign = dir.path().join("foreign-ca.pem");
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    std::fs::write(&foreign, params.self_signed(&key).unwrap().pem()).unwrap();
    let error = PostgresStore::connect(options("localhost", &foreign))
        .await
        .unwrap_err();
    let text = error.to_string();
    assert!(matches!(error, StoreError::Open { .. }), "{error:?}");
    assert!(text.contains("certificate"), "{text}");
    assert!(text.contains("CA file"), "names the fix: {text}");

    // The right CA, but a host name the certificate does not carry.
    let error = PostgresStore::connect(options("127.0.0.1", std::path::Path::new(&cert_file)))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("certificate"), "{error}");
}

/// A server that asks for a password and refuses it: the error says authentication
/// failed and never contains the password (the server did receive it).
#[tokio::test]
async fn a_refused_password_is_not_echoed() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        // StartupMessage: length, then the body.
        let len = socket.read_i32().await.unwrap();
        let mut startup = vec![0; usize::try_from(len - 4).unwrap()];
        socket.read_exact(&mut startup).await.unwrap();
        // AuthenticationCleartextPassword.
        socket
            .write_all(&[b'R', 0, 0, 0, 8, 0, 0, 0, 3])
            .await
            .unwrap();
        // PasswordMessage: 'p', length, the password and a NUL.
        assert_eq!(socket.read_u8().await.unwrap(), b'p');
        let len = socket.read_i32().await.unwrap();
        let mut password = vec![0; usize::try_from(len - 4).unwrap()];
        socket.read_exact(&mut password).await.unwrap();
        password.pop();
        let mut fields = Vec::new();
        for (code, value) in [
            (b'S', "FATAL"),
            (b'V', "FATAL"),
            (b'C', "28P01"),
            (b'M', "password authentication failed for user \"app\""),
        ] {
            fields.push(code);
            fields.extend_from_slice(value.as_bytes());
            fields.push(0);
        }
        fields.push(0);
        let mut response = vec![b'E'];
        response.extend_from_slice(&i32::try_from(fields.len() + 4).unwrap().to_be_bytes());
        response.extend_from_slice(&fields);
        socket.write_all(&response).await.unwrap();
        String::from_utf8(password).unwrap()
    });
    let secret = "correct-horse-battery-staple-7f3a";
    let error = PostgresStore::connect(PostgresOptions {
        url: format!("postgres://app@127.0.0.1:{port}/payments"),
        password: Some(secret.to_owned().into()),
        tls: PostgresTls::Disable,
        pool_size: 1,
        schema: "fincode".to_owned(),
    })
    .await
    .unwrap_err();
    assert_eq!(server.await.unwrap(), secret, "the password was sent");
    let text = format!("{error} | {error:?}");
    assert!(text.contains("password authentication failed"), "{text}");
    assert!(text.contains("store.password_env"), "names the fix: {text}");
    assert!(!text.contains(secret), "the password leaked: {text}");
}

// === connections ===

/// Backends killed under the pool (a failover, an operator's `pg_terminate_backend`):
/// a call that hit a dead connection fails (never a false success), the pool replaces
/// the dead connections, the next calls succeed and the store is healthy again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_backends_are_replaced() {
    let Some(schema) = TestSchema::new().await else {
        return;
    };
    let app = format!("{}_kill", schema.name);
    let store = Arc::new(PostgresStore::connect(schema.options(&app)).await.unwrap());
    // Open several pooled connections.
    let warm: Vec<_> = (0..8)
        .map(|n| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.insert(event(&format!("warm-{n}"))).await })
        })
        .collect();
    for task in warm {
        task.await.unwrap().unwrap();
    }
    let killed: i64 = schema
        .value(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = $1) AS killed",
            &[&app],
        )
        .await;
    assert!(killed >= 1, "the store's backends were found and killed");

    let mut outcomes = Vec::new();
    for n in 0..12 {
        let key = format!("after-{n}");
        outcomes.push((key.clone(), store.insert(event(&key)).await));
    }
    for (key, outcome) in &outcomes {
        match outcome {
            Ok(Inserted::New(id)) => {
                let stored = store.get(*id).await.unwrap();
                assert_eq!(stored.map(|e| e.dedupe_key), Some(key.clone()), "{key}");
            }
            Ok(duplicate) => panic!("{key}: a fresh key came back {duplicate:?}"),
            Err(error) => {
                // It really was not stored: the same key is new now.
                assert!(
                    matches!(store.insert(event(key)).await, Ok(Inserted::New(_))),
                    "{key} failed ({error}) yet was stored"
                );
            }
        }
    }
    let failed = outcomes.iter().filter(|(_, o)| o.is_err()).count();
    assert!(
        outcomes[8..].iter().all(|(_, o)| o.is_ok()),
        "the pool recovered within 8 calls ({failed} failed): {outcomes:?}"
    );
    assert_eq!(store.health(), Health::Healthy);
}

/// Failed calls in a row make the store unhealthy, naming the failure; one success
/// makes it healthy again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_failures_and_recovers() {
    let Some((schema, store)) = fresh_store().await else {
        return;
    };
    assert_eq!(store.health(), Health::Healthy);
    schema
        .admin
        .batch_execute(&format!("DROP SCHEMA {} CASCADE", schema.name))
        .await
        .unwrap();
    for _ in 0..fincode_store::UNHEALTHY_AFTER_FAILURES {
        assert!(store.counts().await.is_err(), "its tables are gone");
    }
    let Health::Unhealthy(why) = store.health() else {
        panic!("still healthy after failures")
    };
    assert!(why.contains("counts"), "{why}");
    // Another replica recreates the schema; the next call succeeds.
    let _again = schema.store().await;
    store.counts().await.unwrap();
    assert_eq!(store.health(), Health::Healthy);
}

// === wake-ups ===

/// An insert through one store wakes another store's watcher within a second, and the
/// watcher comes back by itself after its connection is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insert_wakes_another_replicas_watcher() {
    let Some((schema, a)) = fresh_store().await else {
        return;
    };
    let listener_app = format!("{}_b", schema.name);
    let b = PostgresStore::connect(schema.options(&listener_app))
        .await
        .unwrap();
    let wake = Arc::new(Notify::new());
    b.watch_inserts(Arc::clone(&wake));
    // The watcher wakes once when its LISTEN is in force.
    woken(&wake, 5, "the watcher starts listening").await;

    a.insert(event("wake-1")).await.unwrap();
    woken(&wake, 1, "A's insert wakes B within a second").await;

    // Kill B's connections, the LISTEN one among them.
    schema
        .admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            &[&listener_app],
        )
        .await
        .unwrap();
    woken(
        &wake,
        15,
        "the watcher reconnects (and wakes for what it may have missed)",
    )
    .await;
    a.insert(event("wake-2")).await.unwrap();
    woken(&wake, 1, "and hears inserts again").await;
}

/// Waits for `wake` up to `within_secs`; panics naming `what` did not happen.
async fn woken(wake: &Notify, within_secs: u64, what: &str) {
    tokio::time::timeout(Duration::from_secs(within_secs), wake.notified())
        .await
        .expect(what);
}

// === purge ===

/// One replica purges at a time: while another holds the purge lock, a purge deletes
/// nothing and returns at once; after, it purges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_purges_at_a_time() {
    let Some((schema, store)) = fresh_store().await else {
        return;
    };
    let now = SystemTime::now();
    let mut old = event("old-delivered");
    old.received_at = now - Duration::from_hours(2);
    let Inserted::New(id) = store.insert(old).await.unwrap() else {
        panic!("fresh")
    };
    let claimed = store
        .claim_due(now, 1, Duration::from_secs(30), "w")
        .await
        .unwrap();
    assert!(store.mark_delivered(&claimed[0].lease).await.unwrap());

    let cut_off = now - Duration::from_hours(1);
    assert!(take_the_purge_lock(&schema).await);
    assert_eq!(store.purge_delivered(cut_off, cut_off).await.unwrap(), 0);
    assert!(store.get(id).await.unwrap().is_some(), "nothing purged");
    schema
        .admin
        .execute(
            "SELECT pg_advisory_unlock($1, hashtext($2))",
            &[&PURGE_LOCK_CLASS, &schema.name],
        )
        .await
        .unwrap();
    assert_eq!(store.purge_delivered(cut_off, cut_off).await.unwrap(), 1);
    assert!(store.get(id).await.unwrap().is_none());
    // The lock was released: another purge (here, the admin's) can take it.
    assert!(
        take_the_purge_lock(&schema).await,
        "the purge released its lock"
    );
}

/// Whether the admin connection took `schema`'s purge lock, as another replica purging
/// would (it holds it until released or disconnected).
async fn take_the_purge_lock(schema: &TestSchema) -> bool {
    schema
        .value(
            "SELECT pg_try_advisory_lock($1, hashtext($2))",
            &[&PURGE_LOCK_CLASS, &schema.name],
        )
        .await
}

/// Purges in chunks: more rows than one chunk are all deleted, tombstones kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_runs_in_chunks() {
    let Some((schema, store)) = fresh_store().await else {
        return;
    };
    let old = SystemTime::now() - Duration::from_hours(2);
    // 2 500 delivered rows, written directly: the chunking is what is under test.
    schema
        .admin
        .batch_execute(&format!(
            "INSERT INTO {s}.events (uid, dedupe_key, correlation_id, body, headers, \
                 received_at, pending_since, status, attempts, next_attempt_at) \
             SELECT gen_random_uuid(), 'bulk-' || n, 'c', '\\x7b7d', '\\x', {t}, {t}, \
                 'delivered', 1, {t} FROM generate_series(1, 2500) AS n",
            s = schema.name,
            t = old
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_millis()
        ))
        .await
        .unwrap();
    let cut_off = SystemTime::now() - Duration::from_hours(1);
    let keep_keys = SystemTime::now() - Duration::from_hours(3);
    assert_eq!(
        store.purge_delivered(cut_off, keep_keys).await.unwrap(),
        2500
    );
    assert_eq!(store.counts().await.unwrap().delivered, 0);
    assert!(matches!(
        store.insert(event("bulk-1234")).await.unwrap(),
        Inserted::Duplicate(_)
    ));
}
