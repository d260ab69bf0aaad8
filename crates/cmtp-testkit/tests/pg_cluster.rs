//! The PostgreSQL harness itself: a cluster starts, databases are separate, a restart
//! keeps committed data, and the cluster's directory is gone after drop.

use cmtp_testkit::PgCluster;

#[test]
fn databases_are_separate_and_data_survives_a_restart() {
    let c = PgCluster::start();
    let a = c.database("harness a");
    let b = c.database("harness b");
    assert_ne!(a, b);
    let db_a = a.rsplit('/').next().unwrap();
    let db_b = b.rsplit('/').next().unwrap();
    c.psql(
        db_a,
        "CREATE TABLE t(x int); INSERT INTO t VALUES (41), (1)",
    );
    assert_eq!(c.psql(db_a, "SELECT sum(x) FROM t"), "42");
    assert_eq!(
        c.psql(db_b, "SELECT count(*) FROM pg_tables WHERE tablename = 't'"),
        "0"
    );
    assert_eq!(c.psql("postgres", "SHOW fsync"), "on");
    assert_eq!(c.psql("postgres", "SHOW synchronous_commit"), "on");
    c.restart();
    assert_eq!(c.psql(db_a, "SELECT sum(x) FROM t"), "42");
    let dir = c.psql("postgres", "SHOW data_directory");
    let root = std::path::PathBuf::from(&dir).parent().unwrap().to_owned();
    assert!(root.exists());
    drop(c);
    assert!(!root.exists(), "{} left behind", root.display());
}

#[test]
fn the_shared_cluster_serves_parallel_databases() {
    let c = PgCluster::shared();
    let urls: Vec<String> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|i| s.spawn(move || c.database(&format!("par{i}"))))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut names: Vec<_> = urls.iter().map(|u| u.rsplit('/').next().unwrap()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 4);
    for n in names {
        assert_eq!(c.psql(n, "SELECT current_database()"), n);
    }
}
