//! Pinned keys of remote servers: real files, real fsync, several handles and threads.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use cmtp_store::{EmbeddedStore, FsPeers, Options, PeerKey, PeerStore, StoreError};

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn pin_offer_and_repin() {
    let dir = tempfile::tempdir().unwrap();
    let peers = FsPeers::open(dir.path()).unwrap();
    assert_eq!(peers.peer_key("example.net").unwrap(), None);
    assert!(peers.list_peer_keys().unwrap().is_empty());

    let before = now();
    peers.pin_peer_key("example.net", &[1; 32]).unwrap();
    let p = peers.peer_key("example.net").unwrap().unwrap();
    assert_eq!(
        (p.domain.as_str(), p.key, p.offered),
        ("example.net", [1; 32], None)
    );
    assert!(
        p.pinned_at >= before && p.pinned_at <= now(),
        "{}",
        p.pinned_at
    );
    // Domains are compared in lower case.
    assert_eq!(peers.peer_key("Example.NET").unwrap(), Some(p.clone()));

    // A refused key is recorded beside the pinned one, which stays.
    peers.offer_peer_key("example.net", &[2; 32]).unwrap();
    peers.offer_peer_key("EXAMPLE.net", &[3; 32]).unwrap();
    let q = peers.peer_key("example.net").unwrap().unwrap();
    assert_eq!((q.key, q.pinned_at), (p.key, p.pinned_at));
    let (offered, at) = q.offered.unwrap();
    assert_eq!(offered, [3; 32], "the newest offer");
    assert!(at >= before && at <= now());

    // Trusting the new key replaces the pin and clears the offer.
    peers.pin_peer_key("example.net", &[3; 32]).unwrap();
    let r = peers.peer_key("example.net").unwrap().unwrap();
    assert_eq!((r.key, r.offered), ([3; 32], None));
    assert!(r.pinned_at >= p.pinned_at);
    assert!(!dir.path().join("peers/example.net/offered").exists());
}

#[test]
fn list_is_sorted_and_files_are_private_and_durable() {
    let dir = tempfile::tempdir().unwrap();
    {
        let peers = FsPeers::open(dir.path()).unwrap();
        for (d, k) in [("b.example", 2u8), ("C.example", 3), ("a.example", 1)] {
            peers.pin_peer_key(d, &[k; 32]).unwrap();
        }
        peers.offer_peer_key("b.example", &[9; 32]).unwrap();
        // An offer for a domain with no pin is kept but shows no pin.
        peers.offer_peer_key("d.example", &[4; 32]).unwrap();
        assert_eq!(peers.peer_key("d.example").unwrap(), None);
    }
    // A new handle (as after a restart) reads the same.
    let peers = FsPeers::open(dir.path()).unwrap();
    let list = peers.list_peer_keys().unwrap();
    let names: Vec<_> = list.iter().map(|p| p.domain.as_str()).collect();
    assert_eq!(names, ["a.example", "b.example", "c.example"]);
    assert_eq!(list[0].key, [1; 32]);
    assert_eq!(list[1].offered.unwrap().0, [9; 32]);
    assert_eq!(list[2].key, [3; 32]);

    // The on-disk format: 32 raw bytes, ASCII seconds, 32 bytes + u64 LE seconds.
    let b = dir.path().join("peers/b.example");
    assert_eq!(fs::read(b.join("key")).unwrap(), [2; 32]);
    let pinned: u64 = String::from_utf8(fs::read(b.join("pinned")).unwrap())
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(pinned, list[1].pinned_at);
    let offered = fs::read(b.join("offered")).unwrap();
    assert_eq!(offered.len(), 40);
    assert_eq!(
        u64::from_le_bytes(offered[32..].try_into().unwrap()),
        list[1].offered.unwrap().1
    );
    let mode = |p: &std::path::Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir.path().join("peers")), 0o700);
    assert_eq!(mode(&b), 0o700);
    for f in ["key", "pinned", "offered"] {
        assert_eq!(mode(&b.join(f)), 0o600, "{f}");
    }
    // No temporaries left behind.
    let mut names: Vec<_> = fs::read_dir(&b)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["key", "offered", "pinned"]);
}

#[test]
fn bad_domains_and_bad_files_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let peers = FsPeers::open(dir.path()).unwrap();
    for bad in ["", ".", "..", "a/b", "x\0y"] {
        assert!(
            matches!(peers.peer_key(bad), Err(StoreError::InvalidName(_))),
            "{bad:?}"
        );
        assert!(matches!(
            peers.pin_peer_key(bad, &[0; 32]),
            Err(StoreError::InvalidName(_))
        ));
        assert!(matches!(
            peers.offer_peer_key(bad, &[0; 32]),
            Err(StoreError::InvalidName(_))
        ));
    }
    peers.pin_peer_key("example.net", &[1; 32]).unwrap();
    let d = dir.path().join("peers/example.net");
    fs::write(d.join("offered"), [0u8; 39]).unwrap();
    assert!(matches!(
        peers.peer_key("example.net"),
        Err(StoreError::Corrupt(_))
    ));
    fs::remove_file(d.join("offered")).unwrap();
    // A huge file is refused without being read whole.
    fs::write(d.join("key"), vec![0u8; 1 << 20]).unwrap();
    assert!(matches!(
        peers.peer_key("example.net"),
        Err(StoreError::Corrupt(_))
    ));
    assert!(matches!(
        peers.list_peer_keys(),
        Err(StoreError::Corrupt(_))
    ));
}

/// The admin CLI's handle (`open_read_only`, no cache) pins a key, and the running
/// server's store sees it on its next lookup, and the reverse.
#[test]
fn the_admin_cli_and_the_server_see_each_other_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = EmbeddedStore::open(dir.path(), Options::default()).unwrap();
    let admin = EmbeddedStore::open_read_only(dir.path()).unwrap();
    server.pin_peer_key("example.net", &[1; 32]).unwrap();
    server.offer_peer_key("example.net", &[2; 32]).unwrap();
    let seen = admin.list_peer_keys().unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].offered.unwrap().0, [2; 32]);
    admin.pin_peer_key("example.net", &[2; 32]).unwrap();
    let p = server.peer_key("example.net").unwrap().unwrap();
    assert_eq!((p.key, p.offered), ([2; 32], None));
}

/// A reader racing a writer that re-pins and offers never sees a missing, partial or
/// foreign key: each file is replaced by a rename.
#[test]
fn a_concurrent_reader_sees_whole_keys() {
    let dir = tempfile::tempdir().unwrap();
    let peers = Arc::new(FsPeers::open(dir.path()).unwrap());
    peers.pin_peer_key("example.net", &[0xaa; 32]).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (peers, done) = (peers.clone(), done.clone());
        std::thread::spawn(move || {
            let mut reads = 0u64;
            let mut keys = [0u64; 2];
            loop {
                // Checked before the read: one more read after the writer finished.
                let last = done.load(Ordering::Acquire);
                let PeerKey { key, offered, .. } = peers
                    .peer_key("example.net")
                    .unwrap()
                    .expect("a pinned key never disappears");
                if key == [0xaa; 32] {
                    keys[0] += 1;
                } else if key == [0xbb; 32] {
                    keys[1] += 1;
                } else {
                    panic!("foreign key {key:?}");
                }
                if let Some((k, _)) = offered {
                    assert_eq!(k, [0xcc; 32]);
                }
                assert_eq!(peers.list_peer_keys().unwrap().len(), 1);
                reads += 1;
                if last {
                    return (reads, keys);
                }
            }
        })
    };
    for i in 0..200 {
        let k = if i % 2 == 0 { [0xbb; 32] } else { [0xaa; 32] };
        peers.pin_peer_key("example.net", &k).unwrap();
        peers.offer_peer_key("example.net", &[0xcc; 32]).unwrap();
    }
    done.store(true, Ordering::Release);
    let (reads, keys) = reader.join().unwrap();
    assert!(reads >= 1);
    assert_eq!(keys[0] + keys[1], reads);
    // The writer's last pin was 0xaa.
    let p = peers.peer_key("example.net").unwrap().unwrap();
    assert_eq!(p.key, [0xaa; 32]);
    assert_eq!(p.offered.unwrap().0, [0xcc; 32]);
}
