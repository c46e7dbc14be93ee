//! Unit tests that need no server: the clock arithmetic, names, the URL shown in errors.
//! The backend itself is tested against a real server in `tests/postgres.rs`.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::clock::{Sample, database_millis, offset_from_samples};
use super::schema::is_plain_identifier;
use crate::sqlite::codec::{add_millis, to_millis};

const MS: i64 = 1_000; // microseconds

/// A sample taken by a replica whose clock reads `replica_skew_ms` ahead of the truth,
/// against a database whose clock is right, the database read at `true_micros`.
fn sample(true_micros: i64, replica_skew_ms: i64, round_trip_ms: i64) -> Sample {
    let replica = true_micros + replica_skew_ms * MS;
    Sample {
        replica_before: replica - round_trip_ms * MS / 2,
        database: true_micros,
        replica_after: replica + round_trip_ms * MS / 2,
    }
}

#[test]
fn replicas_whose_clocks_disagree_agree_on_lease_expiry() {
    let truth = UNIX_EPOCH + Duration::from_hours(500_000);
    let truth_micros = to_millis(truth) * MS;
    // Replica A's clock is right; replica B's runs five minutes fast.
    let skew_b = 5 * 60 * 1000;
    let offset_a = offset_from_samples(&[sample(truth_micros, 0, 2)]);
    let offset_b = offset_from_samples(&[sample(truth_micros, skew_b, 2)]);
    assert_eq!((offset_a, offset_b), (0, -skew_b));

    // A claims with a 30 s lease, passing its own clock as `now`.
    let lease = Duration::from_secs(30);
    let lease_until = add_millis(database_millis(truth, offset_a), lease);
    // Each replica asks "has it run out?" with its own clock's reading of a true time.
    let expired = |true_time: SystemTime, replica_skew_ms: i64, offset: i64| {
        let replica_now = if replica_skew_ms >= 0 {
            true_time + Duration::from_millis(replica_skew_ms.unsigned_abs())
        } else {
            true_time - Duration::from_millis(replica_skew_ms.unsigned_abs())
        };
        lease_until <= database_millis(replica_now, offset)
    };
    for (after, runs_out) in [(29, false), (30, true), (31, true)] {
        let at = truth + Duration::from_secs(after);
        assert_eq!(expired(at, 0, offset_a), runs_out, "A at +{after}s");
        assert_eq!(expired(at, skew_b, offset_b), runs_out, "B at +{after}s");
    }
    // Without the offset, B would take A's lease over at once.
    assert!(lease_until <= to_millis(truth + Duration::from_secs(1)) + skew_b);
}

#[test]
fn the_shortest_round_trip_wins_and_noise_counts_as_none() {
    let t = 1_800_000_000_000_000;
    // Same clock, small round trips: no offset, so times stay exact.
    assert_eq!(offset_from_samples(&[sample(t, 0, 1), sample(t, 0, 3)]), 0);
    // A 40 ms difference is below the threshold.
    assert_eq!(offset_from_samples(&[sample(t, -40, 1)]), 0);
    // A slow sample read the database late: the fast one decides.
    let slow = Sample {
        replica_before: t - 500 * MS,
        database: t + 400 * MS,
        replica_after: t + 500 * MS,
    };
    assert_eq!(offset_from_samples(&[slow, sample(t, 2_000, 1)]), -2_000);
    assert_eq!(offset_from_samples(&[slow]), 400);
    assert_eq!(offset_from_samples(&[]), 0);
}

#[test]
fn database_millis_adds_the_offset() {
    let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
    assert_eq!(database_millis(t, 0), 1_700_000_000_123);
    assert_eq!(database_millis(t, -1_000), 1_700_000_000_123 - 1_000);
}

#[test]
fn schema_names_are_plain_identifiers() {
    for good in ["fincode", "_x", "fincode_test_0a9", &"a".repeat(63)] {
        assert!(is_plain_identifier(good), "{good}");
    }
    for bad in [
        "",
        "Fincode",
        "9abc",
        "a-b",
        "a;drop table x",
        "a b",
        "\"q\"",
        &"a".repeat(64),
    ] {
        assert!(!is_plain_identifier(bad), "{bad}");
    }
}

#[test]
fn a_url_with_a_password_is_refused_without_echoing_it() {
    let options = super::PostgresOptions {
        url: "postgres://app:hunter2-secret@db:5432/payments".to_owned(),
        password: None,
        tls: super::PostgresTls::Disable,
        pool_size: 1,
        schema: "fincode".to_owned(),
    };
    let Err(error) = super::connect::prepare(&options) else {
        panic!("accepted a URL with a password")
    };
    let text = format!("{error} {error:?}");
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains("store.password_env"), "{text}");
    assert!(text.contains("postgres://app@db:5432/payments"), "{text}");
}

#[test]
fn a_bad_schema_name_is_refused() {
    let options = super::PostgresOptions {
        url: "postgres://app@db/payments".to_owned(),
        password: None,
        tls: super::PostgresTls::Disable,
        pool_size: 1,
        schema: "public; drop table events".to_owned(),
    };
    let Err(error) = super::connect::prepare(&options) else {
        panic!("accepted a bad schema name")
    };
    assert!(error.to_string().contains("schema name"), "{error}");
}
