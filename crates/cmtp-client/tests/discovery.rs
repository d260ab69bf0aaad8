//! Discovery against a real DNS server (hickory-server, in-memory zone) on loopback:
//! SRV wins (with its port), else MX hosts on port 25 by preference, else a clear error.

use std::time::Duration;

use cmtp_client::{CandidateSource, ClientError, Discovery, ErrorKind};
use cmtp_testkit::dns::{self, Rr};

#[tokio::test]
async fn srv_wins_over_mx_and_is_ordered() {
    let d = dns::start(vec![
        (
            "_cmtp._tcp.example.test".into(),
            vec![
                Rr::Srv(20, 0, 7000, "backup.example.test.".into()),
                Rr::Srv(10, 5, 9001, "mail.example.test.".into()),
            ],
        ),
        (
            "example.test".into(),
            vec![Rr::Mx(10, "mx.example.test.".into())],
        ),
    ]);
    let disc = Discovery::new(Some(d.addr), Duration::from_secs(3)).unwrap();
    let c = disc.lookup("example.test").await.unwrap();
    assert_eq!(c.len(), 2, "{c:?}");
    assert_eq!(c[0].host_port(), "mail.example.test:9001");
    assert_eq!(c[0].source, CandidateSource::Srv);
    assert_eq!(c[1].host_port(), "backup.example.test:7000");
}

#[tokio::test]
async fn mx_on_port_25_when_no_srv() {
    let d = dns::start(vec![(
        "other.test".into(),
        vec![
            Rr::Mx(20, "mx2.other.test.".into()),
            Rr::Mx(5, "mx1.other.test.".into()),
        ],
    )]);
    let disc = Discovery::new(Some(d.addr), Duration::from_secs(3)).unwrap();
    let c = disc.lookup("other.test").await.unwrap();
    let hp: Vec<_> = c.iter().map(|c| c.host_port()).collect();
    assert_eq!(hp, vec!["mx1.other.test:25", "mx2.other.test:25"]);
    assert!(c.iter().all(|c| c.source == CandidateSource::Mx));
}

#[tokio::test]
async fn no_records_is_a_discovery_error() {
    let d = dns::start(vec![]);
    let disc = Discovery::new(Some(d.addr), Duration::from_secs(3)).unwrap();
    let e = disc.lookup("nowhere.test").await.unwrap_err();
    assert!(matches!(e, ClientError::Discovery { .. }), "{e:?}");
    assert_eq!(e.kind(), ErrorKind::Unreachable);
}
