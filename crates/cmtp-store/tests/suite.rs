//! The backend-neutral suite (`cmtp_testkit::store_suite`) on the embedded store; the
//! PostgreSQL backend runs the same checks in `cmtp-store-pg/tests/suite.rs`.

use cmtp_store::{EmbeddedStore, FsPeers, FsUsers, Options};
use cmtp_testkit::store_suite as suite;

/// A test of the suite on a fresh data directory; `$open` opens the store over it.
macro_rules! embedded {
    ($name:ident, |$open:ident| $body:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let dir = tempfile::tempdir().unwrap();
            let $open = || EmbeddedStore::open(dir.path(), Options::default()).unwrap();
            $body.await;
        }
    };
}

embedded!(round_trip_and_reopen, |open| suite::round_trip_and_reopen(
    open
));
embedded!(concurrent_deliveries_are_group_committed, |open| {
    suite::concurrent_deliveries_are_group_committed(open())
});
embedded!(delete_and_abort, |open| suite::delete_and_abort(open));
embedded!(bad_metadata_is_a_typed_error, |open| {
    suite::bad_metadata_is_a_typed_error(open())
});
embedded!(ids_ascend_in_commit_order, |open| {
    suite::ids_ascend_in_commit_order(open)
});
embedded!(each_mailbox_has_its_own_id_sequence, |open| {
    suite::each_mailbox_has_its_own_id_sequence(open)
});
embedded!(mailbox_usage_and_list_range, |open| {
    suite::mailbox_usage_and_list_range(open)
});
embedded!(cancelled_write_never_commits_partial_data, |open| {
    suite::cancelled_write_never_commits_partial_data(open())
});
embedded!(notes_and_relay_ids, |open| suite::notes_and_relay_ids(open));
embedded!(claims_grant_existing_messages, |open| {
    suite::claims_grant_existing_messages(open())
});

// Users and peer keys: two handles on one data directory (the server and the admin
// CLI), as two nodes share one database.
#[test]
fn users() {
    let dir = tempfile::tempdir().unwrap();
    suite::users(|| FsUsers::open(dir.path()).unwrap());
}

#[test]
fn peers() {
    let dir = tempfile::tempdir().unwrap();
    suite::peers(|| FsPeers::open(dir.path()).unwrap());
}
