//! A scripted DNS server on 127.0.0.1 (UDP) for discovery tests: it answers SRV and
//! MX questions from a fixed table and NXDOMAIN otherwise. Real packets over a real
//! socket; only the zone is scripted.
#![allow(dead_code)]

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// One answer record.
#[derive(Debug, Clone)]
pub enum Rr {
    /// SRV priority weight port target.
    Srv(u16, u16, u16, String),
    /// MX preference exchange.
    Mx(u16, String),
}

/// A running responder; stops when dropped.
pub struct Dns {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Drop for Dns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the thread's blocking recv.
        if let Ok(s) = UdpSocket::bind("127.0.0.1:0") {
            let _ = s.send_to(&[0u8; 2], self.addr);
        }
    }
}

fn encode_name(name: &str, out: &mut Vec<u8>) {
    for label in name
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
}

/// Starts a responder for `zone`: (lower-case name without trailing dot, records).
pub fn start(zone: Vec<(String, Vec<Rr>)>) -> Dns {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while !stop2.load(Ordering::SeqCst) {
            let Ok((n, peer)) = sock.recv_from(&mut buf) else {
                return;
            };
            if let Some(resp) = answer(&buf[..n], &zone) {
                let _ = sock.send_to(&resp, peer);
            }
        }
    });
    Dns { addr, stop }
}

fn answer(q: &[u8], zone: &[(String, Vec<Rr>)]) -> Option<Vec<u8>> {
    if q.len() < 12 {
        return None;
    }
    let mut pos = 12;
    let mut labels = Vec::new();
    loop {
        let l = *q.get(pos)? as usize;
        pos += 1;
        if l == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(q.get(pos..pos + l)?).to_lowercase());
        pos += l;
    }
    let qtype = u16::from_be_bytes([*q.get(pos)?, *q.get(pos + 1)?]);
    let qend = pos + 4;
    let name = labels.join(".");
    let records: Vec<&Rr> = zone
        .iter()
        .filter(|(n, _)| *n == name)
        .flat_map(|(_, rs)| rs.iter())
        .filter(|r| matches!((r, qtype), (Rr::Srv(..), 33) | (Rr::Mx(..), 15)))
        .collect();
    let known = zone.iter().any(|(n, _)| *n == name);
    let mut r = Vec::with_capacity(512);
    r.extend_from_slice(&q[0..2]);
    // QR, opcode 0, AA, RD copied; RA; rcode NXDOMAIN (3) for unknown names.
    let rd = q[2] & 1;
    r.push(0x84 | rd);
    r.push(if known { 0x80 } else { 0x83 });
    r.extend_from_slice(&1u16.to_be_bytes());
    r.extend_from_slice(&(records.len() as u16).to_be_bytes());
    r.extend_from_slice(&0u16.to_be_bytes());
    r.extend_from_slice(&0u16.to_be_bytes());
    r.extend_from_slice(q.get(12..qend)?);
    for rec in records {
        r.extend_from_slice(&[0xc0, 0x0c]);
        let mut rdata = Vec::new();
        let t: u16 = match rec {
            Rr::Srv(p, w, port, target) => {
                rdata.extend_from_slice(&p.to_be_bytes());
                rdata.extend_from_slice(&w.to_be_bytes());
                rdata.extend_from_slice(&port.to_be_bytes());
                encode_name(target, &mut rdata);
                33
            }
            Rr::Mx(pref, host) => {
                rdata.extend_from_slice(&pref.to_be_bytes());
                encode_name(host, &mut rdata);
                15
            }
        };
        r.extend_from_slice(&t.to_be_bytes());
        r.extend_from_slice(&1u16.to_be_bytes());
        r.extend_from_slice(&60u32.to_be_bytes());
        r.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        r.extend_from_slice(&rdata);
    }
    Some(r)
}
