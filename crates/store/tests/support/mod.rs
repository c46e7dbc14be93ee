//! What the SQLite and Postgres tests share: the conformance suite's one test per check,
//! and a sample event.

use std::time::SystemTime;

use bytes::Bytes;
use fincode_store::NewEvent;

/// A PAID event with the dedupe key `key`, received now.
pub(crate) fn event(key: &str) -> NewEvent {
    NewEvent {
        dedupe_key: key.to_owned(),
        order_key: None,
        correlation_id: format!("corr-{key}"),
        body: Bytes::from(format!(r#"{{"Reference":"{key}","Status":"PAID"}}"#)),
        headers: vec![("content-type".to_owned(), "application/json".to_owned())],
        received_at: SystemTime::now(),
    }
}

/// One test per conformance check, so a failure names the check, each run by `$run` (an
/// `async fn(conformance::Check)` that gives the check a fresh store and keeps what the
/// store needs alive until it returns); and a test that no check goes without one.
macro_rules! conformance_tests {
    ($run:ident) => {
        $crate::support::conformance_tests!(@each $run:
            insert_then_duplicate,
            concurrent_inserts_of_one_key,
            concurrent_distinct_inserts,
            claim_honours_limit_oldest_first,
            claim_honours_next_attempt_at,
            claim_honours_leases,
            order_key_serialises_delivery,
            mark_failed_reschedules_and_keeps_bytes,
            dead_letters_list_and_replay,
            late_marks_do_not_resurrect,
            missing_and_empty,
            counts_follow_transitions,
            purge_deletes_only_old_delivered_events,
            late_mark_does_not_clobber_a_new_lease,
            attempts_are_counted_at_claim,
            purged_keys_still_deduplicate,
            uids_are_unique_uuid_v7_and_stable,
            superseded_events_do_not_block_their_order_key,
            a_working_store_is_healthy,
            oldest_pending_follows_pending_since,
        );
    };
    (@each $run:ident: $($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                $run(|store| Box::pin(fincode_store::conformance::$check(store))).await;
            }
        )*

        #[test]
        fn every_conformance_check_has_a_test() {
            let checks: Vec<&str> = fincode_store::conformance::CHECKS
                .iter()
                .map(|(name, _)| *name)
                .collect();
            assert_eq!(checks, [$(stringify!($check)),*]);
        }
    };
}

pub(crate) use conformance_tests;
