//! The backend-neutral suite (`cmtp_testkit::store_suite`) on PostgreSQL: a real
//! cluster started by the test process, one database per test. The embedded store runs
//! the same checks in `cmtp-store/tests/suite.rs`.

use cmtp_store_pg::{PgOptions, PgStore, migrate};
use cmtp_testkit::PgCluster;
use cmtp_testkit::store_suite as suite;

/// A new database of the shared cluster, migrated.
fn database(name: &str) -> String {
    let url = PgCluster::shared().database(name);
    migrate(&url).unwrap();
    url
}

/// A test of the suite on a fresh database; `$open` connects a store to it.
macro_rules! postgres {
    ($name:ident, |$open:ident| $body:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let url = database(stringify!($name));
            let $open = || PgStore::connect(&url, PgOptions::default()).unwrap();
            $body.await;
        }
    };
}

postgres!(round_trip_and_reopen, |open| suite::round_trip_and_reopen(
    open
));
postgres!(concurrent_deliveries_are_group_committed, |open| {
    suite::concurrent_deliveries_are_group_committed(open())
});
postgres!(delete_and_abort, |open| suite::delete_and_abort(open));
postgres!(bad_metadata_is_a_typed_error, |open| {
    suite::bad_metadata_is_a_typed_error(open())
});
postgres!(ids_ascend_in_commit_order, |open| {
    suite::ids_ascend_in_commit_order(open)
});
postgres!(each_mailbox_has_its_own_id_sequence, |open| {
    suite::each_mailbox_has_its_own_id_sequence(open)
});
postgres!(mailbox_usage_and_list_range, |open| {
    suite::mailbox_usage_and_list_range(open)
});
postgres!(cancelled_write_never_commits_partial_data, |open| {
    suite::cancelled_write_never_commits_partial_data(open())
});
postgres!(notes_and_relay_ids, |open| suite::notes_and_relay_ids(open));
postgres!(claims_grant_existing_messages, |open| {
    suite::claims_grant_existing_messages(open())
});

#[test]
fn users() {
    let url = database("users");
    suite::users(|| PgStore::connect(&url, PgOptions::default()).unwrap());
}

#[test]
fn peers() {
    let url = database("peers");
    suite::peers(|| PgStore::connect(&url, PgOptions::default()).unwrap());
}
