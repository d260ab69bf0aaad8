//! The server run in-process through the library API (`Server::bind` / `run`), over real
//! TCP on 127.0.0.1.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use cmtpd::metrics::CommandKind;
use cmtpd::{Config, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn library_server_serves_and_shuts_down() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: dir.path().join("data"),
        domains: vec!["lib.example".into()],
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        metrics_enabled: false,
        ..Default::default()
    };
    let server = Server::bind(config).unwrap();
    let addr = server.local_addrs()[0];
    assert!(server.metrics_addr().is_none());
    let shared = server.shared();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async {
        let _ = stop_rx.await;
    }));

    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let greeting = b"220 lib.example CMTP/1 ready\r\n";
    let mut buf = vec![0u8; greeting.len()];
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, greeting);
    // Pipelined: NOOP, server key, NOOP → 73 + 102 + 73 bytes, in order.
    s.write_all(b"NOOP\0KEYREQUEST\0\0NOOP\0").await.unwrap();
    let mut r = vec![0u8; 73 + 102 + 73];
    s.read_exact(&mut r).await.unwrap();
    let pk = shared.signer.public();
    assert_eq!(&r[..8], b"SUCCESS\0");
    pk.verify(
        b"SUCCESS",
        &cmtp_crypto::Signature::from_bytes(&r[8..72]).unwrap(),
    )
    .unwrap();
    assert_eq!(&r[77..109], pk.as_bytes());
    assert_eq!(&r[175..183], b"SUCCESS\0");
    assert_eq!(shared.metrics.commands_of(CommandKind::Noop), 2);
    assert_eq!(shared.metrics.connections_open.load(Relaxed), 1);

    // Shutdown closes the idle connection and `run` returns.
    stop_tx.send(()).unwrap();
    let n = tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf))
        .await
        .expect("connection closed by shutdown")
        .unwrap();
    assert_eq!(n, 0);
    tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("run returns")
        .unwrap();
    assert_eq!(shared.metrics.connections_open.load(Relaxed), 0);
}
