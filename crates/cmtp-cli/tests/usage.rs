//! Messages and exit codes of the `cmtp` binary for mistakes a person makes: no server
//! needed for most.

use cmtp_testkit::*;

const USAGE: i32 = 2;
const OTHER: i32 = 1;
const UNREACHABLE: i32 = 3;

#[test]
fn a_zero_or_bad_timeout_is_a_usage_error() {
    let t = tempfile::tempdir().unwrap();
    let (home, p) = (t.path(), t.path().join("p"));
    for (flag, value) in [
        ("--timeout", "0"),
        ("--timeout", "-1"),
        ("--connect-timeout", "0"),
        ("--timeout", "86401"),
        ("--timeout", "soon"),
    ] {
        let o = cmtp(home, &p, &[&format!("{flag}={value}"), "inbox"], b"");
        assert_eq!(o.code, USAGE, "{flag} {value}: {o:?}");
        assert!(o.stderr.contains(flag), "{o:?}");
        assert!(o.stderr.contains(value), "{o:?}");
        // The message states the rule correctly (0 is not allowed).
        if value != "soon" {
            assert!(o.stderr.contains("more than 0"), "{o:?}");
            assert!(!o.stderr.contains("between 0"), "{o:?}");
        }
    }
    // From the environment too.
    let mut c = cmtp_cmd(home, &p);
    c.env("CMTP_TIMEOUT", "0").arg("inbox");
    let o = run(c, b"");
    assert_eq!(o.code, USAGE, "{o:?}");
    // A fraction of a second is fine (then: no profile, exit 13).
    let o = cmtp(home, &p, &["--timeout", "0.5", "inbox"], b"");
    assert_eq!(o.code, 13, "{o:?}");
}

#[test]
fn an_attachment_error_names_the_path_once() {
    let t = tempfile::tempdir().unwrap();
    let (home, p) = (t.path(), t.path().join("p"));
    let missing = home.join("no-such-file.pdf");
    let m = missing.to_str().unwrap();
    let o = cmtp(
        home,
        &p,
        &["send", "--to", "bob@localhost", "--attach", m],
        b"hi",
    );
    assert_eq!(o.code, OTHER, "{o:?}");
    assert_eq!(o.stderr.matches(m).count(), 1, "{o:?}");
    assert!(o.stderr.contains("No such file"), "{o:?}");
    // A folder is not a file either; still named once.
    let d = home.to_str().unwrap();
    let o = cmtp(
        home,
        &p,
        &["send", "--to", "bob@localhost", "--attach", d],
        b"hi",
    );
    assert_eq!(o.code, OTHER, "{o:?}");
    assert_eq!(o.stderr.matches(d).count(), 1, "{o:?}");
}

/// DNS failures read as words: no `Query {`, `Name(`, `NoRecordsFound {` debug dumps.
#[test]
fn dns_errors_are_words() {
    let t = tempfile::tempdir().unwrap();
    let (home, p) = (t.path(), t.path().join("p"));
    let debugish = ["{", "}", "Name(", "Query", "NoRecordsFound", "Some("];
    // A DNS server that knows nothing: NXDOMAIN for the domain.
    let dns = cmtp_testkit::dns::start(vec![]);
    let o = cmtp(
        home,
        &p,
        &[
            "--dns",
            &dns.addr.to_string(),
            "login",
            "alice@nowhere.test",
            "--password-stdin",
        ],
        b"pw\n",
    );
    assert_eq!(o.code, UNREACHABLE, "{o:?}");
    assert!(o.stderr.contains("nowhere.test"), "{o:?}");
    for d in debugish {
        assert!(!o.stderr.contains(d), "{d:?} in {o:?}");
    }
    // A DNS server that does not answer.
    let silent = cmtp_testkit::dns::silent();
    let o = cmtp(
        home,
        &p,
        &[
            "--dns",
            &silent.addr.to_string(),
            "--connect-timeout",
            "1",
            "login",
            "alice@nowhere.test",
            "--password-stdin",
        ],
        b"pw\n",
    );
    assert_eq!(o.code, UNREACHABLE, "{o:?}");
    for d in debugish {
        assert!(!o.stderr.contains(d), "{d:?} in {o:?}");
    }
    assert!(!p.exists());
}
