//! A full disk, seen from outside: the real server on a small real filesystem answers
//! FAILURE while it cannot write, says so on `/health` and in `/metrics`, and delivers
//! again once space returns, without a restart. Before the fix the store stayed dead
//! until a restart and `/health` still answered "ok".

use cmtp_proto::{MboxKind, MboxRequest};
use cmtp_testkit::*;

#[test]
fn full_disk_is_reported_and_deliveries_resume_once_space_returns() {
    on_tmpfs(
        "full_disk_is_reported_and_deliveries_resume_once_space_returns",
        "12m",
        |dir| {
            let data = dir.join("data");
            // Space that the test gives back later.
            let ballast = dir.join("ballast");
            std::fs::write(&ballast, vec![0x5a; 4 << 20]).unwrap();
            let srv = TestServer::start_with(Opts {
                data: Some(data),
                config: "[rate]\nmailbox_mail_per_sec = 0\n".into(),
                ..Default::default()
            });
            let bob = srv.add_user("bob", "pw");
            let m = message(0, ("bob", ""), ("a", "b"), b"", &noise(200 * 1024, 7), &[]);
            // Fill the disk: an internal error answers FAILURE and closes, so reconnect.
            let mut acked = 0usize;
            let mut c = srv.client();
            loop {
                match c.mail(&m).as_str() {
                    "SUCCESS" => acked += 1,
                    "FAILURE" => break,
                    other => panic!("unexpected reply {other:?}"),
                }
                assert!(acked < 200, "the disk never filled");
            }
            c.expect_eof();
            assert!(acked > 0);
            let (status, body) = srv.http_get("/health");
            assert_eq!(status, "HTTP/1.0 503 Service Unavailable", "{body}");
            assert!(body.contains("refuses writes"), "{body}");
            assert_eq!(srv.metric("cmtpd_store_writable"), 0);
            assert!(srv.metric("cmtpd_store_write_failures_total") >= 1);

            // Space returns: the same server process delivers again.
            std::fs::remove_file(&ballast).unwrap();
            let mut c = srv.client();
            assert_eq!(c.mail(&m), "SUCCESS");
            acked += 1;
            let (status, body) = srv.http_get("/health");
            assert_eq!((status.as_str(), body.as_str()), ("HTTP/1.0 200 OK", "ok"));
            assert_eq!(srv.metric("cmtpd_store_writable"), 1);

            // Exactly the acknowledged messages are there.
            let payload = c
                .mbox(
                    MboxKind::List,
                    MboxRequest::list("bob", now()),
                    &bob,
                    "localhost",
                )
                .unwrap();
            let listed = cmtp_proto::mbox::decode_list(&payload, u32::MAX).unwrap();
            assert_eq!(listed.len(), acked);
        },
    );
}
