//! `cmtp reply` and `cmtp forward`: a new draft made from a message read.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use cmtp_client::{Address, Attachment, ClientOptions, Draft, Profile, ReadMessage, Session};
use zeroize::Zeroizing;

use crate::{cli, input, output};

/// How to reply.
#[derive(Debug)]
pub struct Reply<'a> {
    /// Reply to all: the original's CCs get a copy too.
    pub all: bool,
    /// Files to attach.
    pub attach: &'a [PathBuf],
}

/// A reply or a forward.
#[derive(Debug)]
pub enum Kind<'a> {
    /// `cmtp reply`.
    Reply(Reply<'a>),
    /// `cmtp forward`, to these recipients.
    Forward {
        /// To.
        to: Vec<Address>,
        /// Cc.
        cc: Vec<Address>,
    },
}

/// `subject` with one "Re: " in front (none added when it already starts with one,
/// in any case, as mail clients write it).
pub fn re_subject(subject: &str) -> String {
    prefixed(subject, "Re: ", &["re:"])
}

/// `subject` with one "Fwd: " in front ("Fwd:" or "Fw:" already there: unchanged).
pub fn fwd_subject(subject: &str) -> String {
    prefixed(subject, "Fwd: ", &["fwd:", "fw:"])
}

fn prefixed(subject: &str, prefix: &str, known: &[&str]) -> String {
    let s = subject.trim_start();
    let lower = s.to_lowercase();
    if known.iter().any(|k| lower.starts_with(k)) {
        s.to_owned()
    } else {
        format!("{prefix}{s}")
    }
}

/// `text` quoted: each line behind "> " (">" alone for an empty line, so no line ends
/// in a space).
pub fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8 + 2);
    for line in text.lines() {
        out.push('>');
        if !line.is_empty() {
            out.push(' ');
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

fn when(m: &ReadMessage) -> Option<String> {
    (!m.legacy).then(|| output::date(m.timestamp))
}

/// The quote under a reply: an attribution line, then the original text quoted.
pub fn reply_tail(m: &ReadMessage) -> String {
    let who = match when(m) {
        Some(d) => format!("On {d}, {} wrote:\n", m.from),
        None => format!("{} wrote:\n", m.from),
    };
    format!("{who}{}", quote(&m.text))
}

/// The forwarded message: a header block, then the original text quoted.
pub fn forward_tail(m: &ReadMessage) -> String {
    let mut h = String::from("---------- Forwarded message ----------\n");
    h.push_str(&format!("From: {}\n", m.from));
    if let Some(d) = when(m) {
        h.push_str(&format!("Date: {d}\n"));
    }
    h.push_str(&format!("Subject: {}\n", m.subject));
    h.push_str(&format!("To: {}\n", m.to));
    if !m.cc.is_empty() {
        h.push_str(&format!("Cc: {}\n", m.cc.join(", ")));
    }
    if !m.attachments.is_empty() {
        let names: Vec<&str> = m.attachments.iter().map(|a| a.name.as_str()).collect();
        h.push_str(&format!("Attachments: {}\n", names.join(", ")));
    }
    h.push('\n');
    h.push_str(&quote(&m.text));
    h
}

fn parse(what: &str, a: &str) -> Result<Address> {
    Address::parse(a).with_context(|| format!("cannot reply to the {what} {a:?}"))
}

/// Who a reply goes to: the original's Reply-To if set, else its sender; with `all`,
/// the original's CCs as CC. Never yourself (`me`) twice, nor an address twice.
pub fn reply_recipients(
    m: &ReadMessage,
    me: &Address,
    all: bool,
) -> Result<(Vec<Address>, Vec<Address>)> {
    let to = if m.reply_to.is_empty() {
        parse("sender", &m.from)?
    } else {
        parse("reply-to address", &m.reply_to)?
    };
    let mut cc: Vec<Address> = Vec::new();
    if all {
        for c in &m.cc {
            let a = parse("CC", c)?;
            if a != *me && a != to && !cc.contains(&a) {
                cc.push(a);
            }
        }
    }
    Ok((vec![to], cc))
}

/// The original's attachments, to send again. A name the sealed format cannot carry
/// (empty) gets the safe name the reader would save it under.
fn carried(m: &ReadMessage) -> Result<Vec<Attachment>> {
    m.attachments
        .iter()
        .enumerate()
        .map(|(i, a)| {
            Attachment::new(&a.name, &a.data)
                .or_else(|_| Attachment::new(&a.safe_name(i), &a.data))
                .map_err(anyhow::Error::from)
        })
        .collect()
}

/// `cmtp reply` / `cmtp forward`: reads message `id` (password if needed, a bar
/// for a large one), builds the draft, takes the text, sends it, and marks the
/// original read.
pub async fn respond(
    g: &cli::Global,
    dir: &Path,
    opts: &ClientOptions,
    id: u64,
    kind: Kind<'_>,
    body_file: Option<PathBuf>,
    json: bool,
) -> Result<u8> {
    let profile = Profile::open(dir)?;
    let me = profile.address()?;
    let mut bar = output::Bar::new(crate::show_download_bar(json));
    // The password (when the key is not remembered) is kept for sending to another
    // domain, which needs the key again: it is asked for once.
    let mut pw: Option<Zeroizing<String>> = None;
    let s = Session::open(profile, opts).await?;
    let original = crate::closing(s, async |s| {
        if !s.is_unlocked() {
            let p = input::password(g.password_stdin, &format!("Password for {me}: "))?;
            s.unlock(p.as_bytes()).await?;
            pw = Some(p);
        }
        Ok(s.read_with(id, &mut bar).await?)
    })
    .await?;
    crate::mark(dir, id, true);
    let draft = match kind {
        Kind::Reply(r) => {
            let (to, cc) = reply_recipients(&original, &me, r.all)?;
            let mut attachments = Vec::new();
            for p in r.attach {
                attachments.push(Attachment::from_file(p).context("cannot attach a file")?);
            }
            let text = input::body_with(body_file.as_deref(), &reply_tail(&original), false)?;
            Draft {
                to,
                cc,
                subject: re_subject(&original.subject),
                reply_to: None,
                text,
                attachments,
            }
        }
        Kind::Forward { to, cc } => Draft {
            text: input::body_with(body_file.as_deref(), &forward_tail(&original), true)?,
            to,
            cc,
            subject: fwd_subject(&original.subject),
            reply_to: None,
            attachments: carried(&original)?,
        },
    };
    if draft.to.is_empty() {
        return Err(anyhow!("no recipient"));
    }
    crate::send_draft(g, Profile::open(dir)?, opts, &draft, pw, json).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use cmtp_client::ReceivedAttachment;

    fn msg() -> ReadMessage {
        ReadMessage {
            id: 4,
            from: "alice@example.org".into(),
            to: "bob@example.org".into(),
            subject: "Plans".into(),
            reply_to: String::new(),
            cc: vec!["carol@example.org".into(), "bob@example.org".into()],
            timestamp: 1_467_676_800,
            text: "Hi Bob,\n\nlunch?\n".into(),
            legacy: false,
            log: vec![],
            attachments: vec![ReceivedAttachment {
                name: "menu.pdf".into(),
                data: b"%PDF".to_vec(),
            }],
        }
    }

    #[test]
    fn subjects_get_one_prefix() {
        assert_eq!(re_subject("Plans"), "Re: Plans");
        assert_eq!(re_subject("Re: Plans"), "Re: Plans");
        assert_eq!(re_subject("RE: Plans"), "RE: Plans");
        assert_eq!(re_subject(""), "Re: ");
        assert_eq!(fwd_subject("Plans"), "Fwd: Plans");
        assert_eq!(fwd_subject("Fwd: Plans"), "Fwd: Plans");
        assert_eq!(fwd_subject("FW: Plans"), "FW: Plans");
        assert_eq!(fwd_subject("Re: Plans"), "Fwd: Re: Plans");
    }

    #[test]
    fn quotes_every_line() {
        assert_eq!(quote("a\n\nb"), "> a\n>\n> b\n");
        assert_eq!(quote("> old\n"), "> > old\n");
        assert_eq!(quote(""), "");
    }

    #[test]
    fn reply_goes_to_reply_to_else_sender_and_all_adds_ccs() {
        let me = Address::parse("bob@example.org").unwrap();
        let mut m = msg();
        let (to, cc) = reply_recipients(&m, &me, false).unwrap();
        assert_eq!(to, vec![Address::parse("alice@example.org").unwrap()]);
        assert!(cc.is_empty());
        let (_, cc) = reply_recipients(&m, &me, true).unwrap();
        assert_eq!(cc, vec![Address::parse("carol@example.org").unwrap()]);
        m.reply_to = "lists@example.net".into();
        let (to, _) = reply_recipients(&m, &me, false).unwrap();
        assert_eq!(to, vec![Address::parse("lists@example.net").unwrap()]);
        m.reply_to = "not an address".into();
        let e = reply_recipients(&m, &me, false).unwrap_err();
        assert!(format!("{e:#}").contains("reply-to address"), "{e:#}");
    }

    #[test]
    fn forward_block_names_the_original() {
        let t = forward_tail(&msg());
        assert!(
            t.starts_with(
                "---------- Forwarded message ----------\nFrom: alice@example.org\nDate: "
            ),
            "{t}"
        );
        assert!(t.contains("\nSubject: Plans\nTo: bob@example.org\n"), "{t}");
        assert!(
            t.contains("\nCc: carol@example.org, bob@example.org\n"),
            "{t}"
        );
        assert!(t.contains("\nAttachments: menu.pdf\n"), "{t}");
        assert!(t.ends_with("\n\n> Hi Bob,\n>\n> lunch?\n"), "{t}");
        let a = carried(&msg()).unwrap();
        assert_eq!((a[0].name(), a[0].data()), ("menu.pdf", &b"%PDF"[..]));
        assert!(
            reply_tail(&msg()).ends_with(" alice@example.org wrote:\n> Hi Bob,\n>\n> lunch?\n")
        );
    }
}
