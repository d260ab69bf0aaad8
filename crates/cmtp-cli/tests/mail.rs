//! Mail handling with the real binaries: read/unread state, `inbox --unread`,
//! `reply` (quote, "Re: " once, Reply-To, --all) and `forward` (header block,
//! attachments carried over).

use cmtp_testkit::*;
use std::path::PathBuf;

struct World {
    _t: tempfile::TempDir,
    home: PathBuf,
    _srv: TestServer,
    files: PathBuf,
}

impl World {
    /// alice, bob, carol and dave on one server, each logged in with --remember into
    /// `p-NAME`.
    fn new() -> World {
        let t = tempfile::tempdir().unwrap();
        let home = t.path().to_path_buf();
        let data = home.join("data");
        for u in ["alice", "bob", "carol", "dave"] {
            seed_user(&data, u, &format!("{u} pw"));
        }
        let srv = TestServer::start_in(&data);
        for u in ["alice", "bob", "carol", "dave"] {
            let args = [
                "login",
                &format!("{u}@localhost"),
                "--server",
                &srv.server_arg(),
                "--password-stdin",
                "--remember",
            ];
            let pw = format!("{u} pw\n");
            cmtp(&home, &home.join(format!("p-{u}")), &args, pw.as_bytes()).ok();
        }
        let files = home.join("files");
        std::fs::create_dir_all(&files).unwrap();
        World {
            _t: t,
            home,
            _srv: srv,
            files,
        }
    }

    fn profile(&self, who: &str) -> PathBuf {
        self.home.join(format!("p-{who}"))
    }

    fn run(&self, who: &str, args: &[&str], stdin: &[u8]) -> Out {
        cmtp(&self.home, &self.profile(who), args, stdin)
    }

    fn inbox(&self, who: &str, extra: &[&str]) -> Vec<serde_json::Value> {
        let mut args = vec!["inbox", "--json"];
        args.extend_from_slice(extra);
        self.run(who, &args, b"").json().as_array().unwrap().clone()
    }

    /// The newest message of `who`, read with --json (which marks it read).
    fn newest(&self, who: &str) -> serde_json::Value {
        let items = self.inbox(who, &[]);
        let id = items.last().expect("a message")["id"].to_string();
        self.run(who, &["read", &id, "--json"], b"").json()
    }
}

fn id_of(v: &serde_json::Value) -> String {
    v["id"].as_u64().unwrap().to_string()
}

fn ids(items: &[serde_json::Value]) -> Vec<u64> {
    items.iter().map(|i| i["id"].as_u64().unwrap()).collect()
}

#[test]
fn read_state_is_kept_in_the_profile() {
    let w = World::new();
    for s in ["one", "two"] {
        w.run("alice", &["send", "--to", "bob@localhost", "-s", s], b"hi")
            .ok();
    }
    let items = w.inbox("bob", &[]);
    assert_eq!(items.len(), 2);
    assert!(items.iter().all(|i| i["unread"] == true), "{items:?}");
    let (first, second) = (id_of(&items[0]), id_of(&items[1]));
    // Text: an N beside each unread message.
    let text = w.run("bob", &["inbox"], b"").ok().to_owned();
    assert_eq!(
        text.lines().filter(|l| l.starts_with("N ")).count(),
        2,
        "{text}"
    );

    w.run("bob", &["read", &first], b"").ok();
    let items = w.inbox("bob", &[]);
    assert_eq!(items[0]["unread"], false);
    assert_eq!(items[1]["unread"], true);
    assert_eq!(
        ids(&w.inbox("bob", &["--unread"])),
        vec![items[1]["id"].as_u64().unwrap()]
    );
    let text = w.run("bob", &["inbox", "--unread"], b"").ok().to_owned();
    assert!(text.contains("two") && !text.contains("one"), "{text}");
    // --keep-unread reads without marking.
    w.run("bob", &["read", &second, "--keep-unread"], b"").ok();
    assert_eq!(w.inbox("bob", &["--unread"]).len(), 1);
    w.run("bob", &["read", &second], b"").ok();
    assert!(w.inbox("bob", &["--unread"]).is_empty());
    let text = w.run("bob", &["inbox", "--unread"], b"").ok().to_owned();
    assert_eq!(text.trim(), "no messages");
    // `unread` marks it unread again; the state is a file in the profile.
    let o = w.run("bob", &["unread", &first], b"");
    assert!(o.ok().contains("marked unread"), "{o:?}");
    assert_eq!(
        ids(&w.inbox("bob", &["--unread"])),
        vec![first.parse::<u64>().unwrap()]
    );
    assert!(w.profile("bob").join("read.toml").is_file());
    // Another profile (alice) has her own state.
    w.run("bob", &["send", "--to", "alice@localhost"], b"x")
        .ok();
    assert_eq!(w.inbox("alice", &["--unread"]).len(), 1);
    // Deleting forgets the mark.
    let marks = || {
        let state = std::fs::read_to_string(w.profile("bob").join("read.toml")).unwrap();
        state
            .lines()
            .find_map(|l| l.strip_prefix("read = "))
            .unwrap_or_else(|| panic!("no read list in {state}"))
            .trim()
            .to_owned()
    };
    assert_eq!(marks(), format!("[{second}]"));
    w.run("bob", &["delete", &second], b"").ok();
    assert_eq!(marks(), "[]");
}

#[test]
fn reply_quotes_prefixes_once_and_honours_reply_to() {
    let w = World::new();
    let att = w.files.join("menu.txt");
    std::fs::write(&att, "soup\n").unwrap();
    w.run(
        "alice",
        &[
            "send",
            "--to",
            "bob@localhost",
            "--cc",
            "carol@localhost",
            "-s",
            "Plans",
            "--attach",
            att.to_str().unwrap(),
        ],
        b"Hi Bob,\n\nlunch?\n",
    )
    .ok();
    let id = id_of(&w.inbox("bob", &[])[0]);
    let sent = w
        .run("bob", &["reply", &id, "--all", "--json"], b"Sounds good.\n")
        .json();
    let to: Vec<_> = sent
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["recipient"].as_str().unwrap().to_owned(),
                r["cc"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        to,
        vec![
            ("alice@localhost".to_owned(), false),
            ("carol@localhost".to_owned(), true)
        ]
    );
    // Replying marked the original read.
    assert!(w.inbox("bob", &["--unread"]).is_empty());
    let got = w.newest("alice");
    assert_eq!(got["subject"], "Re: Plans");
    assert_eq!(got["from"], "bob@localhost");
    let text = got["text"].as_str().unwrap();
    assert!(text.starts_with("Sounds good.\n\nOn "), "{text:?}");
    assert!(
        text.ends_with(" alice@localhost wrote:\n> Hi Bob,\n>\n> lunch?\n"),
        "{text:?}"
    );
    assert_eq!(got["attachments"].as_array().unwrap().len(), 0);
    assert_eq!(w.newest("carol")["subject"], "Re: Plans");

    // Alice answers the reply: still one "Re: ", and the quote nests.
    let rid = id_of(&got);
    w.run("alice", &["reply", &rid], b"Noon then.").ok();
    let back = w.newest("bob");
    assert_eq!(back["subject"], "Re: Plans");
    assert!(
        back["text"].as_str().unwrap().contains("\n> > lunch?\n"),
        "{back}"
    );
    // Without --all, the CCs do not get it: carol still has only the first reply.
    assert_eq!(w.inbox("carol", &[]).len(), 2);

    // A Reply-To wins over the sender.
    w.run(
        "alice",
        &[
            "send",
            "--to",
            "bob@localhost",
            "--reply-to",
            "dave@localhost",
            "-s",
            "list",
        ],
        b"answer dave",
    )
    .ok();
    let lid = id_of(w.inbox("bob", &[]).last().unwrap());
    let sent = w.run("bob", &["reply", &lid, "--json"], b"ok").json();
    assert_eq!(sent[0]["recipient"], "dave@localhost");
    assert_eq!(w.newest("dave")["subject"], "Re: list");
    // No such message: the mailbox exit code, nothing sent.
    let o = w.run("bob", &["reply", "999999"], b"x");
    assert_eq!(o.code, 12, "{o:?}");
}

#[test]
fn forward_carries_the_header_block_and_attachments() {
    let w = World::new();
    let big = noise(300 * 1024 + 3, 9);
    let f1 = w.files.join("photo.bin");
    let f2 = w.files.join("notes.txt");
    std::fs::write(&f1, &big).unwrap();
    std::fs::write(&f2, "n\n").unwrap();
    w.run(
        "alice",
        &[
            "send",
            "--to",
            "bob@localhost",
            "-s",
            "Trip",
            "--attach",
            f1.to_str().unwrap(),
            "--attach",
            f2.to_str().unwrap(),
        ],
        b"Pictures attached.\n",
    )
    .ok();
    let id = id_of(&w.inbox("bob", &[])[0]);
    let sent = w
        .run(
            "bob",
            &[
                "forward",
                &id,
                "--to",
                "dave@localhost",
                "--cc",
                "carol@localhost",
                "--json",
            ],
            b"FYI\n",
        )
        .json();
    assert_eq!(sent.as_array().unwrap().len(), 2, "{sent}");
    let got = w.newest("dave");
    assert_eq!(got["subject"], "Fwd: Trip");
    let text = got["text"].as_str().unwrap();
    assert!(
        text.starts_with(
            "FYI\n\n---------- Forwarded message ----------\nFrom: alice@localhost\nDate: "
        ),
        "{text:?}"
    );
    assert!(
        text.contains("\nSubject: Trip\nTo: bob@localhost\nAttachments: photo.bin, notes.txt\n\n> Pictures attached.\n"),
        "{text:?}"
    );
    let atts = got["attachments"].as_array().unwrap();
    assert_eq!(atts.len(), 2);
    assert_eq!(
        (atts[0]["name"].as_str(), atts[0]["size"].as_u64()),
        (Some("photo.bin"), Some(big.len() as u64))
    );
    // The bytes arrive unchanged.
    let out = w.home.join("saved");
    w.run(
        "dave",
        &[
            "read",
            &id_of(&got),
            "--save-attachments",
            out.to_str().unwrap(),
        ],
        b"",
    )
    .ok();
    assert_eq!(std::fs::read(out.join("photo.bin")).unwrap(), big);
    assert_eq!(std::fs::read(out.join("notes.txt")).unwrap(), b"n\n");
    // Forwarding a forward: "Fwd: " once. Without a note, the block alone.
    let fid = id_of(&got);
    w.run("dave", &["forward", &fid, "--to", "alice@localhost"], b"")
        .ok();
    let again = w.newest("alice");
    assert_eq!(again["subject"], "Fwd: Trip");
    assert!(
        again["text"]
            .as_str()
            .unwrap()
            .starts_with("---------- Forwarded message ----------\nFrom: bob@localhost"),
        "{again}"
    );
    // --to is required: a usage error.
    let o = w.run("bob", &["forward", &id], b"");
    assert_eq!(o.code, 2, "{o:?}");
}

/// Dates are shown in the local time zone (TZ), sizes for people.
#[test]
fn dates_follow_tz_and_sizes_are_human() {
    let w = World::new();
    let f = w.files.join("blob.bin");
    std::fs::write(&f, noise(2 * 1024 * 1024, 3)).unwrap();
    w.run(
        "alice",
        &[
            "send",
            "--to",
            "bob@localhost",
            "-s",
            "zone",
            "--attach",
            f.to_str().unwrap(),
        ],
        b"t",
    )
    .ok();
    let shown = |tz: &str, args: &[&str]| {
        let mut c = cmtp_cmd(&w.home, &w.profile("bob"));
        c.env("TZ", tz).args(args);
        run(c, b"").ok().to_owned()
    };
    let inbox = shown("XST-3", &["inbox"]);
    assert!(inbox.contains(" +0300 "), "{inbox}");
    assert!(inbox.contains(" MiB "), "{inbox}");
    let id = id_of(&w.inbox("bob", &[])[0]);
    let east = shown("XST-3", &["read", &id]);
    let west = shown("YST5", &["read", &id]);
    let date = |t: &str| {
        t.lines()
            .find_map(|l| l.strip_prefix("Date:"))
            .map(|d| d.trim().to_owned())
            .unwrap_or_else(|| panic!("no Date in {t}"))
    };
    assert!(date(&east).ends_with(" +0300"), "{east}");
    assert!(date(&west).ends_with(" -0500"), "{west}");
    assert!(east.contains("Attached: blob.bin (2.00 MiB)"), "{east}");
}
