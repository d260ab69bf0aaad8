//! `cmtp` — the Cipher Mail command-line client: a thin layer over `cmtp-client`.

mod cli;
mod exit;
mod input;
mod mail;
mod output;

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Parser;
use cmtp_client::{
    Address, Attachment, ClientError, ClientOptions, DEFAULT_INBOX_DEADLINE, Draft, PinStatus,
    Profile, Session,
};

use cli::{Cli, Command, ServerCommand};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    // Generated from these definitions; no profile, no network.
    match cli.command {
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "cmtp", &mut out);
            return print_all(&out);
        }
        Command::Man => {
            use clap::CommandFactory;
            let mut out = Vec::new();
            if let Err(e) = clap_mangen::Man::new(Cli::command()).render(&mut out) {
                eprintln!("cmtp: error: {e}");
                return ExitCode::from(exit::OTHER);
            }
            return print_all(&out);
        }
        _ => {}
    }
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .try_init();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cmtp: error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::OTHER);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            // Errors may quote what a server said: no escape sequences reach the terminal.
            eprintln!("cmtp: error: {}", output::term(&output::hint(&render(&e))));
            ExitCode::from(exit::for_error(&e))
        }
    }
}

/// Writes `out` to standard output; a reader that left early (`| head`) is not an error.
fn print_all(out: &[u8]) -> ExitCode {
    use std::io::Write as _;
    match std::io::stdout().lock().write_all(out) {
        Ok(()) => ExitCode::from(exit::OK),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::from(exit::OK),
        Err(e) => {
            eprintln!("cmtp: error: writing to standard output: {e}");
            ExitCode::from(exit::OTHER)
        }
    }
}

/// The error and its causes, `: `-separated, skipping a cause whose text the message
/// already contains (the library's messages often include their source).
fn render(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

async fn run(cli: Cli) -> Result<u8> {
    let g = &cli.global;
    output::set_invocation(g.invocation());
    let opts = g.options()?;
    let dir = g.profile_dir()?;
    match cli.command {
        Command::Completions { .. } | Command::Man => unreachable!("handled in main"),
        Command::Login {
            address,
            server,
            remember,
            json,
        } => {
            let address = Address::parse(&address)?;
            let mut profile = Profile::open(&dir)?;
            let password = input::password(g.password_stdin, &format!("Password for {address}: "))?;
            let info = Session::login(
                &mut profile,
                &address,
                server.as_deref(),
                password.as_bytes(),
                remember,
                &opts,
            )
            .await?;
            output::login(&info, &dir, json);
            Ok(exit::OK)
        }
        Command::Password {
            allow_weak_password,
        } => {
            let s = Session::open(Profile::open(&dir)?, &opts).await?;
            closing(s, async |s| {
                let prompt = format!("Current password for {}: ", s.address());
                let old = input::password(g.password_stdin, &prompt)?;
                let new = input::new_password(g.password_stdin)?;
                if !allow_weak_password {
                    input::check_strength(&new, &s.address().account)?;
                }
                s.change_password(old.as_bytes(), new.as_bytes()).await?;
                Ok(())
            })
            .await?;
            println!("password changed");
            Ok(exit::OK)
        }
        Command::Logout => {
            let profile = Profile::open(&dir)?;
            profile.forget_secret()?;
            println!("the secret key is no longer stored in {}", dir.display());
            Ok(exit::OK)
        }
        Command::Whoami { json } => {
            let profile = Profile::open(&dir)?;
            output::whoami(&profile, json)?;
            Ok(exit::OK)
        }
        Command::Server(ServerCommand::Show { json }) => {
            let profile = Profile::open(&dir)?;
            output::server_show(&profile, json)?;
            Ok(exit::OK)
        }
        Command::Server(ServerCommand::Trust { fingerprint }) => {
            let mut profile = Profile::open(&dir)?;
            let key = Session::trust_server(&mut profile, &fingerprint, &opts).await?;
            println!(
                "pinned the new key of {}: {}",
                profile.require_config()?.server,
                key.fingerprint()
            );
            Ok(exit::OK)
        }
        Command::Key {
            address,
            accept,
            json,
        } => {
            let address = Address::parse(&address)?;
            let s = Session::open(Profile::open(&dir)?, &opts).await?;
            let (look, code) = closing(s, async |s| {
                let look = s.lookup_key(&address).await?;
                let code = match &look.status {
                    PinStatus::New => {
                        s.pin_user(&address, &look.key)?;
                        exit::OK
                    }
                    PinStatus::Same => exit::OK,
                    PinStatus::Changed(_) if accept => {
                        s.pin_user(&address, &look.key)?;
                        exit::OK
                    }
                    PinStatus::Changed(_) => exit::KEY_CHANGED,
                };
                Ok((look, code))
            })
            .await?;
            if let PinStatus::Changed(old) = &look.status
                && !accept
            {
                eprintln!(
                    "{}",
                    output::term(&output::hint(
                        &ClientError::UserKeyChanged {
                            address: address.to_string(),
                            pinned: old.fingerprint(),
                            presented: look.key.fingerprint(),
                        }
                        .to_string()
                    ))
                );
            }
            output::key(&look, accept, json);
            Ok(code)
        }
        Command::Send {
            to,
            cc,
            subject,
            reply_to,
            attach,
            body_file,
            json,
            max_size,
        } => {
            let mut draft = Draft {
                to: parse_all(&to)?,
                cc: parse_all(&cc)?,
                subject,
                reply_to: reply_to.as_deref().map(Address::parse).transpose()?,
                text: String::new(),
                attachments: Vec::new(),
            };
            if draft.subject.contains('\0') {
                bail!("the subject must not contain NUL");
            }
            for p in &attach {
                // The library's error names the path; saying it again adds nothing.
                draft
                    .attachments
                    .push(Attachment::from_file(p).context("cannot attach a file")?);
            }
            let profile = Profile::open(&dir)?;
            // A recipient in another domain goes by SUBMIT, signed with the secret key.
            // With --password-stdin the password is then the first line, read before
            // the text, which is the rest of standard input.
            let mut early_pw = None;
            if g.password_stdin
                && profile.remembered_secret()?.is_none()
                && any_foreign(&profile, &draft)?
            {
                early_pw = Some(input::password(true, "")?);
            }
            draft.text = input::body(body_file.as_deref())?;
            let opts = ClientOptions {
                max_message: max_size.or(opts.max_message),
                ..opts
            };
            send_draft(g, profile, &opts, &draft, early_pw, json).await
        }
        Command::Inbox {
            limit,
            unread,
            json,
        } => {
            let io = opts.timeouts.unwrap_or_default().io;
            let deadline = DEFAULT_INBOX_DEADLINE.max(io * 2);
            let mut items = unlocked(&dir, &opts, g.password_stdin, async |s| {
                Ok(s.inbox_with(limit as usize, deadline).await?)
            })
            .await?;
            let profile = Profile::open(&dir)?;
            if items.len() < limit as usize {
                // The whole mailbox was listed: marks of deleted messages can go.
                let present = items.iter().map(|i| i.id).collect();
                if let Err(e) = profile.keep_read_marks(&present) {
                    warn(&e.into());
                }
            }
            let read = profile.read_ids()?;
            if unread {
                items.retain(|i| !read.contains(&i.id));
            }
            output::inbox(&items, &read, json);
            Ok(exit::OK)
        }
        Command::Read {
            id,
            keep_unread,
            json,
            save_attachments,
        } => {
            let mut bar = output::Bar::new(show_download_bar(json));
            let m = unlocked(&dir, &opts, g.password_stdin, async |s| {
                Ok(s.read_with(id, &mut bar).await?)
            })
            .await?;
            if !keep_unread {
                mark(&dir, id, true);
            }
            let saved = match &save_attachments {
                Some(d) => output::save_attachments(&m, d),
                None => Vec::new(),
            };
            // The message is always shown; then each attachment not saved, once.
            output::read(&m, &saved, json);
            let mut code = exit::OK;
            for (i, s) in saved.iter().enumerate() {
                if let Err(why) = s {
                    eprintln!(
                        "cmtp: error: attachment {} not saved: {}",
                        i + 1,
                        output::term(why)
                    );
                    code = exit::OTHER;
                }
            }
            Ok(code)
        }
        Command::Unread { id } => {
            let changed = Profile::open(&dir)?.mark_read(id, false)?;
            println!(
                "message {id} {}",
                if changed {
                    "marked unread"
                } else {
                    "was not marked read"
                }
            );
            Ok(exit::OK)
        }
        Command::Reply {
            id,
            all,
            body_file,
            attach,
            json,
        } => {
            let how = mail::Reply {
                all,
                attach: &attach,
            };
            mail::respond(g, &dir, &opts, id, mail::Kind::Reply(how), body_file, json).await
        }
        Command::Forward {
            id,
            to,
            cc,
            body_file,
            json,
        } => {
            let kind = mail::Kind::Forward {
                to: parse_all(&to)?,
                cc: parse_all(&cc)?,
            };
            mail::respond(g, &dir, &opts, id, kind, body_file, json).await
        }
        Command::Delete { id } => {
            unlocked(&dir, &opts, g.password_stdin, async |s| {
                Ok(s.delete(id).await?)
            })
            .await?;
            println!("deleted message {id}");
            // A later message may get this id again: it must show as unread.
            if let Err(e) = Profile::open(&dir).and_then(|p| p.mark_read(id, false)) {
                warn(&e.into());
            }
            Ok(exit::OK)
        }
    }
}

/// Parses each address.
fn parse_all(v: &[String]) -> Result<Vec<Address>> {
    v.iter()
        .map(|a| Address::parse(a).map_err(anyhow::Error::from))
        .collect()
}

/// A download bar only for people watching: not with --json, and only when both
/// standard output and standard error are terminals.
pub(crate) fn show_download_bar(json: bool) -> bool {
    !json && std::io::stdout().is_terminal() && std::io::stderr().is_terminal()
}

/// Records message `id` as read (or unread); the message was shown, so a failure to
/// record it is a warning, not an error.
pub(crate) fn mark(dir: &std::path::Path, id: u64, read: bool) {
    if let Err(e) = Profile::open(dir).and_then(|p| p.mark_read(id, read)) {
        warn(&e.into());
    }
}

/// Prints a warning (a problem that does not change the outcome).
pub(crate) fn warn(e: &anyhow::Error) {
    eprintln!("cmtp: warning: {}", output::term(&output::hint(&render(e))));
}

/// True when a recipient of `draft` is in another domain than the profile's address
/// (the rule [`Session::send_needs_keys`] applies once connected).
pub(crate) fn any_foreign(profile: &Profile, draft: &Draft) -> Result<bool> {
    let home = profile.address()?.domain;
    Ok(draft.to.iter().chain(&draft.cc).any(|a| a.domain != home))
}

/// Sends `draft` from `profile`'s account (unlocking with `pw`, or a password asked
/// for, when a recipient is in another domain), prints one line per recipient and
/// returns the exit code of the first failure.
pub(crate) async fn send_draft(
    g: &cli::Global,
    profile: Profile,
    opts: &ClientOptions,
    draft: &Draft,
    mut pw: Option<zeroize::Zeroizing<String>>,
    json: bool,
) -> Result<u8> {
    let s = Session::open(profile, opts).await?;
    let show_bar = !json && std::io::stderr().is_terminal();
    let mut progress = output::Bar::new(show_bar);
    let results = closing(s, async |s| {
        if s.send_needs_keys(draft) && !s.is_unlocked() {
            let pw = match pw.take() {
                Some(pw) => pw,
                None => input::password(
                    g.password_stdin,
                    &format!("Password for {} (to sign for other domains): ", s.address()),
                )?,
            };
            s.unlock(pw.as_bytes()).await?;
        }
        Ok(s.send(draft, &mut progress).await?)
    })
    .await?;
    let mut code = exit::OK;
    for r in &results {
        if let Err(e) = &r.outcome
            && code == exit::OK
        {
            code = exit::for_kind(e.kind());
        }
    }
    output::send_results(&results, json);
    Ok(code)
}

/// Runs `work` on the session, then closes it (OBAI) whatever the outcome: the server
/// is told goodbye after a refusal too.
pub(crate) async fn closing<T>(
    mut s: Session,
    work: impl AsyncFnOnce(&mut Session) -> Result<T>,
) -> Result<T> {
    let r = work(&mut s).await;
    s.close().await;
    r
}

/// Runs `work` on a session with the secret key available (remembered, or unlocked
/// with the password), then closes it.
pub(crate) async fn unlocked<T>(
    dir: &std::path::Path,
    opts: &ClientOptions,
    stdin: bool,
    work: impl AsyncFnOnce(&mut Session) -> Result<T>,
) -> Result<T> {
    let s = Session::open(Profile::open(dir)?, opts).await?;
    closing(s, async |s| {
        if !s.is_unlocked() {
            let pw = input::password(stdin, &format!("Password for {}: ", s.address()))?;
            s.unlock(pw.as_bytes()).await?;
        }
        work(s).await
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use cli::AFTER_HELP;

    #[test]
    fn errors_render_without_repeating_their_source() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e = anyhow::Error::from(ClientError::Connect {
            addr: "h:1".into(),
            source: io,
        })
        .context("logging in");
        assert_eq!(
            render(&e),
            "logging in: cannot reach the server at h:1: refused"
        );
    }

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn help_lists_every_exit_code() {
        for code in [
            exit::OK,
            exit::OTHER,
            exit::USAGE,
            exit::UNREACHABLE,
            exit::NOT_CMTP,
            exit::WRONG_PASSWORD,
            exit::UNKNOWN_USER,
            exit::KEY_CHANGED,
            exit::TOO_LARGE,
            exit::DELIVERY_FAILURE,
            exit::PROTOCOL,
            exit::TIMEOUT,
            exit::MAILBOX,
            exit::PROFILE,
        ] {
            assert!(
                AFTER_HELP.contains(&format!("\n  {code:>2}  ")),
                "exit code {code} missing from --help"
            );
        }
    }
}
