//! `StoreImport` (the target side of `cmtpd store copy`): messages keep the id and
//! receive time they are given, in one chunk or many; later commits go on after the
//! largest id imported or reserved; a taken id, a wrong size and a non-empty store are
//! refused; peer records and relay ids keep their times.

use cmtp_store::{
    Delivery, MailStore, MessageInfo, PeerKey, PeerStore, StoreError, StoreImport, UserRecord,
    UserStore,
};
use cmtp_store_pg::{CHUNK, PgOptions, PgStore, migrate};
use cmtp_testkit::store_suite::{deliver, listed_ids, meta, read_all};
use cmtp_testkit::{PgCluster, noise};

fn store(name: &str) -> PgStore {
    let url = PgCluster::shared().database(name);
    migrate(&url).unwrap();
    PgStore::connect(&url, PgOptions::default()).unwrap()
}

async fn import(
    s: &PgStore,
    mailbox: &str,
    id: u64,
    received: u64,
    data: &[u8],
) -> Result<(), StoreError> {
    let mut d = s.begin();
    for piece in data.chunks(100_000) {
        d.write(piece).await?;
    }
    let mut m = meta(mailbox);
    m.note = format!("note of {id}").into_bytes();
    s.import(
        d,
        MessageInfo {
            id,
            received,
            size: data.len() as u64,
            meta: m,
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_messages_keep_their_ids_and_times() {
    let s = store("import ids");
    assert!(s.is_empty().unwrap());
    let big = noise(3 * CHUNK + 17, 4);
    import(&s, "bob", 3, 1_000, b"small one").await.unwrap();
    import(&s, "bob", 7, 2_000, &big).await.unwrap();
    import(&s, "", 2, 3_000, b"").await.unwrap();
    // Ids of deleted messages in the source: reserved, never given again.
    s.reserve_ids("bob", 9).await.unwrap();
    s.reserve_ids("carol", 4).await.unwrap();
    s.finish().await.unwrap();
    assert!(!s.is_empty().unwrap());

    let list = s.list("bob").await.unwrap();
    assert_eq!(
        list.iter()
            .map(|m| (m.id, m.received, m.size))
            .collect::<Vec<_>>(),
        [(3, 1_000, 9), (7, 2_000, big.len() as u64)]
    );
    assert_eq!(list[1].meta.note, b"note of 7");
    assert_eq!(read_all(&s, "bob", 7).await.unwrap(), big);
    assert_eq!(read_all(&s, "", 2).await.unwrap(), b"");
    assert_eq!(s.mailbox_usage("bob").unwrap(), (2, 9 + big.len() as u64));
    // Ordinary commits go on after the reserved ids.
    assert_eq!(deliver(&s, "bob", b"next", 4).await, 10);
    assert_eq!(deliver(&s, "carol", b"next", 4).await, 5);
    assert_eq!(deliver(&s, "", b"next", 4).await, 3);

    // A taken id, and a size that is not what was written, are refused, and the
    // listing is unchanged.
    assert!(matches!(
        import(&s, "bob", 7, 1, &big).await,
        Err(StoreError::AlreadyExists)
    ));
    let mut d = s.begin();
    d.write(b"four").await.unwrap();
    let wrong = MessageInfo {
        id: 20,
        received: 1,
        size: 5,
        meta: meta("bob"),
    };
    assert!(matches!(
        s.import(d, wrong).await,
        Err(StoreError::InvalidMeta(_))
    ));
    assert_eq!(listed_ids(&s, "bob").await, [3, 7, 10]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_relay_ids_and_users_count_as_content() {
    let s = store("import peers");
    let now = cmtp_testkit::now();
    s.import_relay_ids(vec![([1; 16], now - 60), ([2; 16], 1)])
        .await
        .unwrap();
    assert!(s.seen_relay_id(&[1; 16]));
    assert!(!s.seen_relay_id(&[2; 16]), "outside the window");
    let peer = PeerKey {
        domain: "b.example".into(),
        key: [3; 32],
        pinned_at: 1_234,
        offered: Some(([4; 32], 1_300)),
    };
    s.import_peer("B.example", Some(&peer), true).unwrap();
    assert!(!s.is_empty().unwrap(), "a peer record is content");
    assert_eq!(s.peer_key("b.example").unwrap(), Some(peer));
    assert!(s.peer_tls("b.example").unwrap());
    s.import_peer("tls.example", None, true).unwrap();
    assert!(s.peer_tls("tls.example").unwrap());
    assert_eq!(s.peer_key("tls.example").unwrap(), None);

    let t = store("import users");
    t.add(&UserRecord {
        name: "ann".into(),
        public_key: [9; 32],
        xzibit: vec![1, 2, 3],
        created: 5,
    })
    .unwrap();
    assert!(!t.is_empty().unwrap(), "a user is content");
}
