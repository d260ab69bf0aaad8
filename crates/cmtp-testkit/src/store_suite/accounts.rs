//! Users and pinned peer keys ([`cmtp_store::UserStore`], [`cmtp_store::PeerStore`]).

use super::*;

fn user(name: &str, k: u8) -> UserRecord {
    UserRecord {
        name: name.to_owned(),
        public_key: [k; 32],
        xzibit: vec![k; 100 + usize::from(k)],
        created: 1_700_000_000 + u64::from(k),
    }
}

/// Users: add, get each part, duplicate refused, list sorted by bytes, remove; unsafe
/// names are typed errors; a second handle (another node, the admin CLI) sees changes
/// at once.
pub fn users<S: UserStore>(open: impl Fn() -> S) {
    let users = open();
    let other = open();
    assert!(users.get("bob").unwrap().is_none());
    assert!(users.list_users().unwrap().is_empty());
    users.add(&user("bob", 1)).unwrap();
    users.add(&user("Alice", 2)).unwrap();
    users.add(&user("carol", 3)).unwrap();
    assert!(matches!(
        users.add(&user("bob", 9)),
        Err(StoreError::AlreadyExists)
    ));
    assert_eq!(other.get("bob").unwrap().unwrap(), user("bob", 1));
    assert_eq!(other.public_key("carol").unwrap(), Some([3; 32]));
    assert_eq!(other.xzibit("Alice").unwrap(), Some(vec![2; 102]));
    assert!(other.public_key("dave").unwrap().is_none());
    assert!(other.xzibit("dave").unwrap().is_none());
    let names: Vec<String> = other
        .list_users()
        .unwrap()
        .into_iter()
        .map(|u| u.name)
        .collect();
    assert_eq!(names, ["Alice", "bob", "carol"]);
    assert!(other.remove("bob").unwrap());
    assert!(!users.remove("bob").unwrap());
    assert!(users.get("bob").unwrap().is_none());
    for bad in ["", ".", "..", "a/b", "x\0y"] {
        assert!(
            matches!(users.add(&user(bad, 1)), Err(StoreError::InvalidName(_))),
            "{bad:?}"
        );
        assert!(matches!(users.get(bad), Err(StoreError::InvalidName(_))));
        assert!(matches!(users.remove(bad), Err(StoreError::InvalidName(_))));
    }
    // OPAQUE logins (D8): none at first; set alone, then with a new xzibit (a password
    // change: both at once); none for a user that does not exist; gone with the user.
    assert!(users.opaque_login("carol").unwrap().is_none());
    assert!(!users.set_opaque_login("dave", b"rec", None).unwrap());
    assert!(users.set_opaque_login("carol", b"rec-1", None).unwrap());
    assert_eq!(
        other.opaque_login("carol").unwrap(),
        Some(b"rec-1".to_vec())
    );
    assert_eq!(other.xzibit("carol").unwrap(), Some(vec![3; 103]));
    assert!(
        users
            .set_opaque_login("carol", b"rec-2", Some(b"new xzibit"))
            .unwrap()
    );
    assert_eq!(
        other.opaque_login("carol").unwrap(),
        Some(b"rec-2".to_vec())
    );
    assert_eq!(other.xzibit("carol").unwrap(), Some(b"new xzibit".to_vec()));
    assert_eq!(other.public_key("carol").unwrap(), Some([3; 32]));
    assert!(other.remove("carol").unwrap());
    assert!(users.opaque_login("carol").unwrap().is_none());
}

/// Peer keys: pin, offer (kept beside the pin), re-pin clears the offer; domains are
/// compared in ASCII lower case; list sorted; bad domains are typed errors; a second
/// handle sees changes at once.
pub fn peers<S: PeerStore>(open: impl Fn() -> S) {
    let p = open();
    let other = open();
    assert!(p.peer_key("example.net").unwrap().is_none());
    p.pin_peer_key("Example.NET", &[1; 32]).unwrap();
    let k = other.peer_key("example.net").unwrap().unwrap();
    assert_eq!(
        (k.domain.as_str(), k.key, k.offered),
        ("example.net", [1; 32], None)
    );
    assert!(k.pinned_at > 1_600_000_000);
    p.offer_peer_key("example.net", &[2; 32]).unwrap();
    let k = other.peer_key("EXAMPLE.net").unwrap().unwrap();
    assert_eq!(k.key, [1; 32]);
    assert_eq!(k.offered.map(|o| o.0), Some([2; 32]));
    p.pin_peer_key("example.net", &[2; 32]).unwrap();
    let k = other.peer_key("example.net").unwrap().unwrap();
    assert_eq!((k.key, k.offered), ([2; 32], None));
    // An offer without a pin is not a pin.
    p.offer_peer_key("unpinned.example", &[3; 32]).unwrap();
    assert!(p.peer_key("unpinned.example").unwrap().is_none());
    p.pin_peer_key("b.example", &[4; 32]).unwrap();
    p.pin_peer_key("a.example", &[5; 32]).unwrap();
    let domains: Vec<String> = other
        .list_peer_keys()
        .unwrap()
        .into_iter()
        .map(|k| k.domain)
        .collect();
    assert_eq!(domains, ["a.example", "b.example", "example.net"]);
    // TLS seen (D7): not at first; recorded (domain case-folded), seen by another handle,
    // kept across a re-pin; a domain with only the TLS mark has no pin.
    assert!(!p.peer_tls("example.net").unwrap());
    p.set_peer_tls("EXAMPLE.net").unwrap();
    assert!(other.peer_tls("example.net").unwrap());
    p.pin_peer_key("example.net", &[6; 32]).unwrap();
    assert!(other.peer_tls("example.net").unwrap());
    p.set_peer_tls("tls-only.example").unwrap();
    assert!(other.peer_tls("tls-only.example").unwrap());
    assert!(other.peer_key("tls-only.example").unwrap().is_none());
    assert!(!other.peer_tls("a.example").unwrap());
    for bad in ["", "..", "a/b"] {
        assert!(
            matches!(p.peer_key(bad), Err(StoreError::InvalidName(_))),
            "{bad:?}"
        );
        assert!(matches!(
            p.pin_peer_key(bad, &[1; 32]),
            Err(StoreError::InvalidName(_))
        ));
    }
}
