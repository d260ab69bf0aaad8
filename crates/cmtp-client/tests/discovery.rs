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

// The defects of the first discovery, checked through `lookup` (which it had).

#[tokio::test]
async fn a_lone_srv_dot_means_no_service_even_with_mx() {
    let d = dns::start(vec![
        (
            "_cmtp._tcp.closed.test".into(),
            vec![Rr::Srv(0, 0, 0, ".".into())],
        ),
        (
            "closed.test".into(),
            vec![Rr::Mx(10, "mx.closed.test".into())],
        ),
    ]);
    let disc = Discovery::new(Some(d.addr), Duration::from_secs(3)).unwrap();
    let e = disc.lookup("closed.test").await.unwrap_err();
    match &e {
        ClientError::Discovery { domain, reason } => {
            assert_eq!(domain, "closed.test");
            assert!(reason.contains("no CMTP service"), "{reason}");
            assert!(!reason.contains("temporary"), "{reason}");
        }
        other => panic!("expected a discovery error, got {other:?}"),
    }
}

#[tokio::test]
async fn equal_mx_preferences_are_shuffled() {
    let d = dns::start(vec![(
        "tie.test".into(),
        vec![
            Rr::Mx(10, "a.tie.test".into()),
            Rr::Mx(10, "b.tie.test".into()),
            Rr::Mx(20, "c.tie.test".into()),
        ],
    )]);
    let disc = Discovery::new(Some(d.addr), Duration::from_secs(3)).unwrap();
    let mut a_first = 0;
    let draws = 200;
    for _ in 0..draws {
        let c = disc.lookup("tie.test").await.unwrap();
        let hosts: Vec<_> = c.iter().map(|c| c.host.as_str()).collect();
        assert_eq!(hosts.len(), 3, "every host is kept: {hosts:?}");
        assert_eq!(hosts[2], "c.tie.test", "{hosts:?}");
        if hosts[0] == "a.tie.test" {
            a_first += 1;
        }
    }
    // Fair coin over 200 draws: outside 50..150 has a probability below 1e-12.
    assert!((50..150).contains(&a_first), "a first {a_first} of {draws}");
}

#[tokio::test]
async fn srv_weights_share_the_first_place() {
    let d = dns::start(vec![(
        "_cmtp._tcp.w.test".into(),
        vec![
            Rr::Srv(10, 1, 9001, "light.w.test".into()),
            Rr::Srv(10, 3, 9001, "heavy.w.test".into()),
            Rr::Srv(20, 100, 9001, "backup.w.test".into()),
        ],
    )]);
    let disc = Discovery::new(Some(d.addr), Duration::from_secs(3)).unwrap();
    let draws = 400;
    let mut light_first = 0;
    for _ in 0..draws {
        let c = disc.lookup("w.test").await.unwrap();
        assert_eq!(c.len(), 3);
        assert_eq!(c[2].host, "backup.w.test", "priority 20 comes last");
        if c[0].host == "light.w.test" {
            light_first += 1;
        }
    }
    // RFC 2782 puts the light one first 30% of the time (see order.rs); generous bound.
    assert!(
        (60..180).contains(&light_first),
        "light first {light_first} of {draws}"
    );
}

#[tokio::test]
async fn no_srv_or_mx_but_an_address_is_the_implicit_mx() {
    let d = dns::start(vec![(
        "plain.test".into(),
        vec![Rr::A("127.0.0.5".parse().unwrap())],
    )]);
    let disc = Discovery::new(Some(d.addr), Duration::from_secs(3)).unwrap();
    let c = disc.lookup("plain.test").await.unwrap();
    assert_eq!(c.len(), 1, "{c:?}");
    assert_eq!(c[0].host_port(), "plain.test:25");
    assert_eq!(c[0].source, CandidateSource::Implicit);
}

#[tokio::test]
async fn an_unresponsive_resolver_fails_temporarily_within_twice_the_timeout() {
    let silent = dns::silent();
    let timeout = Duration::from_millis(500);
    let disc = Discovery::new(Some(silent.addr), timeout).unwrap();
    let start = std::time::Instant::now();
    let e = disc.lookup("slow.test").await.unwrap_err();
    let took = start.elapsed();
    match &e {
        ClientError::Discovery { reason, .. } => {
            assert!(reason.ends_with("(temporary)"), "{reason}")
        }
        other => panic!("expected a discovery error, got {other:?}"),
    }
    assert!(
        took < 2 * timeout,
        "took {took:?} with a {timeout:?} timeout"
    );
}
