//! `Discovery::route` against a real DNS server (hickory-server, in-memory zone) on
//! loopback: SRV, MX and implicit MX resolved to socket addresses, and which failures
//! are permanent (bounce) or temporary (retry later).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cmtp_client::{Discovery, RouteError};
use cmtp_testkit::dns::{self, Rr};
use hickory_resolver::proto::op::ResponseCode;

const T: Duration = Duration::from_secs(3);

fn a(ip: &str) -> Rr {
    Rr::A(ip.parse().unwrap())
}

fn addrs(list: &[&str]) -> Vec<SocketAddr> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

fn zone(entries: Vec<(&str, Vec<Rr>)>) -> dns::Dns {
    dns::start(
        entries
            .into_iter()
            .map(|(n, r)| (n.to_owned(), r))
            .collect(),
    )
}

/// The failure's reason, checking its kind and domain.
fn permanent(e: RouteError, domain: &str) -> String {
    assert!(e.is_permanent(), "expected permanent: {e:?}");
    assert_eq!(e.domain(), domain);
    match e {
        RouteError::Permanent { reason, .. } => reason,
        RouteError::Temporary { .. } => unreachable!(),
    }
}

fn temporary(e: RouteError, domain: &str) -> String {
    assert!(!e.is_permanent(), "expected temporary: {e:?}");
    assert_eq!(e.domain(), domain);
    assert!(e.to_string().ends_with("(temporary)"), "{e}");
    match e {
        RouteError::Temporary { reason, .. } => reason,
        RouteError::Permanent { .. } => unreachable!(),
    }
}

#[tokio::test]
async fn srv_wins_over_mx_with_its_port_and_the_zone_addresses() {
    let d = zone(vec![
        (
            "_cmtp._tcp.example.test",
            vec![Rr::Srv(10, 0, 9001, "mail.example.test".into())],
        ),
        (
            "example.test",
            vec![Rr::Mx(10, "mx.example.test".into()), a("127.0.0.9")],
        ),
        (
            "mail.example.test",
            vec![
                a("127.0.0.2"),
                a("127.0.0.3"),
                Rr::Aaaa("::1".parse().unwrap()),
            ],
        ),
        ("mx.example.test", vec![a("127.0.0.4")]),
    ]);
    let disc = Discovery::new(Some(d.addr), T).unwrap();
    let mut got = disc.route("example.test").await.unwrap();
    // A before AAAA; the order of the two A records is the DNS server's.
    assert_eq!(got.pop(), Some("[::1]:9001".parse().unwrap()));
    got.sort();
    assert_eq!(got, addrs(&["127.0.0.2:9001", "127.0.0.3:9001"]));
}

#[tokio::test]
async fn srv_priorities_in_order_each_target_on_its_port() {
    let d = zone(vec![
        (
            "_cmtp._tcp.p.test",
            vec![
                Rr::Srv(30, 50, 7003, "c.p.test".into()),
                Rr::Srv(10, 0, 7001, "a.p.test".into()),
                Rr::Srv(20, 9, 7002, "b.p.test".into()),
            ],
        ),
        ("a.p.test", vec![a("127.0.0.11")]),
        ("b.p.test", vec![a("127.0.0.12")]),
        ("c.p.test", vec![a("127.0.0.13")]),
    ]);
    let disc = Discovery::new(Some(d.addr), T).unwrap();
    for _ in 0..20 {
        assert_eq!(
            disc.route("p.test").await.unwrap(),
            addrs(&["127.0.0.11:7001", "127.0.0.12:7002", "127.0.0.13:7003"])
        );
    }
}

#[tokio::test]
async fn srv_weights_with_a_seed_are_reproducible_and_proportional() {
    let d = zone(vec![
        (
            "_cmtp._tcp.w.test",
            vec![
                Rr::Srv(10, 1, 9001, "light.w.test".into()),
                Rr::Srv(10, 3, 9001, "heavy.w.test".into()),
            ],
        ),
        ("light.w.test", vec![a("127.0.0.21")]),
        ("heavy.w.test", vec![a("127.0.0.22")]),
    ]);
    let heavy: SocketAddr = "127.0.0.22:9001".parse().unwrap();
    let draws = 400;
    let mut runs = Vec::new();
    for _ in 0..2 {
        let disc = Discovery::new(Some(d.addr), T).unwrap().with_seed(2026);
        let mut firsts = Vec::new();
        for _ in 0..draws {
            let r = disc.route("w.test").await.unwrap();
            assert_eq!(r.len(), 2, "{r:?}");
            firsts.push(r[0]);
        }
        runs.push(firsts);
    }
    assert_eq!(runs[0], runs[1], "the same seed gives the same orders");
    let heavy_first = runs[0].iter().filter(|a| **a == heavy).count();
    // Expected 0.7 × 400 = 280 (order.rs explains the 0.7); about ±5 deviations.
    assert!(
        (235..325).contains(&heavy_first),
        "heavy first {heavy_first} of {draws}"
    );
}

#[tokio::test]
async fn a_lone_srv_dot_is_permanent() {
    let d = zone(vec![
        ("_cmtp._tcp.closed.test", vec![Rr::Srv(0, 0, 0, ".".into())]),
        ("closed.test", vec![Rr::Mx(10, "mx.closed.test".into())]),
        ("mx.closed.test", vec![a("127.0.0.31")]),
    ]);
    let disc = Discovery::new(Some(d.addr), T).unwrap();
    let e = disc.route("closed.test").await.unwrap_err();
    let reason = permanent(e, "closed.test");
    assert!(reason.contains("no CMTP service"), "{reason}");
}

#[tokio::test]
async fn an_srv_dot_among_real_targets_is_skipped() {
    let d = zone(vec![
        (
            "_cmtp._tcp.mixed.test",
            vec![
                Rr::Srv(5, 0, 0, ".".into()),
                Rr::Srv(10, 0, 9009, "real.mixed.test".into()),
            ],
        ),
        ("real.mixed.test", vec![a("127.0.0.35")]),
    ]);
    let disc = Discovery::new(Some(d.addr), T).unwrap();
    assert_eq!(
        disc.route("mixed.test").await.unwrap(),
        addrs(&["127.0.0.35:9009"])
    );
}

#[tokio::test]
async fn mx_every_host_by_preference_ties_shuffled() {
    let d = zone(vec![
        (
            "m.test",
            vec![
                Rr::Mx(20, "late.m.test".into()),
                Rr::Mx(10, "x.m.test".into()),
                Rr::Mx(10, "y.m.test".into()),
                Rr::Mx(5, "early.m.test".into()),
            ],
        ),
        ("early.m.test", vec![a("127.0.0.41")]),
        ("x.m.test", vec![a("127.0.0.42")]),
        ("y.m.test", vec![a("127.0.0.43"), a("127.0.0.44")]),
        ("late.m.test", vec![a("127.0.0.45")]),
    ]);
    let disc = Discovery::new(Some(d.addr), T).unwrap().with_seed(7);
    let x_first = addrs(&[
        "127.0.0.41:25",
        "127.0.0.42:25",
        "127.0.0.43:25",
        "127.0.0.44:25",
        "127.0.0.45:25",
    ]);
    let y_first = addrs(&[
        "127.0.0.41:25",
        "127.0.0.43:25",
        "127.0.0.44:25",
        "127.0.0.42:25",
        "127.0.0.45:25",
    ]);
    let (mut xs, mut ys) = (0, 0);
    for _ in 0..60 {
        let mut r = disc.route("m.test").await.unwrap();
        // y's two A records come in the DNS server's order: fix one for comparing.
        let at = |r: &[SocketAddr], ip: &str| r.iter().position(|a| a.ip().to_string() == ip);
        if let (Some(i), Some(j)) = (at(&r, "127.0.0.43"), at(&r, "127.0.0.44"))
            && i > j
        {
            r.swap(i, j);
        }
        if r == x_first {
            xs += 1;
        } else if r == y_first {
            ys += 1;
        } else {
            panic!("unexpected order {r:?}");
        }
    }
    assert!(
        xs > 0 && ys > 0,
        "both tie orders appear: x first {xs}, y first {ys}"
    );
}

#[tokio::test]
async fn null_mx_is_permanent() {
    let d = zone(vec![(
        "nomail.test",
        vec![Rr::Mx(0, ".".into()), a("127.0.0.51")],
    )]);
    let disc = Discovery::new(Some(d.addr), T).unwrap();
    let e = disc.route("nomail.test").await.unwrap_err();
    let reason = permanent(e, "nomail.test");
    assert!(reason.contains("accepts no mail"), "{reason}");
}

#[tokio::test]
async fn nxdomain_is_permanent() {
    let d = zone(vec![("other.test", vec![a("127.0.0.61")])]);
    let disc = Discovery::new(Some(d.addr), T).unwrap();
    let e = disc.route("nowhere.test.").await.unwrap_err();
    let reason = permanent(e, "nowhere.test");
    assert!(reason.contains("NXDOMAIN"), "{reason}");
}

#[tokio::test]
async fn no_srv_or_mx_routes_to_the_domain_on_port_25() {
    let d = zone(vec![(
        "plain.test",
        vec![a("127.0.0.71"), Rr::Aaaa("::1".parse().unwrap())],
    )]);
    let disc = Discovery::new(Some(d.addr), T).unwrap();
    assert_eq!(
        disc.route("plain.test").await.unwrap(),
        addrs(&["127.0.0.71:25", "[::1]:25"])
    );
}

#[tokio::test]
async fn a_domain_with_no_routing_records_is_permanent() {
    let d = zone(vec![("bare.test", vec![Rr::Txt("v=nothing".into())])]);
    let disc = Discovery::new(Some(d.addr), T).unwrap();
    let e = disc.route("bare.test").await.unwrap_err();
    let reason = permanent(e, "bare.test");
    assert!(
        reason.contains("no SRV _cmtp._tcp, MX, A or AAAA"),
        "{reason}"
    );
}

#[tokio::test]
async fn an_unresolvable_target_is_skipped() {
    let d = zone(vec![
        (
            "half.test",
            vec![
                Rr::Mx(10, "gone.half.test".into()),
                Rr::Mx(20, "ok.half.test".into()),
            ],
        ),
        ("ok.half.test", vec![a("127.0.0.81")]),
    ]);
    let disc = Discovery::new(Some(d.addr), T).unwrap();
    assert_eq!(
        disc.route("half.test").await.unwrap(),
        addrs(&["127.0.0.81:25"])
    );
}

#[tokio::test]
async fn no_target_resolving_is_temporary_and_says_why() {
    let d = zone(vec![(
        "orphan.test",
        vec![
            Rr::Mx(10, "gone1.orphan.test".into()),
            Rr::Mx(20, "gone2.orphan.test".into()),
        ],
    )]);
    let disc = Discovery::new(Some(d.addr), T).unwrap();
    let e = disc.route("orphan.test").await.unwrap_err();
    let reason = temporary(e, "orphan.test");
    assert!(
        reason.contains("none of its mail hosts has an address"),
        "{reason}"
    );
    assert!(
        reason.contains("gone1.orphan.test: no such domain"),
        "{reason}"
    );
    assert!(reason.contains("gone2.orphan.test"), "{reason}");
}

#[tokio::test]
async fn a_cname_target_is_followed() {
    let d = zone(vec![
        ("alias.test", vec![Rr::Mx(10, "mx.alias.test".into())]),
        ("mx.alias.test", vec![Rr::Cname("real.alias.test".into())]),
        ("real.alias.test", vec![a("127.0.0.91")]),
    ]);
    let disc = Discovery::new(Some(d.addr), T).unwrap();
    assert_eq!(
        disc.route("alias.test").await.unwrap(),
        addrs(&["127.0.0.91:25"])
    );
}

#[tokio::test]
async fn an_unresponsive_resolver_is_temporary_within_twice_the_timeout() {
    let silent = dns::silent();
    let timeout = Duration::from_millis(400);
    let disc = Discovery::new(Some(silent.addr), timeout).unwrap();
    for domain in ["slow.test", "slow2.test"] {
        let start = Instant::now();
        let e = disc.route(domain).await.unwrap_err();
        let took = start.elapsed();
        eprintln!("{domain}: temporary failure after {took:?}");
        let reason = temporary(e, domain);
        assert!(reason.contains("timed out"), "{reason}");
        assert!(
            took < 2 * timeout,
            "took {took:?} with a {timeout:?} timeout"
        );
    }
}

#[tokio::test]
async fn servfail_and_refused_are_temporary() {
    for (code, text) in [
        (ResponseCode::ServFail, "Server Failure"),
        (ResponseCode::Refused, "Refused"),
    ] {
        let server = dns::answering(code);
        let disc = Discovery::new(Some(server.addr), T).unwrap();
        let start = Instant::now();
        let e = disc.route("broken.test").await.unwrap_err();
        assert!(start.elapsed() < T, "an answer is not a timeout");
        let reason = temporary(e, "broken.test");
        assert!(reason.contains(text), "{code:?}: {reason}");
    }
}

#[tokio::test]
async fn localhost_and_ip_literals_need_no_dns() {
    // Nothing answers here: any query would time out.
    let silent = dns::silent();
    let disc = Discovery::new(Some(silent.addr), Duration::from_millis(300)).unwrap();
    assert_eq!(
        disc.route("localhost").await.unwrap(),
        addrs(&["127.0.0.1:25", "[::1]:25"])
    );
    for (literal, addr) in [
        ("127.0.0.7", "127.0.0.7:25"),
        ("[127.0.0.8]", "127.0.0.8:25"),
        ("[IPv6:::1]", "[::1]:25"),
    ] {
        assert_eq!(
            disc.route(literal).await.unwrap(),
            addrs(&[addr]),
            "{literal}"
        );
    }
}

#[tokio::test]
async fn a_malformed_domain_is_permanent() {
    let silent = dns::silent();
    let disc = Discovery::new(Some(silent.addr), Duration::from_millis(300)).unwrap();
    let long = format!("{}.test", "a".repeat(70));
    for bad in ["", ".", long.as_str(), "a..b"] {
        let e = disc.route(bad).await.unwrap_err();
        assert!(e.is_permanent(), "{bad:?}: {e:?}");
    }
}

#[tokio::test]
async fn a_domain_too_long_for_an_srv_name_still_routes_by_mx() {
    // 250 bytes on the wire: with "_cmtp._tcp." in front it would pass 255.
    let long = format!("{}test", format!("{}.", "d".repeat(60)).repeat(4));
    let d = zone(vec![
        (long.as_str(), vec![Rr::Mx(10, "mx.long.test".into())]),
        ("mx.long.test", vec![a("127.0.0.95")]),
    ]);
    let disc = Discovery::new(Some(d.addr), T).unwrap();
    assert_eq!(disc.route(&long).await.unwrap(), addrs(&["127.0.0.95:25"]));
}
