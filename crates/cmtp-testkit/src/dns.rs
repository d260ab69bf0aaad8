//! A real DNS server (hickory-server) on 127.0.0.1, UDP and TCP on one ephemeral port,
//! for discovery tests. It is authoritative for the root zone, held in memory: names in
//! the table answer their records (NOERROR with no answer for other types), any other
//! name is NXDOMAIN. Only the zone is scripted; the packets are hickory's.
//!
//! For the failures: [`silent`] binds UDP and TCP on one port and never answers (a
//! resolver's timeout), and [`answering`] answers every query with one response code
//! (SERVFAIL, REFUSED: hickory-server's in-memory zone never produces SERVFAIL), the
//! reply built with hickory's own message encoder.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use hickory_server::Server;
use hickory_server::net::runtime::TokioRuntimeProvider;
use hickory_server::proto::op::{Message, ResponseCode};
use hickory_server::proto::rr::rdata::{A, AAAA, CNAME, MX, SOA, SRV, TXT};
use hickory_server::proto::rr::{LowerName, Name, RData, Record};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneType};
use tokio::sync::oneshot;

/// One answer record.
#[derive(Debug, Clone)]
pub enum Rr {
    /// SRV priority weight port target.
    Srv(u16, u16, u16, String),
    /// MX preference exchange; exchange "." is the root, so `Mx(0, ".")` is a null MX
    /// (RFC 7505).
    Mx(u16, String),
    /// An IPv4 address.
    A(Ipv4Addr),
    /// An IPv6 address.
    Aaaa(Ipv6Addr),
    /// An alias to another name.
    Cname(String),
    /// A text record: makes a name exist without any routing record.
    Txt(String),
}

/// A running server; stops (and frees its port) when dropped.
pub struct Dns {
    /// Where it answers, over UDP and TCP.
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Dns {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

const TTL: u32 = 60;

/// `name` made absolute; "." (or "") is the root.
fn fqdn(name: &str) -> Name {
    let n = format!("{}.", name.trim_end_matches('.'));
    Name::from_ascii(&n).unwrap_or_else(|e| panic!("bad DNS name {name:?}: {e}"))
}

/// The root zone: an SOA (required by an authoritative zone, and what makes misses
/// NXDOMAIN rather than REFUSED) plus the table's records.
fn zone(table: Vec<(String, Vec<Rr>)>) -> InMemoryZoneHandler<TokioRuntimeProvider> {
    let serial = 1;
    let mut z = InMemoryZoneHandler::empty(Name::root(), ZoneType::Primary, AxfrPolicy::Deny);
    let soa = SOA::new(
        fqdn("ns.test"),
        fqdn("hostmaster.test"),
        serial,
        3600,
        600,
        86400,
        TTL,
    );
    assert!(z.upsert_mut(
        Record::from_rdata(Name::root(), TTL, RData::SOA(soa)),
        serial
    ));
    for (name, rrs) in table {
        let owner = fqdn(&name);
        for rr in rrs {
            let data = match rr {
                Rr::Srv(prio, weight, port, target) => {
                    RData::SRV(SRV::new(prio, weight, port, fqdn(&target)))
                }
                Rr::Mx(pref, exchange) => RData::MX(MX::new(pref, fqdn(&exchange))),
                Rr::A(ip) => RData::A(A(ip)),
                Rr::Aaaa(ip) => RData::AAAA(AAAA(ip)),
                Rr::Cname(target) => RData::CNAME(CNAME(fqdn(&target))),
                Rr::Txt(text) => RData::TXT(TXT::new(vec![text])),
            };
            let rec = Record::from_rdata(owner.clone(), TTL, data);
            assert!(z.upsert_mut(rec, serial), "record for {name} refused");
        }
    }
    z
}

/// UDP and TCP bound on the same loopback port (the resolver asks both on one port).
fn bind_pair() -> (UdpSocket, TcpListener) {
    for _ in 0..50 {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind DNS UDP socket");
        let addr = udp.local_addr().expect("UDP local address");
        // Another process may hold TCP on this port; then take another UDP port.
        if let Ok(tcp) = TcpListener::bind(addr) {
            return (udp, tcp);
        }
    }
    panic!("no loopback port free for both UDP and TCP");
}

/// Starts a server for `table`: (name, with or without trailing dot, records). Both
/// sockets are bound before this returns, so queries may be sent at once.
pub fn start(table: Vec<(String, Vec<Rr>)>) -> Dns {
    let (udp, tcp) = bind_pair();
    let addr = udp.local_addr().expect("UDP local address");
    udp.set_nonblocking(true).expect("nonblocking UDP");
    tcp.set_nonblocking(true).expect("nonblocking TCP");
    let mut catalog = Catalog::new();
    catalog.upsert(LowerName::from(Name::root()), vec![Arc::new(zone(table))]);
    // Its own runtime on its own thread: synchronous tests (cmtp-cli's) can use it too,
    // and it outlives no test's runtime.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("DNS server runtime");
    let (stop, stopped) = oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        rt.block_on(async move {
            let mut server = Server::new(catalog);
            server.register_socket(tokio::net::UdpSocket::from_std(udp).expect("tokio UDP"));
            server.register_listener(
                tokio::net::TcpListener::from_std(tcp).expect("tokio TCP"),
                Duration::from_secs(5),
                4096,
            );
            // Sender dropped (or sent): the test is done with us.
            let _ = stopped.await;
            server.shutdown_token().cancel();
        });
        // Dropping the runtime aborts any connection still open and closes the sockets.
        drop(rt);
    });
    Dns {
        addr,
        stop: Some(stop),
        thread: Some(thread),
    }
}

/// UDP and TCP sockets on one loopback port that never answer: the UDP datagrams are
/// never read and the TCP connections never accepted (they wait in the backlog). A
/// resolver pointed here can only time out. Closed when dropped.
pub struct Silent {
    /// Where it does not answer.
    pub addr: SocketAddr,
    _udp: UdpSocket,
    _tcp: TcpListener,
}

/// Starts a [`Silent`] server.
pub fn silent() -> Silent {
    let (udp, tcp) = bind_pair();
    Silent {
        addr: udp.local_addr().expect("UDP local address"),
        _udp: udp,
        _tcp: tcp,
    }
}

/// A server that answers every UDP query with `code` and nothing else (its TCP port is
/// held but never answers). Stops when dropped.
pub struct Answering {
    /// Where it answers.
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    _tcp: TcpListener,
}

impl Drop for Answering {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts an [`Answering`] server for `code` (e.g. `ResponseCode::ServFail`).
pub fn answering(code: ResponseCode) -> Answering {
    let (udp, tcp) = bind_pair();
    let addr = udp.local_addr().expect("UDP local address");
    udp.set_nonblocking(true).expect("nonblocking UDP");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("DNS server runtime");
    let (stop, mut stopped) = oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        rt.block_on(async move {
            let udp = tokio::net::UdpSocket::from_std(udp).expect("tokio UDP");
            let mut buf = vec![0u8; 4096];
            loop {
                let (n, from) = tokio::select! {
                    _ = &mut stopped => return,
                    r = udp.recv_from(&mut buf) => match r {
                        Ok(r) => r,
                        Err(_) => continue,
                    },
                };
                // Not a DNS query: say nothing, as a server would.
                let Ok(query) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let mut reply = Message::error_msg(query.metadata.id, query.metadata.op_code, code);
                // The question echoed as asked (the resolver checks it, case included).
                reply.add_queries(query.queries.clone());
                if let Ok(bytes) = reply.to_vec() {
                    let _ = udp.send_to(&bytes, from).await;
                }
            }
        });
    });
    Answering {
        addr,
        stop: Some(stop),
        thread: Some(thread),
        _tcp: tcp,
    }
}
