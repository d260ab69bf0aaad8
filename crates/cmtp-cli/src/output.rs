//! What `cmtp` prints. JSON shapes are stable and documented in docs/client.md.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Result;
use cmtp_client::terminal::{Layout, sanitize};
use cmtp_client::{
    InboxItem, KeyLookup, LoginInfo, MailOutcome, PinStatus, Profile, Progress, ReadMessage,
    RecipientResult,
};
use serde_json::json;

/// Formats Unix seconds in the local time zone (`TZ` honoured), with its offset:
/// `YYYY-MM-DD HH:MM:SS +hhmm`.
pub fn date(ts: u64) -> String {
    date_in(ts, &chrono::Local)
}

/// [`date`] in the zone `tz`. A time chrono cannot represent is shown as Unix seconds.
fn date_in<Tz: chrono::TimeZone>(ts: u64, tz: &Tz) -> String
where
    Tz::Offset: std::fmt::Display,
{
    match i64::try_from(ts)
        .ok()
        .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
    {
        Some(utc) => utc
            .with_timezone(tz)
            .format("%Y-%m-%d %H:%M:%S %z")
            .to_string(),
        None => format!("@{ts}"),
    }
}

/// A size for people: `17 B`, `5.00 MiB`.
pub fn size(bytes: u64) -> String {
    indicatif::HumanBytes(bytes).to_string()
}

/// How to invoke `cmtp` for the profile in use (see [`set_invocation`]).
static INVOCATION: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Records the command prefix that reaches the profile in use (`cmtp`, or `cmtp
/// --profile '/abs/dir'` and the `--compat` given), for the "run this" hints.
pub fn set_invocation(prefix: String) {
    let _ = INVOCATION.set(prefix);
}

/// `text` with each `cmtp …` command it suggests (between backquotes, or on an
/// indented line of its own) rewritten to the recorded invocation, so that pasting it
/// acts on the same profile. The library's messages cannot know the profile flag.
pub fn hint(text: &str) -> String {
    match INVOCATION.get() {
        Some(prefix) => hint_with(text, prefix),
        None => text.to_owned(),
    }
}

/// [`hint`] with the prefix given.
fn hint_with(text: &str, prefix: &str) -> String {
    if prefix == "cmtp" {
        return text.to_owned();
    }
    text.replace("`cmtp ", &format!("`{prefix} "))
        .replace("\n  cmtp ", &format!("\n  {prefix} "))
}

/// Quotes `s` for a POSIX shell when it holds anything but plain characters.
pub fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_./-:@,+=%".contains(c));
    if plain {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// Sender- or server-controlled text for the terminal, keeping line feeds and tabs
/// (message text, error messages). JSON output does not go through this: it stays
/// exact (JSON escapes controls).
pub fn term(s: &str) -> String {
    sanitize(s, Layout::Text)
}

/// Sender- or server-controlled text for a one-line field.
fn one(s: &str) -> String {
    sanitize(s, Layout::Line)
}

fn status_word(s: &PinStatus) -> &'static str {
    match s {
        PinStatus::New => "pinned now (first use)",
        PinStatus::Same => "matches the pin",
        PinStatus::Changed(_) => "CHANGED",
    }
}

fn status_json(s: &PinStatus) -> &'static str {
    match s {
        PinStatus::New => "new",
        PinStatus::Same => "pinned",
        PinStatus::Changed(_) => "changed",
    }
}

fn print_json(v: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| "null".into())
    );
}

/// `cmtp login`.
pub fn login(i: &LoginInfo, dir: &Path, json: bool) {
    if json {
        print_json(&json!({
            "address": i.address.to_string(),
            "server": i.server,
            "server_key": i.server_key.to_hex(),
            "server_fingerprint": i.server_key.fingerprint(),
            "server_key_status": status_json(&i.server_key_status),
            "public_key": i.public_key.to_hex(),
            "fingerprint": i.public_key.fingerprint(),
            "remembered": i.remembered,
            "profile": dir.display().to_string(),
        }));
        return;
    }
    println!("logged in as {} on {}", i.address, i.server);
    println!(
        "server key:  {} ({})",
        i.server_key.fingerprint(),
        status_word(&i.server_key_status)
    );
    println!("your key:    {}", i.public_key.fingerprint());
    println!(
        "profile:     {}{}",
        dir.display(),
        if i.remembered {
            " (secret key stored, mode 0600)"
        } else {
            " (no secret stored: reading mail asks for the password)"
        }
    );
}

/// `cmtp whoami`.
pub fn whoami(p: &Profile, json: bool) -> Result<()> {
    let c = p.require_config()?;
    let key = p.public_key()?;
    let server_key = p.server_key()?;
    let remembered = p.remembered_secret()?.is_some();
    if json {
        print_json(&json!({
            "address": c.address,
            "server": c.server,
            "public_key": key.to_hex(),
            "fingerprint": key.fingerprint(),
            "server_key": server_key.map(|k| k.to_hex()),
            "server_fingerprint": server_key.map(|k| k.fingerprint()),
            "remembered": remembered,
            "compat": match c.compat { cmtp_client::Compat::Cmtp1 => "cmtp1", cmtp_client::Compat::Legacy2016 => "2016" },
        }));
        return Ok(());
    }
    println!("address:     {}", c.address);
    println!("public key:  {}", key.to_hex());
    println!("fingerprint: {}", key.fingerprint());
    println!("server:      {}", c.server);
    if let Some(k) = server_key {
        println!("server key:  {}", k.fingerprint());
    }
    println!(
        "secret key:  {}",
        if remembered {
            "stored in the profile"
        } else {
            "not stored (fetched with the password when needed)"
        }
    );
    Ok(())
}

/// `cmtp server show`.
pub fn server_show(p: &Profile, json: bool) -> Result<()> {
    let c = p.require_config()?;
    let k = p.server_key()?;
    if json {
        print_json(&json!({
            "server": c.server,
            "server_key": k.map(|k| k.to_hex()),
            "server_fingerprint": k.map(|k| k.fingerprint()),
        }));
    } else {
        println!("server:      {}", c.server);
        match k {
            Some(k) => {
                println!("key:         {}", k.to_hex());
                println!("fingerprint: {}", k.fingerprint());
            }
            None => println!("key:         (not pinned)"),
        }
    }
    Ok(())
}

/// `cmtp key`.
pub fn key(l: &KeyLookup, accepted: bool, json: bool) {
    let status = match (&l.status, accepted) {
        (PinStatus::Changed(_), true) => "accepted",
        (s, _) => status_json(s),
    };
    if json {
        print_json(&json!({
            "address": l.address.to_string(),
            "key": l.key.to_hex(),
            "fingerprint": l.key.fingerprint(),
            "status": status,
            "previous_fingerprint": match &l.status { PinStatus::Changed(o) => Some(o.fingerprint()), _ => None },
        }));
        return;
    }
    println!("address:     {}", l.address);
    println!("key:         {}", l.key.to_hex());
    println!("fingerprint: {}", l.key.fingerprint());
    let word = match (&l.status, accepted) {
        (PinStatus::Changed(_), true) => "CHANGED, new key accepted and pinned",
        (PinStatus::Changed(_), false) => "CHANGED, NOT accepted (pin kept)",
        (s, _) => status_word(s),
    };
    println!("pin:         {word}");
}

/// `cmtp send`: one line per recipient.
pub fn send_results(results: &[RecipientResult], json: bool) {
    if json {
        let v: Vec<_> = results
            .iter()
            .map(|r| {
                let (status, error, code) = match &r.outcome {
                    Ok(MailOutcome::Delivered) => ("delivered", None, 0),
                    Ok(MailOutcome::Queued) => ("queued", None, 0),
                    Ok(MailOutcome::SentUnconfirmed) => ("sent-unconfirmed", None, 0),
                    Ok(MailOutcome::DeliveryFailure) => (
                        "failed",
                        Some("DELIVERYFAILURE".into()),
                        crate::exit::DELIVERY_FAILURE,
                    ),
                    Err(e) => (
                        "failed",
                        Some(hint(&e.to_string())),
                        crate::exit::for_kind(e.kind()),
                    ),
                };
                json!({
                    "recipient": r.address.to_string(),
                    "cc": r.cc,
                    "status": status,
                    "error": error,
                    "exit_code": code,
                })
            })
            .collect();
        print_json(&serde_json::Value::Array(v));
        return;
    }
    for r in results {
        let who = format!("{}{}", r.address, if r.cc { " (cc)" } else { "" });
        match &r.outcome {
            Ok(MailOutcome::Delivered) => println!("delivered  {who}"),
            Ok(MailOutcome::Queued) => println!("queued     {who} (for relay to its domain)"),
            Ok(MailOutcome::SentUnconfirmed) => {
                println!("sent       {who} (the 2016 server does not confirm delivery)")
            }
            Ok(MailOutcome::DeliveryFailure) => println!("FAILED     {who}: DELIVERYFAILURE"),
            Err(e) => println!("FAILED     {who}: {}", term(&hint(&e.to_string()))),
        }
    }
}

/// `cmtp inbox`: `read` holds the ids marked read (JSON `unread`, and `N` in the first
/// column of the text for a message not read yet, as mutt shows it).
pub fn inbox(items: &[InboxItem], read: &BTreeSet<u64>, json: bool) {
    if json {
        let v: Vec<_> = items
            .iter()
            .map(|i| {
                let mut v = serde_json::to_value(i).unwrap_or_default();
                if let Some(o) = v.as_object_mut() {
                    o.insert("unread".into(), (!read.contains(&i.id)).into());
                }
                v
            })
            .collect();
        print_json(&serde_json::Value::Array(v));
        return;
    }
    if items.is_empty() {
        println!("no messages");
        return;
    }
    println!(
        "   {:>6}  {:<25}  {:<28}  {:>10}  SUBJECT",
        "ID", "DATE", "FROM", "SIZE"
    );
    for i in items {
        let subject = match (&i.error, i.legacy) {
            (Some(e), _) => format!("(cannot open: {})", one(e)),
            (None, true) => format!("(plain text) {}", one(&i.subject)),
            (None, false) => one(&i.subject),
        };
        let att = if i.attachments > 0 {
            format!(
                " [{} attachment{}]",
                i.attachments,
                if i.attachments == 1 { "" } else { "s" }
            )
        } else {
            String::new()
        };
        println!(
            "{}  {:>6}  {:<25}  {:<28}  {:>10}  {subject}{att}",
            if read.contains(&i.id) { " " } else { "N" },
            i.id,
            date(i.timestamp),
            one(&i.from),
            size(i.size)
        );
    }
}

/// Where one attachment went: the path written, or why it could not be saved (the
/// message names the path tried, once).
pub type Saved = std::result::Result<PathBuf, String>;

/// Saves the attachments of `m` into `dir` (created if needed) under safe names
/// ([`cmtp_client::ReceivedAttachment::safe_name`]), never overwriting a file (a taken
/// name gets a numbered suffix). One outcome per attachment, in order: a failure
/// does not stop the others.
pub fn save_attachments(m: &ReadMessage, dir: &Path) -> Vec<Saved> {
    if let Err(e) = std::fs::create_dir_all(dir) {
        let why = format!("cannot create the folder {}: {e}", dir.display());
        return m.attachments.iter().map(|_| Err(why.clone())).collect();
    }
    m.attachments
        .iter()
        .enumerate()
        .map(|(i, a)| save_one(a, i, dir))
        .collect()
}

/// Writes one attachment under the first free numbered variant of its safe name.
fn save_one(a: &cmtp_client::ReceivedAttachment, index: usize, dir: &Path) -> Saved {
    let mut n = 0;
    let (path, mut f) = loop {
        let candidate = dir.join(a.safe_name_numbered(index, n));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&candidate)
        {
            Ok(f) => break (candidate, f),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 1000 => n += 1,
            Err(e) => return Err(format!("cannot create {}: {e}", candidate.display())),
        }
    };
    if let Err(e) = f.write_all(&a.data).and_then(|()| f.sync_all()) {
        // A partial file would look like the attachment: remove it.
        drop(f);
        let _ = std::fs::remove_file(&path);
        return Err(format!("cannot write {}: {e}", path.display()));
    }
    Ok(path)
}

/// `cmtp read`. `saved` is empty without `--save-attachments`.
pub fn read(m: &ReadMessage, saved: &[Saved], json: bool) {
    if json {
        let atts: Vec<_> = m
            .attachments
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let s = saved.get(i);
                json!({
                    "name": a.name,
                    "size": a.data.len(),
                    "saved_as": s.and_then(|s| s.as_ref().ok()).map(|p| p.display().to_string()),
                    "save_error": s.and_then(|s| s.as_ref().err()),
                })
            })
            .collect();
        print_json(&json!({
            "id": m.id,
            "from": m.from,
            "to": m.to,
            "subject": m.subject,
            "reply_to": m.reply_to,
            "cc": m.cc,
            "timestamp": m.timestamp,
            "legacy": m.legacy,
            "log": m.log,
            "text": m.text,
            "attachments": atts,
        }));
        return;
    }
    println!("From:     {}", one(&m.from));
    println!("To:       {}", one(&m.to));
    if !m.cc.is_empty() {
        println!("Cc:       {}", one(&m.cc.join(", ")));
    }
    if !m.reply_to.is_empty() {
        println!("Reply-To: {}", one(&m.reply_to));
    }
    println!("Subject:  {}", one(&m.subject));
    if m.legacy {
        println!("Date:     (not recorded: plain-text message from a 2016 client)");
    } else {
        println!("Date:     {}", date(m.timestamp));
    }
    for (i, a) in m.attachments.iter().enumerate() {
        match saved.get(i) {
            Some(Ok(p)) => println!(
                "Attached: {} ({}) saved as {}",
                one(&a.name),
                size(a.data.len() as u64),
                one(&p.display().to_string())
            ),
            Some(Err(why)) => println!(
                "Attached: {} ({}) NOT SAVED: {}",
                one(&a.name),
                size(a.data.len() as u64),
                one(why)
            ),
            None => println!("Attached: {} ({})", one(&a.name), size(a.data.len() as u64)),
        }
    }
    println!();
    let text = term(&m.text);
    print!("{text}");
    if !text.ends_with('\n') {
        println!();
    }
}

/// An indicatif progress bar for uploads; hidden unless stderr is a terminal (and
/// not `--json`), and only drawn for uploads over 1 MiB.
pub struct Bar {
    enabled: bool,
    bar: Option<indicatif::ProgressBar>,
}

impl Bar {
    /// A bar that draws only when `enabled`.
    pub fn new(enabled: bool) -> Bar {
        Bar { enabled, bar: None }
    }
}

impl Progress for Bar {
    fn set_total(&mut self, total: u64) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        if self.enabled && total > 1024 * 1024 {
            let b = indicatif::ProgressBar::new(total);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{spinner} {bytes}/{total_bytes} [{bar:30}] {bytes_per_sec} {eta}",
            ) {
                b.set_style(style.progress_chars("=> "));
            }
            self.bar = Some(b);
        }
    }

    fn advance(&mut self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }

    fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{hint_with, one, shell_quote, term};

    #[test]
    fn hints_name_the_profile_in_use() {
        let prefix = format!("cmtp --profile {}", shell_quote("/tmp/my profile's"));
        assert_eq!(prefix, "cmtp --profile '/tmp/my profile'\\''s'");
        let text = "CHANGED\nto accept it run:\n  cmtp server trust --fingerprint 'ab cd'\n\
                    or run `cmtp login NAME@DOMAIN` first";
        assert_eq!(
            hint_with(text, &prefix),
            format!(
                "CHANGED\nto accept it run:\n  {prefix} server trust --fingerprint 'ab cd'\n\
                 or run `{prefix} login NAME@DOMAIN` first"
            )
        );
        assert_eq!(hint_with(text, "cmtp"), text);
        assert_eq!(shell_quote("/plain/dir-1"), "/plain/dir-1");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn printed_text_goes_through_the_shared_sanitizer() {
        let hostile = "a\x1b]52;c;cGF5bG9hZA==\x07b\x1b[2Jc\u{202e}d\re\nf";
        assert_eq!(one(hostile), "abc\u{fffd}d\u{fffd}e\u{fffd}f");
        assert_eq!(term(hostile), "abc\u{fffd}d\u{fffd}e\nf");
    }

    #[test]
    fn dates_in_a_zone_and_sizes() {
        use super::{date_in, size};
        let utc = chrono::Utc;
        assert_eq!(date_in(0, &utc), "1970-01-01 00:00:00 +0000");
        assert_eq!(
            date_in(951_782_400 + 3661, &utc),
            "2000-02-29 01:01:01 +0000"
        );
        let east = chrono::FixedOffset::east_opt(2 * 3600).unwrap();
        assert_eq!(date_in(1_467_676_800, &east), "2016-07-05 02:00:00 +0200");
        let west = chrono::FixedOffset::west_opt(5 * 3600 + 1800).unwrap();
        assert_eq!(date_in(1_467_676_800, &west), "2016-07-04 18:30:00 -0530");
        assert_eq!(date_in(u64::MAX, &utc), format!("@{}", u64::MAX));
        assert_eq!(size(17), "17 B");
        assert_eq!(size(5 * 1024 * 1024 + 17), "5.00 MiB");
    }
}
