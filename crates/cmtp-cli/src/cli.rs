//! The command line: clap definitions, the global options and what they select.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use cmtp_client::{ClientOptions, Compat, DEFAULT_INBOX_LIMIT, Timeouts};

use crate::output;

/// cmtp — send and read sealed Cipher Mail (CMTP/1).
///
/// Every message body and attachment is sealed to its recipient's key. Server keys and
/// users' keys are pinned on first use; a changed key is a loud error.
#[derive(Debug, Parser)]
#[command(name = "cmtp", version, after_help = AFTER_HELP)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

pub const AFTER_HELP: &str = concat!(
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
  10  protocol error, a server signature that does not verify, a failed TLS
      handshake, or a possible downgrade (a 2016 answer from a server that spoke
      CMTP/1 at login; no TLS offer from a server that offered it before, or with
      --require-tls)
  11  a network step timed out
  12  mailbox refused the request (AUTHFAILURE) or no such message
  13  no usable profile (run `cmtp login` first)"
);

#[derive(Debug, Clone, Args)]
pub struct Global {
    /// Profile folder (default $CMTP_HOME, else the platform config dir + /cmtp).
    #[arg(long, global = true, value_name = "DIR", env = "CMTP_HOME")]
    pub profile: Option<PathBuf>,
    /// Timeout of each network step, in seconds (default 30; the 2016 server answers
    /// some errors with silence).
    #[arg(long, global = true, value_name = "SECS", env = "CMTP_TIMEOUT",
          value_parser = seconds)]
    pub timeout: Option<f64>,
    /// Connect timeout in seconds (default 10).
    #[arg(long, global = true, value_name = "SECS", env = "CMTP_CONNECT_TIMEOUT",
          value_parser = seconds)]
    pub connect_timeout: Option<f64>,
    /// DNS server for discovery (ip:port) instead of the system's.
    #[arg(long, global = true, value_name = "IP:PORT", env = "CMTP_DNS")]
    pub dns: Option<SocketAddr>,
    /// Server dialect: cmtp1 (default) or 2016 (the 2016 C server; see docs/client.md).
    #[arg(long, global = true, value_enum)]
    pub compat: Option<CompatArg>,
    /// Read the password from the first line of standard input.
    #[arg(long, global = true)]
    pub password_stdin: bool,
    /// Refuse a server that does not offer TLS. Without it TLS is still used whenever
    /// the server offers it, and required once a server has offered it.
    #[arg(long, global = true, env = "CMTP_REQUIRE_TLS")]
    pub require_tls: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompatArg {
    /// CMTP/1 (docs/protocol.md).
    Cmtp1,
    /// The 2016 C server.
    #[value(name = "2016")]
    Legacy2016,
}

#[derive(Debug, Subcommand)]
pub enum Command {
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
    /// Change your password (servers that offer the OPAQUE login, docs/protocol.md D8).
    ///
    /// Asks for the current password, then the new one (twice). With --password-stdin
    /// the first line is the current password and the second the new one. The key pair
    /// stays the same; the server stores it under the new password.
    Password {
        /// Accept a new password the strength estimate (zxcvbn) calls weak.
        #[arg(long)]
        allow_weak_password: bool,
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
        /// Show only the messages not read yet (read state is kept in the profile).
        #[arg(long)]
        unread: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Read one message (and mark it read).
    Read {
        /// Message id (from `cmtp inbox`).
        id: u64,
        /// Do not mark the message read.
        #[arg(long)]
        keep_unread: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Save the attachments into this folder.
        #[arg(long, value_name = "DIR")]
        save_attachments: Option<PathBuf>,
    },
    /// Mark a message unread again (local: the read state is kept in the profile).
    Unread {
        /// Message id.
        id: u64,
    },
    /// Reply to a message: "Re: " subject, the original quoted with "> ".
    ///
    /// To is the original's Reply-To if set, else its sender. The text comes from
    /// --body-file, else standard input when it is not a terminal (the quote follows
    /// it), else an editor opened on the quote. Marks the original read.
    Reply {
        /// Message id.
        id: u64,
        /// Reply to all: the original's CCs get a copy too (Cc), except yourself.
        #[arg(long)]
        all: bool,
        /// Read the text from this file (`-` = standard input).
        #[arg(long, value_name = "FILE")]
        body_file: Option<PathBuf>,
        /// Attach a file (repeat).
        #[arg(long, value_name = "FILE")]
        attach: Vec<PathBuf>,
        /// Print JSON (and no progress bar).
        #[arg(long)]
        json: bool,
    },
    /// Forward a message: "Fwd: " subject, the original quoted under a header block,
    /// its attachments carried over.
    ///
    /// An optional note comes from --body-file, else standard input when it is not a
    /// terminal, else an editor opened on the forwarded text.
    Forward {
        /// Message id.
        id: u64,
        /// Recipient (repeat).
        #[arg(long, value_name = "ADDR", required = true)]
        to: Vec<String>,
        /// Carbon copy (repeat).
        #[arg(long, value_name = "ADDR")]
        cc: Vec<String>,
        /// Read the note from this file (`-` = standard input).
        #[arg(long, value_name = "FILE")]
        body_file: Option<PathBuf>,
        /// Print JSON (and no progress bar).
        #[arg(long)]
        json: bool,
    },
    /// Delete one message.
    Delete {
        /// Message id.
        id: u64,
    },
    /// Print a shell completion script, e.g.
    /// `cmtp completions bash > ~/.local/share/bash-completion/completions/cmtp`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), e.g. `cmtp man > ~/.local/share/man/man1/cmtp.1`.
    Man,
}

#[derive(Debug, Subcommand)]
pub enum ServerCommand {
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

/// Parses a timeout in seconds: more than 0 (0 would make every network step fail at
/// once, not "no timeout") and at most a day. A bad value is a usage error (exit 2).
fn seconds(s: &str) -> std::result::Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if v.is_finite() && v > 0.0 && v <= 86_400.0 {
        Ok(v)
    } else {
        Err(format!(
            "must be more than 0 and at most 86400 seconds (a day), not {s}"
        ))
    }
}

impl Global {
    pub fn profile_dir(&self) -> Result<PathBuf> {
        if let Some(p) = &self.profile {
            return Ok(p.clone());
        }
        let base = dirs::config_dir()
            .context("no platform config folder; use --profile DIR or set CMTP_HOME")?;
        Ok(base.join("cmtp"))
    }

    /// The `cmtp` command line that reaches the same profile (and dialect) from any
    /// folder, for the commands the messages tell people to run.
    pub fn invocation(&self) -> String {
        let mut cmd = String::from("cmtp");
        if let Some(p) = &self.profile {
            // Absolute, so that the hint works wherever it is pasted.
            let p = std::path::absolute(p).unwrap_or_else(|_| p.clone());
            cmd.push_str(" --profile ");
            cmd.push_str(&output::shell_quote(&p.to_string_lossy()));
        }
        if self.compat == Some(CompatArg::Legacy2016) {
            cmd.push_str(" --compat 2016");
        }
        if self.require_tls {
            cmd.push_str(" --require-tls");
        }
        cmd
    }

    pub fn options(&self) -> Result<ClientOptions> {
        let d = Timeouts::default();
        // The values were checked by `seconds` when the command line was parsed.
        let secs = |v: Option<f64>, dflt: Duration| v.map_or(dflt, Duration::from_secs_f64);
        let timeouts = if self.timeout.is_some() || self.connect_timeout.is_some() {
            Some(Timeouts {
                connect: secs(self.connect_timeout, d.connect),
                io: secs(self.timeout, d.io),
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
            require_tls: self.require_tls,
        })
    }
}
