//! The mailbox extension: signed requests (window, keys, users, domains), per-mailbox
//! ids, rate-limited authorisation failures.

use cmtp_proto::{FetchPart, MboxKind, MboxRequest};
use cmtp_testkit::*;

use crate::BACKEND;

#[test]
fn mailbox_auth_window_keys_users_domains() {
    let srv = TestServer::start_with(Opts {
        config: "domains = [\"a.example\", \"b.example\"]\n".into(),
        ..Opts::on(BACKEND)
    });
    let hal = srv.add_user("hal", "pw");
    let ivy = srv.add_user("ivy", "pw");
    let mut c = srv.client();
    assert_eq!(
        c.mail(&message(
            0,
            ("hal", ""),
            ("ivy", "a.example"),
            b"",
            b"hi",
            &[]
        )),
        "SUCCESS"
    );
    let list = |c: &mut Client, ts: u64, key, dom| {
        c.mbox(MboxKind::List, MboxRequest::list("hal", ts), key, dom)
    };
    assert!(list(&mut c, now(), &hal, "a.example").is_ok());
    assert!(list(&mut c, now(), &hal, "b.example").is_ok());
    assert!(list(&mut c, now() - 250, &hal, "a.example").is_ok());
    // Replay outside the window, both sides.
    assert_eq!(
        list(&mut c, now() - 400, &hal, "a.example"),
        Err("AUTHFAILURE".into())
    );
    assert_eq!(
        list(&mut c, now() + 400, &hal, "a.example"),
        Err("AUTHFAILURE".into())
    );
    // Wrong key (ivy signs a request for hal's mailbox).
    assert_eq!(
        list(&mut c, now(), &ivy, "a.example"),
        Err("AUTHFAILURE".into())
    );
    // Foreign domain in the signed bytes.
    assert_eq!(
        list(&mut c, now(), &hal, "evil.example"),
        Err("AUTHFAILURE".into())
    );
    // Unknown and hostile users.
    for u in ["nobody", "../hal"] {
        let r = c.mbox(
            MboxKind::List,
            MboxRequest::list(u, now()),
            &hal,
            "a.example",
        );
        assert_eq!(r, Err("AUTHFAILURE".into()));
    }
    // Ivy's own mailbox is empty: hal's message is not hers.
    let l = c
        .mbox(
            MboxKind::List,
            MboxRequest::list("ivy", now()),
            &ivy,
            "a.example",
        )
        .unwrap();
    assert_eq!(l, 0u32.to_be_bytes());
    let entries =
        cmtp_proto::mbox::decode_list(&list(&mut c, now(), &hal, "a.example").unwrap(), 9).unwrap();
    let id = entries[0].id;
    assert_eq!(entries[0].src_account, "ivy");
    // Ivy cannot fetch or delete hal's message by id through her own mailbox.
    let r = c.mbox(
        MboxKind::Fetch,
        MboxRequest::fetch("ivy", now(), id, FetchPart::Full),
        &ivy,
        "a.example",
    );
    assert_eq!(r, Err("NOSUCHMESSAGE".into()));
    let r = c.mbox(
        MboxKind::Delete,
        MboxRequest::delete("ivy", now(), id),
        &ivy,
        "a.example",
    );
    assert_eq!(r, Err("NOSUCHMESSAGE".into()));
    // A signature for FETCH does not authorise DEL of the same id.
    let mut req = MboxRequest::delete("hal", now(), id);
    req.signature = *hal
        .sign(
            &MboxRequest::fetch("hal", req.timestamp, id, FetchPart::Full)
                .signing_bytes(MboxKind::Fetch, "a.example"),
        )
        .as_bytes();
    c.send(&cmtp_proto::Command::MboxDelete(req.clone()).to_bytes());
    assert_eq!(c.mbox_reply(&req.signature), Err("AUTHFAILURE".into()));
    // Delete for real, then it is gone; DEL again → NOSUCHMESSAGE.
    let r = c.mbox(
        MboxKind::Delete,
        MboxRequest::delete("hal", now(), id),
        &hal,
        "a.example",
    );
    assert_eq!(r, Ok(vec![]));
    let r = c.mbox(
        MboxKind::Delete,
        MboxRequest::delete("hal", now(), id),
        &hal,
        "a.example",
    );
    assert_eq!(r, Err("NOSUCHMESSAGE".into()));
    assert_eq!(
        list(&mut c, now(), &hal, "a.example").unwrap(),
        0u32.to_be_bytes()
    );
    c.send(b"NOOP\0");
    assert_eq!(c.general(), "SUCCESS");
}

/// Each mailbox has its own id sequence (issue 9): mail to hal and ivy interleaved gives
/// each 1, 2, 3 (on the old store-wide counter hal saw 1, 3, 5: ivy's traffic in the
/// gaps), and a deleted newest id is not given again.
#[test]
fn each_mailbox_lists_its_own_id_sequence() {
    let srv = TestServer::start_with(Opts {
        config: "domains = [\"a.example\"]\n".into(),
        ..Opts::on(BACKEND)
    });
    let hal = srv.add_user("hal", "pw");
    let ivy = srv.add_user("ivy", "pw");
    let dom = "a.example";
    let mut c = srv.client();
    for _ in 0..3 {
        for to in ["hal", "ivy"] {
            let m = message(0, (to, dom), ("gus", "x.example"), b"", b"hi", &[]);
            assert_eq!(c.mail(&m), "SUCCESS");
        }
    }
    let ids = |c: &mut Client, user: &str, key| {
        let l = c
            .mbox(MboxKind::List, MboxRequest::list(user, now()), key, dom)
            .unwrap();
        cmtp_proto::mbox::decode_list(&l, 100)
            .unwrap()
            .iter()
            .map(|e| e.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&mut c, "hal", &hal), [1, 2, 3]);
    assert_eq!(ids(&mut c, "ivy", &ivy), [1, 2, 3]);
    let r = c.mbox(
        MboxKind::Delete,
        MboxRequest::delete("ivy", now(), 3),
        &ivy,
        dom,
    );
    assert_eq!(r, Ok(vec![]));
    let m = message(0, ("ivy", dom), ("gus", "x.example"), b"", b"again", &[]);
    assert_eq!(c.mail(&m), "SUCCESS");
    assert_eq!(ids(&mut c, "ivy", &ivy), [1, 2, 4]);
    assert_eq!(ids(&mut c, "hal", &hal), [1, 2, 3]);
}

#[test]
fn mailbox_auth_failures_are_rate_limited() {
    let srv = TestServer::start_with(Opts {
        config: "[limits]\nexempt_networks = []\n[rate]\nmbox_auth_failures_per_sec = 1\nmbox_auth_failures_burst = 2\n".into(),
        ..Opts::on(BACKEND)
    });
    let pat = srv.add_user("pat", "pw");
    let other = cmtp_crypto::KeyPair::generate().unwrap();
    let mut c = srv.client();
    // Authorised requests never spend the failure budget.
    for _ in 0..5 {
        let r = c.mbox(
            MboxKind::List,
            MboxRequest::list("pat", now()),
            &pat,
            "localhost",
        );
        assert!(r.is_ok());
    }
    // Three refused requests in one packet (processed together, so no refill between).
    let mut wire = Vec::new();
    for _ in 0..3 {
        let mut req = MboxRequest::list("pat", now());
        req.signature = *other
            .sign(&req.signing_bytes(MboxKind::List, "localhost"))
            .as_bytes();
        wire.extend(cmtp_proto::Command::MboxList(req).to_bytes());
    }
    c.send(&wire);
    assert_eq!(c.status(), "v0:AUTHFAILURE");
    assert_eq!(c.status(), "v0:AUTHFAILURE");
    // Budget spent: refused without the signature check, connection still usable.
    assert_eq!(c.status(), "FAILURE");
    c.send(b"NOOP\0");
    assert_eq!(c.general(), "SUCCESS");
    assert!(srv.metric("cmtpd_failures_total{reason=\"rate_limited\"}") >= 1);
}
