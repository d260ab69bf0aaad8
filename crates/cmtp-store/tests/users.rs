//! User store tests on real directories.

use std::fs;

use cmtp_store::{EmbeddedStore, FsUsers, StoreError, UserRecord, UserStore, ensure_path_safe};

fn user(name: &str, k: u8) -> UserRecord {
    UserRecord {
        name: name.into(),
        public_key: [k; 32],
        xzibit: vec![k, 1, 2, 3],
        created: 1_700_000_000 + u64::from(k),
    }
}

#[test]
fn add_get_list_remove() {
    let dir = tempfile::tempdir().unwrap();
    let users = FsUsers::open(dir.path()).unwrap();
    assert!(users.get("bob").unwrap().is_none());
    assert!(users.public_key("bob").unwrap().is_none());
    assert!(users.xzibit("bob").unwrap().is_none());
    users.add(&user("bob", 7)).unwrap();
    users.add(&user("alice", 9)).unwrap();
    assert!(matches!(
        users.add(&user("bob", 8)),
        Err(StoreError::AlreadyExists)
    ));
    assert_eq!(users.get("bob").unwrap().unwrap(), user("bob", 7));
    assert_eq!(users.public_key("bob").unwrap().unwrap(), [7; 32]);
    assert_eq!(users.xzibit("alice").unwrap().unwrap(), vec![9, 1, 2, 3]);
    // The files are the 2016 layout: raw 32-byte key, raw xzibit, decimal time.
    let d = dir.path().join("users/bob");
    assert_eq!(fs::read(d.join("public.key")).unwrap(), vec![7; 32]);
    assert_eq!(fs::read(d.join("created")).unwrap(), b"1700000007");
    let names: Vec<String> = users
        .list_users()
        .unwrap()
        .into_iter()
        .map(|u| u.name)
        .collect();
    assert_eq!(names, ["alice", "bob"]);
    assert!(users.remove("bob").unwrap());
    assert!(!users.remove("bob").unwrap());
    assert!(users.get("bob").unwrap().is_none());
    assert_eq!(users.list_users().unwrap(), vec![user("alice", 9)]);
    // Nothing left in tmp after adds and removes.
    assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    // Debug never shows the xzibit.
    assert!(!format!("{:?}", user("x", 0x5a)).contains("90, 1, 2, 3"));
}

#[test]
fn another_process_view_sees_changes_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = EmbeddedStore::open(dir.path(), Default::default()).unwrap();
    let cli = FsUsers::open(dir.path()).unwrap();
    cli.add(&user("carol", 3)).unwrap();
    assert_eq!(server.public_key("carol").unwrap(), Some([3; 32]));
    // The admin tool's OPAQUE login is the server's at once, and the other way round.
    cli.set_opaque_login("carol", b"rec", None).unwrap();
    assert_eq!(server.opaque_login("carol").unwrap().unwrap(), b"rec");
    assert!(
        server
            .set_opaque_login("carol", b"rec-2", Some(b"x"))
            .unwrap()
    );
    assert_eq!(cli.opaque_login("carol").unwrap().unwrap(), b"rec-2");
    cli.remove("carol").unwrap();
    assert_eq!(server.public_key("carol").unwrap(), None);
}

#[test]
fn imported_user_without_created_and_bad_key() {
    let dir = tempfile::tempdir().unwrap();
    let users = FsUsers::open(dir.path()).unwrap();
    let d = dir.path().join("users/old");
    fs::create_dir_all(&d).unwrap();
    fs::write(d.join("public.key"), [1u8; 32]).unwrap();
    fs::write(d.join("xzibit"), b"xz").unwrap();
    assert_eq!(users.get("old").unwrap().unwrap().created, 0);
    fs::write(d.join("public.key"), [1u8; 31]).unwrap();
    assert!(matches!(
        users.public_key("old"),
        Err(StoreError::Corrupt(_))
    ));
    assert!(matches!(users.get("old"), Err(StoreError::Corrupt(_))));
}

#[test]
fn unsafe_names_never_reach_a_path() {
    let dir = tempfile::tempdir().unwrap();
    let users = FsUsers::open(dir.path()).unwrap();
    let long = "a".repeat(256);
    for bad in [
        "../x",
        "a/b",
        ".",
        "..",
        "\u{0}",
        "",
        "/etc",
        "a\u{0}",
        long.as_str(),
    ] {
        assert!(ensure_path_safe(bad).is_err(), "{bad:?}");
        assert!(
            matches!(users.add(&user(bad, 1)), Err(StoreError::InvalidName(_))),
            "{bad:?}"
        );
        assert!(matches!(users.get(bad), Err(StoreError::InvalidName(_))));
        assert!(matches!(
            users.public_key(bad),
            Err(StoreError::InvalidName(_))
        ));
        assert!(matches!(users.xzibit(bad), Err(StoreError::InvalidName(_))));
        assert!(matches!(users.remove(bad), Err(StoreError::InvalidName(_))));
    }
    // The protocol refuses these (cmtp_proto::validate_name), but each is one ordinary
    // path component: path safety is all the store checks.
    for good in [
        "bob",
        "a.b",
        "x-y_z",
        "ünïcode",
        "a\\b",
        "a\nb",
        "\u{7f}",
        "...",
        &"a".repeat(255),
    ] {
        ensure_path_safe(good).unwrap();
    }
    // Only the `users` and `tmp` directories exist: nothing escaped.
    let mut top: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    top.sort();
    assert_eq!(top, ["tmp", "users"]);
    assert_eq!(fs::read_dir(dir.path().join("users")).unwrap().count(), 0);
}

proptest::proptest! {
    /// Any accepted name is one plain path component.
    #[test]
    fn accepted_names_are_single_components(name in "\\PC{0,40}|[./\\\\a]{0,5}") {
        if ensure_path_safe(&name).is_ok() {
            let p = std::path::Path::new(&name);
            let comps: Vec<_> = p.components().collect();
            proptest::prop_assert_eq!(comps.len(), 1);
            proptest::prop_assert!(matches!(comps[0], std::path::Component::Normal(_)));
        }
    }
}

#[test]
fn opaque_login_is_set_with_the_xzibit_in_one_step() {
    let dir = tempfile::tempdir().unwrap();
    let users = FsUsers::open(dir.path()).unwrap();
    assert_eq!(users.opaque_login("bob").unwrap(), None);
    assert!(
        !users.set_opaque_login("bob", b"rec", None).unwrap(),
        "no such user"
    );
    users.add(&user("bob", 7)).unwrap();
    assert_eq!(users.opaque_login("bob").unwrap(), None);

    // The record alone: the xzibit and the rest stay.
    assert!(users.set_opaque_login("bob", b"rec-1", None).unwrap());
    assert_eq!(users.opaque_login("bob").unwrap().unwrap(), b"rec-1");
    assert_eq!(users.get("bob").unwrap().unwrap(), user("bob", 7));

    // Record and xzibit together (a password change).
    assert!(
        users
            .set_opaque_login("bob", b"rec-2", Some(b"new xzibit"))
            .unwrap()
    );
    assert_eq!(users.opaque_login("bob").unwrap().unwrap(), b"rec-2");
    let u = users.get("bob").unwrap().unwrap();
    assert_eq!(u.xzibit, b"new xzibit");
    assert_eq!((u.public_key, u.created), ([7; 32], 1_700_000_007));
    // Private files, and nothing left behind in tmp/.
    use std::os::unix::fs::PermissionsExt;
    let m = fs::metadata(dir.path().join("users/bob/opaque")).unwrap();
    assert_eq!(m.permissions().mode() & 0o777, 0o600);
    assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    assert!(users.remove("bob").unwrap());
    assert_eq!(users.opaque_login("bob").unwrap(), None);
}
