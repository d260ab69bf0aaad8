//! `cmtp` — the Cipher Mail command-line client: a thin layer over `cmtp-client`.

mod exit;
mod input;
mod output;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use cmtp_client::{
    Address, Attachment, ClientError, ClientOptions, Compat, DEFAULT_INBOX_DEADLINE,
    DEFAULT_INBOX_LIMIT, Draft, PinStatus, Profile, Session, Timeouts,
};

/// cmtp — send and read sealed Cipher Mail (CMTP/1).
///
/// Every message body and attachment is sealed to its recipient's key. Server keys and
/// users' keys are pinned on first use; a changed key is a loud error.
#[derive(Debug, Parser)]
#[command(name = "cmtp", version, after_help = AFTER_HELP)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

const AFTER_HELP: &str = concat!(
    "PROFILE: --profile DIR, else $CMTP_HOME, else <config dir>/cmtp (e.g. ~/.config/cmtp).
PASSWORD: --password-stdin (first line of standard input), else $CMTP_PASSWORD, else a
no-echo prompt. Without `login --remember`, inbox/read/delete fetch the encrypted key
again from the server and need the password each time; so does send to another domain
(SUBMIT is signed with your key; with --password-stdin the first line is then the
password and the rest the text).

",
    "EXIT CODES:
   0  success
   1  other error (local file, bad input, ...)
   2  usage error
   3  server unreachable (DNS, connection refused, connect timeout)
   4  not a CMTP server (e.g. an SMTP server answered)
   5  wrong password
   6  unknown user (no such account or key)
   7  a pinned key changed (server or user): see the message for the command that accepts it
   8  message too large
   9  delivery failure (DELIVERYFAILURE: no such account there, relaying refused,
      recipient's domain unreachable)
  10  protocol error, a server signature that does not verify, or a possible
      downgrade (a 2016 answer from a server that spoke CMTP/1 at login)
  11  a network step timed out
  12  mailbox refused the request (AUTHFAILURE) or no such message
  13  no usable profile (run `cmtp login` first)"
);

#[derive(Debug, Clone, Args)]
struct Global {
    /// Profile folder (default $CMTP_HOME, else the platform config dir + /cmtp).
    #[arg(long, global = true, value_name = "DIR", env = "CMTP_HOME")]
    profile: Option<PathBuf>,
    /// Timeout of each network step, in seconds (default 30; the 2016 server answers
    /// some errors with silence).
    #[arg(long, global = true, value_name = "SECS", env = "CMTP_TIMEOUT")]
    timeout: Option<f64>,
    /// Connect timeout in seconds (default 10).
    #[arg(long, global = true, value_name = "SECS", env = "CMTP_CONNECT_TIMEOUT")]
    connect_timeout: Option<f64>,
    /// DNS server for discovery (ip:port) instead of the system's.
    #[arg(long, global = true, value_name = "IP:PORT", env = "CMTP_DNS")]
    dns: Option<SocketAddr>,
    /// Server dialect: cmtp1 (default) or 2016 (the 2016 C server; see docs/client.md).
    #[arg(long, global = true, value_enum)]
    compat: Option<CompatArg>,
    /// Read the password from the first line of standard input.
    #[arg(long, global = true)]
    password_stdin: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum CompatArg {
    /// CMTP/1 (docs/protocol.md).
    Cmtp1,
    /// The 2016 C server.
    #[value(name = "2016")]
    Legacy2016,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Log in: find the server, pin its key, check the password, write the profile.
    ///
    /// Example: cmtp login alice@example.org --server 127.0.0.1:9001
    Login {
        /// Your address, NAME@DOMAIN.
        address: String,
        /// The server (HOST:PORT); default: DNS SRV _cmtp._tcp.DOMAIN, else MX on port 25.
        #[arg(long, value_name = "HOST:PORT")]
        server: Option<String>,
        /// Store the secret key in the profile (mode 0600) so later commands need no password.
        #[arg(long)]
        remember: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Forget the remembered secret key (the profile and pins stay).
    Logout,
    /// Show your address, server and key.
    Whoami {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Look up a user's key through your server, verify it and pin it.
    ///
    /// A key that differs from the pinned one is refused (exit 7) unless --accept.
    Key {
        /// The address, NAME@DOMAIN.
        address: String,
        /// Accept (re-pin) a changed key.
        #[arg(long)]
        accept: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The home server's key.
    #[command(subcommand)]
    Server(ServerCommand),
    /// Send a sealed message (one copy per recipient, To and CC).
    ///
    /// The text comes from --body-file, else standard input when it is not a terminal,
    /// else $VISUAL / $EDITOR.
    Send {
        /// Recipient (repeat).
        #[arg(long, value_name = "ADDR", required = true)]
        to: Vec<String>,
        /// Carbon copy (repeat).
        #[arg(long, value_name = "ADDR")]
        cc: Vec<String>,
        /// Subject.
        #[arg(long, short, default_value = "")]
        subject: String,
        /// Reply-to address.
        #[arg(long, value_name = "ADDR")]
        reply_to: Option<String>,
        /// Attach a file (repeat).
        #[arg(long, value_name = "FILE")]
        attach: Vec<PathBuf>,
        /// Read the text from this file (`-` = standard input).
        #[arg(long, value_name = "FILE")]
        body_file: Option<PathBuf>,
        /// Print JSON (and no progress bar).
        #[arg(long)]
        json: bool,
        /// Refuse locally a message larger than this many bytes (default 64 MiB, the
        /// server default; the server's own limit applies in any case).
        #[arg(long, value_name = "BYTES")]
        max_size: Option<u64>,
    },
    /// List your mailbox (subjects come from the sealed bodies; attachments are not downloaded).
    ///
    /// Shows the newest messages (--limit, default 50), in ascending id order. Each one
    /// shown costs a round trip; the whole listing has an overall deadline (120 s, or
    /// twice --timeout if longer), after which the remaining ones are shown without
    /// their subject.
    Inbox {
        /// Show at most this many messages, the newest (highest ids).
        #[arg(long, value_name = "N", default_value_t = DEFAULT_INBOX_LIMIT as u32,
              value_parser = clap::value_parser!(u32).range(1..))]
        limit: u32,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Read one message.
    Read {
        /// Message id (from `cmtp inbox`).
        id: u64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Save the attachments into this folder.
        #[arg(long, value_name = "DIR")]
        save_attachments: Option<PathBuf>,
    },
    /// Delete one message.
    Delete {
        /// Message id.
        id: u64,
    },
    /// Print a shell completion script, e.g. `cmtp completions bash > ~/.local/share/bash-completion/completions/cmtp`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), e.g. `cmtp man > ~/.local/share/man/man1/cmtp.1`.
    Man,
}

#[derive(Debug, Subcommand)]
enum ServerCommand {
    /// Show the pinned key of your home server.
    Show {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Accept a changed server key after checking its fingerprint with the operator.
    Trust {
        /// The new key's fingerprint (as printed) or its hex.
        #[arg(long)]
        fingerprint: String,
    },
}

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
            eprintln!("cmtp: error: {}", output::term(&render(&e)));
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

impl Global {
    fn profile_dir(&self) -> Result<PathBuf> {
        if let Some(p) = &self.profile {
            return Ok(p.clone());
        }
        let base = dirs::config_dir()
            .context("no platform config folder; use --profile DIR or set CMTP_HOME")?;
        Ok(base.join("cmtp"))
    }

    fn options(&self) -> Result<ClientOptions> {
        let d = Timeouts::default();
        let secs = |v: Option<f64>, dflt: Duration, what: &str| -> Result<Duration> {
            match v {
                None => Ok(dflt),
                Some(s) if s.is_finite() && s > 0.0 && s <= 86_400.0 => {
                    Ok(Duration::from_secs_f64(s))
                }
                Some(s) => bail!("{what} must be between 0 and 86400 seconds, not {s}"),
            }
        };
        let timeouts = if self.timeout.is_some() || self.connect_timeout.is_some() {
            Some(Timeouts {
                connect: secs(self.connect_timeout, d.connect, "--connect-timeout")?,
                io: secs(self.timeout, d.io, "--timeout")?,
            })
        } else {
            None
        };
        Ok(ClientOptions {
            timeouts,
            dns: self.dns,
            compat: self.compat.map(|c| match c {
                CompatArg::Cmtp1 => Compat::Cmtp1,
                CompatArg::Legacy2016 => Compat::Legacy2016,
            }),
            max_message: None,
        })
    }
}

async fn run(cli: Cli) -> Result<u8> {
    let g = &cli.global;
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
                    output::term(
                        &ClientError::UserKeyChanged {
                            address: address.to_string(),
                            pinned: old.fingerprint(),
                            presented: look.key.fingerprint(),
                        }
                        .to_string()
                    )
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
            let parse_all = |v: &[String]| -> Result<Vec<Address>> {
                v.iter()
                    .map(|a| Address::parse(a).map_err(anyhow::Error::from))
                    .collect()
            };
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
                draft.attachments.push(
                    Attachment::from_file(p)
                        .with_context(|| format!("attaching {}", p.display()))?,
                );
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
            let s = Session::open(profile, &opts).await?;
            let show_bar = !json && std::io::stderr().is_terminal();
            let mut progress = output::Bar::new(show_bar);
            let results = closing(s, async |s| {
                if s.send_needs_keys(&draft) && !s.is_unlocked() {
                    let pw = match early_pw.take() {
                        Some(pw) => pw,
                        None => input::password(
                            g.password_stdin,
                            &format!("Password for {} (to sign for other domains): ", s.address()),
                        )?,
                    };
                    s.unlock(pw.as_bytes()).await?;
                }
                Ok(s.send(&draft, &mut progress).await?)
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
        Command::Inbox { limit, json } => {
            let io = opts.timeouts.unwrap_or_default().io;
            let deadline = DEFAULT_INBOX_DEADLINE.max(io * 2);
            let items = unlocked(&dir, &opts, g.password_stdin, async |s| {
                Ok(s.inbox_with(limit as usize, deadline).await?)
            })
            .await?;
            output::inbox(&items, json);
            Ok(exit::OK)
        }
        Command::Read {
            id,
            json,
            save_attachments,
        } => {
            let m = unlocked(&dir, &opts, g.password_stdin, async |s| {
                Ok(s.read(id).await?)
            })
            .await?;
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
        Command::Delete { id } => {
            unlocked(&dir, &opts, g.password_stdin, async |s| {
                Ok(s.delete(id).await?)
            })
            .await?;
            println!("deleted message {id}");
            Ok(exit::OK)
        }
    }
}

/// True when a recipient of `draft` is in another domain than the profile's address
/// (the rule [`Session::send_needs_keys`] applies once connected).
fn any_foreign(profile: &Profile, draft: &Draft) -> Result<bool> {
    let home = profile.address()?.domain;
    Ok(draft.to.iter().chain(&draft.cc).any(|a| a.domain != home))
}

/// Runs `work` on the session, then closes it (OBAI) whatever the outcome: the server
/// is told goodbye after a refusal too.
async fn closing<T>(
    mut s: Session,
    work: impl AsyncFnOnce(&mut Session) -> Result<T>,
) -> Result<T> {
    let r = work(&mut s).await;
    s.close().await;
    r
}

/// Runs `work` on a session with the secret key available (remembered, or unlocked
/// with the password), then closes it.
async fn unlocked<T>(
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
