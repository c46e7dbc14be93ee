//! The conformance suite: one set of checks every [`EventStore`] backend must pass.
//!
//! It uses nothing but the trait, so the SQLite tests and the Postgres tests run the
//! very same checks. Each check takes a fresh, empty store and panics (via `assert!`)
//! on the first broken promise, naming it. Run them all with [`run_all`], or one per
//! test through [`CHECKS`] so a failure names the check:
//!
//! ```no_run
//! # async fn example() {
//! use std::sync::Arc;
//! use fincode_store::{EventStore, SqliteStore, conformance};
//!
//! let dir = std::env::temp_dir();
//! let mut n = 0;
//! conformance::run_all(|| {
//!     n += 1;
//!     let path = dir.join(format!("conformance-{n}.db"));
//!     async move {
//!         let store = SqliteStore::open(&path).map_err(|e| e.to_string());
//!         match store {
//!             Ok(store) => Arc::new(store) as Arc<dyn EventStore>,
//!             Err(error) => panic!("{error}"),
//!         }
//!     }
//! })
//! .await;
//! # }
//! ```
//!
//! Besides the trait's documentation, the checks pin down:
//! - a new event is due at its `received_at`;
//! - times round-trip at millisecond precision (the checks use whole milliseconds);
//! - a lease blocks other claimants until it expires, and `mark_*` release it;
//! - a claim counts the attempt and raises the lease generation;
//! - `mark_*` apply under the event's latest lease only and say whether they did: a
//!   claimant whose lease ran out and was re-claimed changes nothing (it cannot release
//!   the new owner's lease, nor bring back an event another claimant delivered), while a
//!   lease that ran out with nobody claiming since still records its outcome;
//! - `replay` of a pending event changes nothing and returns true.
//!
//! Checks build their times from the wall clock, but never sleep: leases, due times and
//! replays are exercised through the explicit `now` that `claim_due`, `replay` and
//! `replay_all_dead` take. A backend uses the times it is given, never its own clock.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::{
    Claimed, Counts, EventId, EventStore, Inserted, NewEvent, Status, StoreError, StoredEvent,
};

/// One check: takes a fresh, empty store, panics on a broken promise.
pub type Check = fn(Arc<dyn EventStore>) -> Pin<Box<dyn Future<Output = ()> + Send>>;

/// Every check, by name, in the order [`run_all`] runs them.
pub const CHECKS: &[(&str, Check)] = &[
    ("insert_then_duplicate", |s| {
        Box::pin(insert_then_duplicate(s))
    }),
    ("concurrent_inserts_of_one_key", |s| {
        Box::pin(concurrent_inserts_of_one_key(s))
    }),
    ("concurrent_distinct_inserts", |s| {
        Box::pin(concurrent_distinct_inserts(s))
    }),
    ("claim_honours_limit_oldest_first", |s| {
        Box::pin(claim_honours_limit_oldest_first(s))
    }),
    ("claim_honours_next_attempt_at", |s| {
        Box::pin(claim_honours_next_attempt_at(s))
    }),
    ("claim_honours_leases", |s| {
        Box::pin(claim_honours_leases(s))
    }),
    ("order_key_serialises_delivery", |s| {
        Box::pin(order_key_serialises_delivery(s))
    }),
    ("mark_failed_reschedules_and_keeps_bytes", |s| {
        Box::pin(mark_failed_reschedules_and_keeps_bytes(s))
    }),
    ("dead_letters_list_and_replay", |s| {
        Box::pin(dead_letters_list_and_replay(s))
    }),
    ("late_marks_do_not_resurrect", |s| {
        Box::pin(late_marks_do_not_resurrect(s))
    }),
    ("missing_and_empty", |s| Box::pin(missing_and_empty(s))),
    ("counts_follow_transitions", |s| {
        Box::pin(counts_follow_transitions(s))
    }),
    ("purge_deletes_only_old_delivered_events", |s| {
        Box::pin(purge_deletes_only_old_delivered_events(s))
    }),
    ("late_mark_does_not_clobber_a_new_lease", |s| {
        Box::pin(late_mark_does_not_clobber_a_new_lease(s))
    }),
    ("attempts_are_counted_at_claim", |s| {
        Box::pin(attempts_are_counted_at_claim(s))
    }),
    ("purged_keys_still_deduplicate", |s| {
        Box::pin(purged_keys_still_deduplicate(s))
    }),
    ("uids_are_unique_uuid_v7_and_stable", |s| {
        Box::pin(uids_are_unique_uuid_v7_and_stable(s))
    }),
    ("superseded_events_do_not_block_their_order_key", |s| {
        Box::pin(superseded_events_do_not_block_their_order_key(s))
    }),
    ("a_working_store_is_healthy", |s| {
        Box::pin(a_working_store_is_healthy(s))
    }),
    ("oldest_pending_follows_pending_since", |s| {
        Box::pin(oldest_pending_follows_pending_since(s))
    }),
];

/// Runs every check in [`CHECKS`], each on a store from `fresh_store`.
pub async fn run_all<F, Fut>(mut fresh_store: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Arc<dyn EventStore>>,
{
    for (name, check) in CHECKS {
        eprintln!("conformance check: {name}");
        check(fresh_store().await).await;
    }
}

/// A new event is stored as given and reported `New`; the same dedupe key again is
/// reported `Duplicate` of it, whatever the rest of the event, and changes nothing,
/// even after delivery.
pub async fn insert_then_duplicate(store: Arc<dyn EventStore>) {
    let t = whole_millis_now();
    let event = sample("TRANSACTION_STATUS:PCN1:PAID", Some("PCN1"), t);
    let id = insert_new(&*store, event.clone()).await;
    let stored = get_existing(&*store, id).await;
    assert_same_event(&stored, &event);
    assert_eq!(stored.status, Status::Pending, "a new event is pending");
    assert_eq!(stored.attempts, 0, "a new event has no attempts");
    assert_eq!(stored.last_error, None, "a new event has no error");
    assert_eq!(
        stored.next_attempt_at, t,
        "a new event is due at received_at"
    );
    assert_eq!(stored.pending_since, t, "and pending since then");

    let mut again = sample("TRANSACTION_STATUS:PCN1:PAID", None, t + secs(5));
    again.body = Bytes::from_static(b"{\"different\":true}");
    again.correlation_id = String::from("another-correlation");
    assert_eq!(
        ok(store.insert(again.clone()).await, "insert"),
        Inserted::Duplicate(id),
        "the same dedupe key is a duplicate of the first event"
    );
    assert_eq!(
        get_existing(&*store, id).await,
        stored,
        "a duplicate changes nothing"
    );
    assert_eq!(
        counts(&*store).await,
        counts_of(1, 0, 0),
        "a duplicate is not stored"
    );
    assert_eq!(ok(store.list(None, 10).await, "list").len(), 1);

    let other = insert_new(&*store, sample("TRANSACTION_STATUS:PCN1:SENT", None, t)).await;
    assert!(
        other > id,
        "ids increase in arrival order ({other} after {id})"
    );

    let claimed = claim(&*store, t, 1, "w").await;
    assert_eq!(ids_of(&claimed), [id]);
    deliver(&*store, &claimed[0]).await;
    assert_eq!(
        ok(store.insert(again).await, "insert"),
        Inserted::Duplicate(id),
        "a delivered event still deduplicates"
    );
    assert_eq!(get_existing(&*store, id).await.status, Status::Delivered);
    assert_eq!(counts(&*store).await, counts_of(1, 1, 0));
}

/// 50 concurrent inserts of one key: exactly one `New`, 49 `Duplicate` of it.
pub async fn concurrent_inserts_of_one_key(store: Arc<dyn EventStore>) {
    let t = whole_millis_now();
    let tasks: Vec<_> = (0..50)
        .map(|n| {
            let store = Arc::clone(&store);
            let mut event = sample("TRANSACTION_STATUS:RACE:PAID", None, t);
            event.correlation_id = format!("attempt-{n}");
            tokio::spawn(async move { store.insert(event).await })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(ok(joined(task.await), "insert"));
    }
    let new: Vec<EventId> = results
        .iter()
        .filter_map(|r| match r {
            Inserted::New(id) => Some(*id),
            Inserted::Duplicate(_) => None,
        })
        .collect();
    assert_eq!(new.len(), 1, "exactly one insert is new: {results:?}");
    let winner = new[0];
    assert!(
        results
            .iter()
            .all(|r| *r == Inserted::New(winner) || *r == Inserted::Duplicate(winner)),
        "every other insert is a duplicate of the one new event: {results:?}"
    );
    assert_eq!(counts(&*store).await, counts_of(1, 0, 0));
}

/// 1000 concurrent inserts of distinct keys: all `New`, distinct ids, all readable.
pub async fn concurrent_distinct_inserts(store: Arc<dyn EventStore>) {
    const N: usize = 1000;
    let t = whole_millis_now();
    let tasks: Vec<_> = (0..N)
        .map(|n| {
            let store = Arc::clone(&store);
            let event = sample(&format!("TRANSACTION_STATUS:PCN{n}:PAID"), None, t);
            tokio::spawn(async move { (n, store.insert(event).await) })
        })
        .collect();
    let mut ids = Vec::with_capacity(N);
    for task in tasks {
        let (n, result) = joined(task.await);
        match ok(result, "insert") {
            Inserted::New(id) => ids.push((n, id)),
            duplicate @ Inserted::Duplicate(_) => {
                panic!("distinct key {n} came back as {duplicate:?}")
            }
        }
    }
    let distinct: HashSet<EventId> = ids.iter().map(|(_, id)| *id).collect();
    assert_eq!(distinct.len(), N, "every new event has its own id");
    for (n, id) in ids {
        let stored = get_existing(&*store, id).await;
        assert_same_event(
            &stored,
            &sample(&format!("TRANSACTION_STATUS:PCN{n}:PAID"), None, t),
        );
    }
    assert_eq!(counts(&*store).await, counts_of(N as u64, 0, 0));
    assert_eq!(ok(store.list(None, 2 * N).await, "list").len(), N);
}

/// `claim_due` returns at most `limit` events, oldest first, and not the ones leased.
pub async fn claim_honours_limit_oldest_first(store: Arc<dyn EventStore>) {
    let t = whole_millis_now();
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(insert_new(&*store, sample(&format!("claim-{n}"), None, t)).await);
    }
    assert!(
        claim(&*store, t, 0, "a").await.is_empty(),
        "limit 0 claims nothing"
    );

    let first = claim(&*store, t, 2, "a").await;
    assert_eq!(ids_of(&first), ids[..2], "the two oldest first");
    assert_same_event(&first[0].event, &sample("claim-0", None, t));
    assert_eq!(
        first[0].event.status,
        Status::Pending,
        "a claimed event stays pending"
    );

    let rest = claim(&*store, t, 10, "b").await;
    assert_eq!(ids_of(&rest), ids[2..], "the rest, without the leased ones");
    assert!(
        claim(&*store, t, 10, "c").await.is_empty(),
        "everything is leased"
    );
}

/// An event is due at `received_at`, and after `mark_failed` at its `next_attempt_at`.
pub async fn claim_honours_next_attempt_at(store: Arc<dyn EventStore>) {
    let t = whole_millis_now();
    let a = insert_new(&*store, sample("due-a", None, t)).await;
    let b = insert_new(&*store, sample("due-b", None, t)).await;
    let later = insert_new(&*store, sample("due-later", None, t + secs(60))).await;
    assert!(
        claim(&*store, t - millis(1), 10, "w").await.is_empty(),
        "nothing is due before received_at"
    );
    let first = claim(&*store, t, 10, "w").await;
    assert_eq!(ids_of(&first), [a, b]);

    fail(&*store, &first[0], t + secs(10), "http 503").await;
    fail(&*store, &first[1], t + secs(20), "timeout").await;
    assert!(claim(&*store, t + millis(9_999), 10, "w").await.is_empty());
    let again = claim(&*store, t + secs(10), 10, "w").await;
    assert_eq!(ids_of(&again), [a]);
    deliver(&*store, &again[0]).await;
    let again = claim(&*store, t + secs(20), 10, "w").await;
    assert_eq!(ids_of(&again), [b]);
    deliver(&*store, &again[0]).await;
    assert_eq!(
        ids_of(&claim(&*store, t + secs(60), 10, "w").await),
        [later]
    );
}

/// A leased event goes to no other claimant until the lease expires; then it does.
pub async fn claim_honours_leases(store: Arc<dyn EventStore>) {
    let t = whole_millis_now();
    let id = insert_new(&*store, sample("lease", None, t)).await;
    let lease = secs(30);
    assert_eq!(
        ids_of(&claim_leased(&*store, t, 10, lease, "a").await),
        [id]
    );
    assert!(
        claims_nothing(&*store, t + secs(29), 10, lease, "b").await,
        "a second claimant gets nothing while the lease holds"
    );
    assert!(
        claims_nothing(&*store, t + secs(29), 10, lease, "a").await,
        "nor does the holder claim it twice"
    );
    let again = claim_leased(&*store, t + secs(31), 10, lease, "b").await;
    assert_eq!(
        ids_of(&again),
        [id],
        "an expired lease makes the event due again"
    );
    assert!(
        claims_nothing(&*store, t + secs(32), 10, lease, "c").await,
        "the new lease holds in turn"
    );
    deliver(&*store, &again[0]).await;
    assert!(
        claims_nothing(&*store, t + secs(3600), 10, lease, "c").await,
        "a delivered event is never claimed"
    );
}

/// With an ordering key, an event waits until every earlier event with that key is
/// delivered or dead; other keys and events without a key are unaffected.
pub async fn order_key_serialises_delivery(store: Arc<dyn EventStore>) {
    let t = whole_millis_now();
    let a1 = insert_new(&*store, sample("a1", Some("A"), t)).await;
    let n1 = insert_new(&*store, sample("n1", None, t)).await;
    let a2 = insert_new(&*store, sample("a2", Some("A"), t)).await;
    let b1 = insert_new(&*store, sample("b1", Some("B"), t)).await;
    let n2 = insert_new(&*store, sample("n2", None, t)).await;
    let a3 = insert_new(&*store, sample("a3", Some("A"), t)).await;

    let first = claim(&*store, t, 10, "w").await;
    assert_eq!(
        ids_of(&first),
        [a1, n1, b1, n2],
        "only the first event of key A; B and unkeyed events unaffected"
    );
    assert!(
        claim(&*store, t, 10, "other").await.is_empty(),
        "a2 waits while a1 is leased"
    );
    for claimed in &first[1..] {
        deliver(&*store, claimed).await;
    }
    let b2 = insert_new(&*store, sample("b2", Some("B"), t)).await;
    assert_eq!(
        ids_of(&claim(&*store, t, 10, "w").await),
        [b2],
        "B moves on while A is blocked"
    );

    fail(&*store, &first[0], t + secs(10), "http 500").await;
    assert!(
        claim(&*store, t + secs(5), 10, "w").await.is_empty(),
        "a2 waits while a1 is pending, even when a1 is not due"
    );
    let again = claim(&*store, t + secs(10), 10, "w").await;
    assert_eq!(ids_of(&again), [a1]);
    deliver(&*store, &again[0]).await;
    let next = claim(&*store, t + secs(10), 10, "w").await;
    assert_eq!(
        ids_of(&next),
        [a2],
        "a2 after a1 is delivered, a3 still waits"
    );
    kill(&*store, &next[0], "max attempts").await;
    assert_eq!(
        ids_of(&claim(&*store, t + secs(10), 10, "w").await),
        [a3],
        "a3 after a2 is dead"
    );
}

/// `mark_failed` records the attempt and error, reschedules, releases the lease, and
/// keeps the body and headers byte for byte.
pub async fn mark_failed_reschedules_and_keeps_bytes(store: Arc<dyn EventStore>) {
    let t = whole_millis_now();
    let mut event = sample("bytes", Some("ord"), t);
    event.body = Bytes::from_static(b"\x00{\"a\":1}\xff\xfe\r\n\x00 \xe3\x81\x82");
    event.headers = vec![
        ("X-Dup".to_owned(), "1".to_owned()),
        ("x-dup".to_owned(), "2".to_owned()),
        ("empty".to_owned(), String::new()),
        ("x-unicode".to_owned(), "値 ✓ \"quoted\", {json}".to_owned()),
    ];
    let id = insert_new(&*store, event.clone()).await;
    let claimed = claim_leased(&*store, t, 1, secs(300), "a").await;
    assert_eq!(ids_of(&claimed), [id]);
    assert_same_event(&claimed[0].event, &event);

    fail(&*store, &claimed[0], t + secs(60), "http 503").await;
    let failed = get_existing(&*store, id).await;
    assert_same_event(&failed, &event);
    assert_eq!(failed.status, Status::Pending);
    assert_eq!(failed.attempts, 1);
    assert_eq!(failed.next_attempt_at, t + secs(60));
    assert_eq!(failed.last_error.as_deref(), Some("http 503"));

    assert!(claim(&*store, t + millis(59_999), 10, "b").await.is_empty());
    // "a" held a five-minute lease: "b" claiming at one minute shows it was released.
    let retried = claim(&*store, t + secs(60), 10, "b").await;
    assert_eq!(ids_of(&retried), [id], "due again, lease released");
    assert_eq!(
        retried[0].event.attempts, 2,
        "the second claim is the second attempt"
    );
    assert_same_event(&retried[0].event, &event);

    fail(&*store, &retried[0], t + secs(120), "timeout").await;
    let twice = get_existing(&*store, id).await;
    assert_eq!(
        (twice.attempts, twice.last_error.as_deref()),
        (2, Some("timeout"))
    );
    assert_same_event(&twice, &event);
}

/// Dead letters are listed (newest first), replayed one by one or all at once, and a
/// replayed event is pending, due now, with attempts and error reset.
pub async fn dead_letters_list_and_replay(store: Arc<dyn EventStore>) {
    let t = whole_millis_now();
    let mut ids = Vec::new();
    for n in 0..4 {
        ids.push(insert_new(&*store, sample(&format!("dlq-{n}"), None, t)).await);
    }
    let [e0, e1, e2, e3] = ids[..] else {
        unreachable!("four events were inserted")
    };
    let claimed = claim(&*store, t, 10, "w").await;
    assert_eq!(ids_of(&claimed), [e0, e1, e2, e3]);
    kill(&*store, &claimed[0], "max attempts").await;
    kill(&*store, &claimed[2], "max age").await;
    deliver(&*store, &claimed[3]).await;

    let dead = ok(store.list(Some(Status::Dead), 10).await, "list");
    assert_eq!(ids_of(&dead), [e2, e0], "dead letters, newest first");
    assert_eq!(dead[0].status, Status::Dead);
    assert_eq!(
        (dead[1].attempts, dead[1].last_error.as_deref()),
        (1, Some("max attempts"))
    );
    let shared = &store;
    let listed = |status| async move { ids_of(&ok(shared.list(status, 10).await, "list")) };
    assert_eq!(listed(Some(Status::Pending)).await, [e1]);
    assert_eq!(listed(Some(Status::Delivered)).await, [e3]);
    assert_eq!(listed(None).await, [e3, e2, e1, e0]);
    assert_eq!(
        ids_of(&ok(store.list(None, 2).await, "list")),
        [e3, e2],
        "limit"
    );
    assert!(ok(store.list(Some(Status::Dead), 0).await, "list").is_empty());
    assert_eq!(counts(&*store).await, counts_of(1, 1, 2));

    let r = t + secs(5);
    assert!(
        ok(store.replay(e0, r).await, "replay"),
        "a dead letter replays"
    );
    let replayed = get_existing(&*store, e0).await;
    assert_eq!(replayed.status, Status::Pending);
    assert_eq!((replayed.attempts, replayed.last_error), (0, None));
    assert_eq!(
        replayed.next_attempt_at, r,
        "a replayed event is due at once"
    );
    assert_eq!(
        replayed.pending_since, r,
        "and pending since the replay, not since receipt"
    );
    assert_eq!(replayed.received_at, t, "received_at stays");
    // e1 is still leased (30 s from t), so only e0 comes back.
    let due = claim(&*store, r, 10, "r").await;
    assert_eq!(ids_of(&due), [e0]);
    assert_eq!(counts(&*store).await, counts_of(2, 1, 1));

    assert_eq!(ok(store.replay_all_dead(t).await, "replay_all_dead"), 1);
    let e2_now = get_existing(&*store, e2).await;
    assert_eq!(
        (e2_now.status, e2_now.attempts, e2_now.last_error),
        (Status::Pending, 0, None)
    );
    assert_eq!(ok(store.replay_all_dead(t).await, "replay_all_dead"), 0);
    assert!(
        ok(store.replay(e3, t).await, "replay"),
        "a delivered event replays"
    );
    assert_eq!(get_existing(&*store, e3).await.status, Status::Pending);
    assert!(
        ok(store.replay(e1, t).await, "replay"),
        "a pending event exists"
    );
    assert_eq!(get_existing(&*store, e1).await.status, Status::Pending);
    assert!(
        !ok(store.replay(e3 + 1000, t).await, "replay"),
        "no such event"
    );
    assert_eq!(counts(&*store).await, counts_of(4, 0, 0));
}

/// A claimant whose lease ran out while another delivered the event cannot make it
/// pending (or dead) again: it stays delivered, and is never claimed again.
pub async fn late_marks_do_not_resurrect(store: Arc<dyn EventStore>) {
    let t = whole_millis_now();
    let (id, slow, fast) = taken_over(&*store, "late", t).await;
    assert!(
        fast.lease.generation > slow.lease.generation,
        "each claim has a later generation"
    );
    deliver(&*store, &fast).await;
    let slow = &slow.lease;
    assert!(
        !ok(store.mark_delivered(slow).await, "mark_delivered"),
        "a lost lease reports that its mark did not apply"
    );
    assert!(!ok(
        store.mark_failed(slow, t + secs(20), "timeout").await,
        "mark_failed"
    ));
    assert!(!ok(store.mark_dead(slow, "gave up").await, "mark_dead"));
    let stored = get_existing(&*store, id).await;
    assert_eq!(stored.status, Status::Delivered, "the delivery stands");
    assert!(claim(&*store, t + secs(3600), 10, "any").await.is_empty());
}

/// Nothing stored: `get` of any id is `None`, lists and claims are empty, counts zero.
pub async fn missing_and_empty(store: Arc<dyn EventStore>) {
    let t = whole_millis_now();
    for id in [0, 1, 42, EventId::MAX, -1] {
        assert!(ok(store.get(id).await, "get").is_none(), "no event {id}");
    }
    assert!(ok(store.list(None, 10).await, "list").is_empty());
    assert!(ok(store.list(Some(Status::Dead), 10).await, "list").is_empty());
    assert_eq!(counts(&*store).await, Counts::default());
    assert!(claim(&*store, t + secs(3600), 10, "w").await.is_empty());
    assert!(!ok(store.replay(1, t).await, "replay"));
    assert_eq!(ok(store.replay_all_dead(t).await, "replay_all_dead"), 0);

    let id = insert_new(&*store, sample("only", None, t)).await;
    assert!(ok(store.get(id + 1).await, "get").is_none());
    assert!(ok(store.get(id).await, "get").is_some());
}

/// `counts` follows every transition.
pub async fn counts_follow_transitions(store: Arc<dyn EventStore>) {
    let t = whole_millis_now();
    let a = insert_new(&*store, sample("count-a", None, t)).await;
    let b = insert_new(&*store, sample("count-b", None, t)).await;
    let _c = insert_new(&*store, sample("count-c", None, t)).await;
    assert_eq!(counts(&*store).await, counts_of(3, 0, 0));
    let claimed = claim(&*store, t, 2, "w").await;
    assert_eq!(ids_of(&claimed), [a, b]);
    assert_eq!(
        counts(&*store).await,
        counts_of(3, 0, 0),
        "leased is pending"
    );
    deliver(&*store, &claimed[0]).await;
    assert_eq!(counts(&*store).await, counts_of(2, 1, 0));
    kill(&*store, &claimed[1], "max attempts").await;
    assert_eq!(counts(&*store).await, counts_of(1, 1, 1));
    let _ = ok(store.insert(sample("count-b", None, t)).await, "insert");
    assert_eq!(
        counts(&*store).await,
        counts_of(1, 1, 1),
        "a duplicate counts nothing"
    );
    assert!(ok(store.replay(b, t).await, "replay"));
    assert_eq!(counts(&*store).await, counts_of(2, 1, 0));
}

/// `oldest_pending` is the earliest `pending_since` among pending events only: delivered
/// and dead events do not count, and a replay counts from the replay.
pub async fn oldest_pending_follows_pending_since(store: Arc<dyn EventStore>) {
    let oldest = |store: Arc<dyn EventStore>| async move {
        ok(store.oldest_pending().await, "oldest_pending")
    };
    assert_eq!(oldest(store.clone()).await, None, "nothing pending");
    let t = whole_millis_now();
    let first = insert_new(&*store, sample("oldest-1", None, t - secs(300))).await;
    let second = insert_new(&*store, sample("oldest-2", None, t - secs(200))).await;
    let _third = insert_new(&*store, sample("oldest-3", None, t - secs(100))).await;
    assert_eq!(oldest(store.clone()).await, Some(t - secs(300)));

    let claimed = claim(&*store, t, 2, "w").await;
    assert_eq!(ids_of(&claimed), [first, second]);
    assert_eq!(
        oldest(store.clone()).await,
        Some(t - secs(300)),
        "a leased event is still pending"
    );
    deliver(&*store, &claimed[0]).await;
    kill(&*store, &claimed[1], "max attempts").await;
    assert_eq!(
        oldest(store.clone()).await,
        Some(t - secs(100)),
        "delivered and dead events are not pending"
    );
    assert!(ok(store.replay(first, t).await, "replay"));
    assert_eq!(
        oldest(store.clone()).await,
        Some(t - secs(100)),
        "a replayed event is pending since the replay"
    );
}

/// Retention deletes delivered events received before the cut-off, and nothing else; a
/// purged event's dedupe key past the key retention too can be used again.
pub async fn purge_deletes_only_old_delivered_events(store: Arc<dyn EventStore>) {
    let old = whole_millis_now() - secs(3600);
    let new = whole_millis_now();
    let old_delivered = insert_new(&*store, sample("purge-old-delivered", None, old)).await;
    let _old_dead = insert_new(&*store, sample("purge-old-dead", None, old)).await;
    let _old_pending = insert_new(&*store, sample("purge-old-pending", None, old)).await;
    let new_delivered = insert_new(&*store, sample("purge-new-delivered", None, new)).await;
    let claimed = claim(&*store, new, 10, "w").await;
    assert_eq!(claimed.len(), 4);
    deliver(&*store, &claimed[0]).await;
    kill(&*store, &claimed[1], "status 503").await;
    deliver(&*store, &claimed[3]).await;
    let cut_off = new - secs(60);
    let purged = ok(
        store.purge_delivered(cut_off, cut_off).await,
        "purge_delivered",
    );
    assert_eq!(purged, 1, "only the old delivered event");
    assert!(ok(store.get(old_delivered).await, "get").is_none());
    assert!(ok(store.get(new_delivered).await, "get").is_some());
    assert_eq!(counts(&*store).await, counts_of(1, 1, 1));
    let again = ok(
        store.insert(sample("purge-old-delivered", None, new)).await,
        "insert",
    );
    assert!(matches!(again, Inserted::New(_)), "{again:?}");
}

/// A claimant whose lease expired and was taken over cannot release the new owner's
/// lease with a late `mark_failed`: the new owner keeps the event to itself.
pub async fn late_mark_does_not_clobber_a_new_lease(store: Arc<dyn EventStore>) {
    let t = whole_millis_now();
    let (id, slow, fast) = taken_over(&*store, "clobber", t).await;
    let lease = TAKEN_OVER_LEASE;
    assert!(
        !ok(
            store
                .mark_failed(&slow.lease, t + secs(12), "timeout")
                .await,
            "mark_failed"
        ),
        "the late mark reports that it did not apply"
    );
    let after = get_existing(&*store, id).await;
    assert_eq!(
        (after.next_attempt_at, after.last_error),
        (t, None),
        "and recorded nothing"
    );
    assert!(
        claims_nothing(&*store, t + secs(13), 1, lease, "third").await,
        "the late mark left the new owner's lease alone"
    );
    deliver(&*store, &fast).await;

    // A lease that ran out but that nobody claimed since still holds: its outcome is real.
    let lone = insert_new(&*store, sample("expired-unclaimed", None, t)).await;
    let claimed = claim_leased(&*store, t, 1, lease, "late").await;
    assert_eq!(ids_of(&claimed), [lone]);
    deliver(&*store, &claimed[0]).await;
    // A forged lease (the right owner, another generation) applies to nothing.
    let other = insert_new(&*store, sample("forged", None, t)).await;
    let claimed = claim_leased(&*store, t, 1, lease, "owner").await;
    assert_eq!(ids_of(&claimed), [other]);
    let mut forged = claimed[0].lease.clone();
    forged.generation += 1;
    assert!(!ok(store.mark_delivered(&forged).await, "mark_delivered"));
    assert_eq!(get_existing(&*store, other).await.status, Status::Pending);
}

/// Each claim counts an attempt, so a claimant that crashes mid-delivery (and never
/// marks anything) still uses up attempts.
pub async fn attempts_are_counted_at_claim(store: Arc<dyn EventStore>) {
    let t = whole_millis_now();
    let id = insert_new(&*store, sample("crash-loop", None, t)).await;
    let lease = secs(10);
    let first = claim_leased(&*store, t, 1, lease, "a").await;
    assert_eq!(first[0].event.attempts, 1, "the claim counts the attempt");
    assert_eq!(get_existing(&*store, id).await.attempts, 1);
    let second = claim_leased(&*store, t + secs(11), 1, lease, "b").await;
    assert_eq!(
        second[0].event.attempts, 2,
        "a crashed claimant's attempt counts too"
    );
}

/// A delivered event's dedupe key outlives its body: after a purge, the same key is
/// still a duplicate.
pub async fn purged_keys_still_deduplicate(store: Arc<dyn EventStore>) {
    let t = whole_millis_now();
    let old = t - secs(3600);
    let id = insert_new(&*store, sample("tombstone", None, old)).await;
    let claimed = claim(&*store, old, 1, "w").await;
    deliver(&*store, &claimed[0]).await;
    let purged = store.purge_delivered(t - secs(60), t - secs(7200)).await;
    assert_eq!(ok(purged, "purge_delivered"), 1);
    assert!(ok(store.get(id).await, "get").is_none(), "the body is gone");
    assert_eq!(counts(&*store).await, Counts::default(), "and not counted");
    assert_eq!(
        ok(store.insert(sample("tombstone", None, t)).await, "insert"),
        Inserted::Duplicate(id),
        "the key is still known"
    );
    // Later purges keep it while it is within the key retention...
    let purged = store.purge_delivered(t - secs(60), t - secs(7200)).await;
    assert_eq!(ok(purged, "purge_delivered"), 0);
    assert_eq!(
        ok(store.insert(sample("tombstone", None, t)).await, "insert"),
        Inserted::Duplicate(id)
    );
    // ...and forget it after.
    let purged = store.purge_delivered(t - secs(60), t - secs(1800)).await;
    assert_eq!(ok(purged, "purge_delivered"), 0);
    assert!(matches!(
        ok(store.insert(sample("tombstone", None, t)).await, "insert"),
        Inserted::New(_)
    ));
}

/// Every event gets its own UUIDv7, which never changes: not when claimed, failed,
/// killed or replayed.
pub async fn uids_are_unique_uuid_v7_and_stable(store: Arc<dyn EventStore>) {
    let t = whole_millis_now();
    let mut uids = HashSet::new();
    let mut first = None;
    for n in 0..20 {
        let id = insert_new(&*store, sample(&format!("uid-{n}"), None, t)).await;
        let uid = get_existing(&*store, id).await.uid;
        assert_eq!(uid.get_version_num(), 7, "{uid}");
        assert!(uids.insert(uid), "{uid} repeated");
        first.get_or_insert((id, uid));
    }
    let Some((id, uid)) = first else {
        unreachable!("twenty events were inserted")
    };
    let claimed = claim(&*store, t, 1, "w").await;
    assert_eq!(
        (claimed[0].event.id, claimed[0].event.uid),
        (id, uid),
        "claimed as stored"
    );
    kill(&*store, &claimed[0], "gave up").await;
    assert!(ok(store.replay(id, t).await, "replay"));
    assert_eq!(
        get_existing(&*store, id).await.uid,
        uid,
        "a replay keeps it"
    );
    assert_eq!(
        ok(store.list(Some(Status::Pending), 100).await, "list")
            .iter()
            .find(|e| e.id == id)
            .map(|e| e.uid),
        Some(uid)
    );
}

/// A superseded event stays pending, due at its retry time, recorded "superseded", and
/// lets later events of its ordering key go.
pub async fn superseded_events_do_not_block_their_order_key(store: Arc<dyn EventStore>) {
    let t = whole_millis_now();
    let old = insert_new(&*store, sample("sup-1", Some("K"), t)).await;
    let new = insert_new(&*store, sample("sup-2", Some("K"), t)).await;
    let first = claim(&*store, t, 10, "w").await;
    assert_eq!(ids_of(&first), [old]);
    applied(
        store.mark_superseded(&first[0].lease, t + secs(1800)).await,
        "mark_superseded",
    );
    let stored = get_existing(&*store, old).await;
    assert_eq!(
        (
            stored.status,
            stored.last_error.as_deref(),
            stored.next_attempt_at
        ),
        (Status::Pending, Some("superseded"), t + secs(1800))
    );
    let next = claim(&*store, t, 10, "w").await;
    assert_eq!(
        ids_of(&next),
        [new],
        "the later event of K is not held back"
    );
    deliver(&*store, &next[0]).await;
    let later = insert_new(&*store, sample("sup-3", Some("K"), t)).await;
    let third = claim(&*store, t, 10, "w").await;
    assert_eq!(ids_of(&third), [later]);
    deliver(&*store, &third[0]).await;
    let retry = claim(&*store, t + secs(1800), 10, "w").await;
    assert_eq!(ids_of(&retry), [old], "retried when due");

    assert_eq!(retry[0].event.attempts, 2);
    deliver(&*store, &retry[0]).await;
}

/// A store that answers is healthy, before and after it has done some work, and a
/// duplicate (an answer, not a failure) changes nothing.
pub async fn a_working_store_is_healthy(store: Arc<dyn EventStore>) {
    assert_eq!(store.health(), crate::Health::Healthy, "fresh");
    let t = whole_millis_now();
    for _ in 0..5 {
        let _ = ok(store.insert(sample("healthy", None, t)).await, "insert");
    }
    let _ = claim(&*store, t, 10, "w").await;
    let _ = counts(&*store).await;
    assert_eq!(store.health(), crate::Health::Healthy, "after work");
}

// === helpers ===

/// The wall clock truncated to whole milliseconds, the precision every backend keeps.
fn whole_millis_now() -> SystemTime {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    UNIX_EPOCH + millis(since_epoch.as_millis() as u64)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn millis(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A FinCode-like event: JSON body, three headers.
fn sample(dedupe_key: &str, order_key: Option<&str>, received_at: SystemTime) -> NewEvent {
    NewEvent {
        dedupe_key: dedupe_key.to_owned(),
        order_key: order_key.map(str::to_owned),
        correlation_id: format!("corr-{dedupe_key}"),
        body: Bytes::from(format!(
            r#"{{"eventType":"TRANSACTION_STATUS","Reference":"{dedupe_key}","Status":"PAID"}}"#
        )),
        headers: vec![
            ("content-type".to_owned(), "application/json".to_owned()),
            ("x-signature".to_owned(), format!("sha256={dedupe_key}")),
            ("user-agent".to_owned(), "FinCode-Webhook/1.0".to_owned()),
        ],
        received_at,
    }
}

fn ok<T>(result: Result<T, StoreError>, operation: &str) -> T {
    match result {
        Ok(value) => value,
        Err(error) => panic!("{operation} failed: {error}"),
    }
}

fn joined<T>(result: Result<T, tokio::task::JoinError>) -> T {
    match result {
        Ok(value) => value,
        Err(error) => panic!("a concurrent task failed: {error}"),
    }
}

async fn insert_new(store: &dyn EventStore, event: NewEvent) -> EventId {
    let key = event.dedupe_key.clone();
    match ok(store.insert(event).await, "insert") {
        Inserted::New(id) => id,
        duplicate @ Inserted::Duplicate(_) => {
            panic!("{key}: expected a new event, got {duplicate:?}")
        }
    }
}

async fn get_existing(store: &dyn EventStore, id: EventId) -> StoredEvent {
    match ok(store.get(id).await, "get") {
        Some(event) => event,
        None => panic!("event {id} is missing"),
    }
}

/// A mark that must have applied (its lease held).
fn applied(result: Result<bool, StoreError>, operation: &str) {
    assert!(ok(result, operation), "{operation}: the lease was lost");
}

/// Claims with a 30 s lease.
async fn claim(store: &dyn EventStore, now: SystemTime, limit: usize, owner: &str) -> Vec<Claimed> {
    claim_leased(store, now, limit, secs(30), owner).await
}

/// Claims with a `lease` of the check's choosing.
async fn claim_leased(
    store: &dyn EventStore,
    now: SystemTime,
    limit: usize,
    lease: Duration,
    owner: &str,
) -> Vec<Claimed> {
    ok(store.claim_due(now, limit, lease, owner).await, "claim_due")
}

/// The lease [`taken_over`] claims under.
const TAKEN_OVER_LEASE: Duration = Duration::from_secs(10);

/// A new event of `key`, received at `t`, claimed by "slow" at `t` and, once that lease
/// ([`TAKEN_OVER_LEASE`]) ran out, by "fast": its id and both claims.
async fn taken_over(
    store: &dyn EventStore,
    key: &str,
    t: SystemTime,
) -> (EventId, Claimed, Claimed) {
    let id = insert_new(store, sample(key, None, t)).await;
    let lease = TAKEN_OVER_LEASE;
    let mut slow = claim_leased(store, t, 1, lease, "slow").await;
    assert_eq!(ids_of(&slow), [id]);
    let mut fast = claim_leased(store, t + secs(11), 1, lease, "fast").await;
    assert_eq!(ids_of(&fast), [id]);
    (id, slow.remove(0), fast.remove(0))
}

/// Whether a claim finds nothing to lease.
async fn claims_nothing(
    store: &dyn EventStore,
    now: SystemTime,
    limit: usize,
    lease: Duration,
    owner: &str,
) -> bool {
    claim_leased(store, now, limit, lease, owner)
        .await
        .is_empty()
}

/// Marks `claimed` delivered under its lease, which must have held.
async fn deliver(store: &dyn EventStore, claimed: &Claimed) {
    applied(store.mark_delivered(&claimed.lease).await, "mark_delivered");
}

/// Marks `claimed` failed under its lease, which must have held.
async fn fail(store: &dyn EventStore, claimed: &Claimed, next_attempt_at: SystemTime, error: &str) {
    applied(
        store
            .mark_failed(&claimed.lease, next_attempt_at, error)
            .await,
        "mark_failed",
    );
}

/// Marks `claimed` dead under its lease, which must have held.
async fn kill(store: &dyn EventStore, claimed: &Claimed, error: &str) {
    applied(store.mark_dead(&claimed.lease, error).await, "mark_dead");
}

async fn counts(store: &dyn EventStore) -> Counts {
    ok(store.counts().await, "counts")
}

fn counts_of(pending: u64, delivered: u64, dead: u64) -> Counts {
    Counts {
        pending,
        delivered,
        dead,
    }
}

/// Stored and claimed events alike, by id.
trait HasId {
    fn id(&self) -> EventId;
}

impl HasId for StoredEvent {
    fn id(&self) -> EventId {
        self.id
    }
}

impl HasId for Claimed {
    fn id(&self) -> EventId {
        self.event.id
    }
}

fn ids_of<T: HasId>(events: &[T]) -> Vec<EventId> {
    events.iter().map(HasId::id).collect()
}

/// `stored` holds what `sent` carried, byte for byte.
fn assert_same_event(stored: &StoredEvent, sent: &NewEvent) {
    let key = &sent.dedupe_key;
    assert_eq!(stored.dedupe_key, sent.dedupe_key);
    assert_eq!(stored.order_key, sent.order_key, "{key}: order key");
    assert_eq!(
        stored.correlation_id, sent.correlation_id,
        "{key}: correlation id"
    );
    assert_eq!(stored.body, sent.body, "{key}: body bytes");
    assert_eq!(stored.headers, sent.headers, "{key}: headers");
    assert_eq!(stored.received_at, sent.received_at, "{key}: received_at");
}
