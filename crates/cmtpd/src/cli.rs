//! Command-line interface (clap derive): `serve` and the admin subcommands.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{LogFormat, Overrides};

/// cmtpd — the Cipher Mail (CMTP/1) server, and its administration tool.
///
/// Everything lives in one data directory (default ./cmtp-data, or $CMTPD_DATA_DIR):
/// the server key, the users and the mail. The admin subcommands work on that directory
/// while the server runs; the server sees their changes at once. Only `serve` and `init`
/// create it: every other subcommand fails, naming the directory it looked for.
///
/// With `[store] backend = "postgres"` users, mail, the relay queue and peer keys are in
/// a PostgreSQL database shared by several nodes (`[store] url` or $CMTPD_DATABASE_URL),
/// and the admin subcommands work on that database; the data directory keeps the keys.
///
/// Configuration file, for every subcommand: --config FILE, else $CMTPD_CONFIG, else
/// ./cmtpd.toml when it exists, else the built-in defaults. Flags win over the file.
#[derive(Debug, Parser)]
#[command(
    name = "cmtpd",
    version,
    after_help = "EXAMPLES:
  Run a server for example.org on all interfaces:
    cmtpd --domain example.org serve --listen 0.0.0.0:9001
  Add a user (prompts twice for the password), then list users:
    cmtpd user add alice
    cmtpd user list
  Add a user from a script:
    printf '%s\\n' \"$PASSWORD\" | cmtpd user add bob --password-stdin
  Import a user made by the 2016 tools:
    cmtpd user import carol --public-key public.key --xzibit carol.xzibit
  Show the server's public key (what clients pin):
    cmtpd key show
  Read the server's own mailbox (postmaster):
    cmtpd mailbox list && cmtpd mailbox show 3
  Relay to another domain's server without DNS, then watch the queue:
    cmtpd serve --route b.example=10.0.0.2:9001
    cmtpd queue list && cmtpd queue retry --all
  Move an installation into PostgreSQL (server stopped, database migrated):
    CMTPD_DATABASE_URL=postgres://cmtp@db/cmtp cmtpd store copy --from embedded --to postgres
  Accept a remote server's new key after checking it:
    cmtpd domain keys && cmtpd domain trust b.example
  Start from a commented configuration:
    cmtpd config default > cmtpd.toml && cmtpd --config cmtpd.toml serve"
)]
pub struct Cli {
    /// Options shared by every subcommand.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options accepted by every subcommand (before or after it).
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// TOML configuration file (see `cmtpd config default`). Without it: $CMTPD_CONFIG,
    /// else ./cmtpd.toml when present, else the defaults.
    #[arg(
        long,
        short = 'c',
        global = true,
        value_name = "FILE",
        env = "CMTPD_CONFIG"
    )]
    pub config: Option<PathBuf>,
    /// Data directory (server key, users, mail); default ./cmtp-data or $CMTPD_DATA_DIR.
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// A local domain (repeat for several; the first is the primary). Default: localhost.
    #[arg(long = "domain", global = true, value_name = "NAME")]
    pub domains: Vec<String>,
    /// Log format; the level comes from RUST_LOG (default info).
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the CMTP server (creates the data directory and server key on first start).
    ///
    /// Stops gracefully on SIGTERM or SIGINT: stops accepting, lets deliveries in
    /// progress finish (bounded by shutdown_grace_secs), exits 0.
    Serve(ServeArgs),
    /// Create the data directory and the server key, then print the key's fingerprint
    /// (what `serve` does on first start; for preparing a server before it runs).
    Init,
    /// Manage user accounts.
    #[command(subcommand)]
    User(UserCommand),
    /// The server's key.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Inspect stored mail (the server's own mailbox by default).
    #[command(subcommand)]
    Mailbox(MailboxCommand),
    /// The relay queue: mail waiting for other domains' servers.
    #[command(subcommand)]
    Queue(QueueCommand),
    /// Other domains: the pinned keys of their servers.
    #[command(subcommand)]
    Domain(DomainCommand),
    /// The PostgreSQL database of `[store] backend = "postgres"`.
    #[command(subcommand)]
    Db(DbCommand),
    /// Move an installation between backends: `store copy --from embedded --to postgres`.
    #[command(subcommand)]
    Store(StoreCommand),
    /// Configuration helpers.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print a shell completion script, e.g.
    /// `cmtpd completions bash > /etc/bash_completion.d/cmtpd`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), e.g. `cmtpd man > /usr/local/share/man/man8/cmtpd.8`.
    Man,
}

impl Cli {
    /// The completion script for `shell`, generated from these definitions.
    pub fn completions(shell: clap_complete::Shell) -> Vec<u8> {
        use clap::CommandFactory;
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "cmtpd", &mut out);
        out
    }

    /// The manual page (section 8: system administration), generated from these
    /// definitions; it lists the subcommands (each explains itself with `--help`).
    pub fn man_page() -> std::io::Result<Vec<u8>> {
        use clap::CommandFactory;
        let mut out = Vec::new();
        clap_mangen::Man::new(Cli::command())
            .section("8")
            .render(&mut out)?;
        Ok(out)
    }
}

/// The configuration file picked up from the working directory when neither `--config`
/// nor `$CMTPD_CONFIG` names one.
pub const LOCAL_CONFIG: &str = "cmtpd.toml";

/// An error and its causes on one line, each cause once: a cause whose text its parent
/// already printed (as `{source}` in its message) is not repeated.
pub fn render_error(e: &anyhow::Error) -> String {
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

/// `cmtpd queue ...`
#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// List queued messages: id, recipient, sender, size, attempts, next attempt, last
    /// error.
    List {
        /// Print JSON (an array of objects).
        #[arg(long)]
        json: bool,
    },
    /// Show one queued message: its state, envelope and log (the body is sealed).
    Show {
        /// Queue id (from `queue list`).
        id: u64,
    },
    /// Try again now: one message, or every waiting message with --all. Asks the running
    /// server; when none runs, the next start tries them at once. On PostgreSQL: sets the
    /// next attempt to now in the database (and tells a server on this data directory).
    Retry {
        /// Queue id.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<u64>,
        /// Every waiting message.
        #[arg(long)]
        all: bool,
    },
    /// Remove a message from the queue without delivering it (no notice is sent). On
    /// PostgreSQL it is deleted in the database, for every node.
    Drop {
        /// Queue id.
        id: u64,
    },
}

/// `cmtpd domain ...`
#[derive(Debug, Subcommand)]
pub enum DomainCommand {
    /// The server keys pinned for other domains (pinned on first contact), with any
    /// different key a server presented and we refused.
    Keys {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Accept the key a domain's server presented in place of the pinned one (after you
    /// have checked its fingerprint with that domain's operator).
    Trust {
        /// The domain.
        domain: String,
    },
}

/// `cmtpd serve` options.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on for CMTP (repeat for several). Default 127.0.0.1:9001.
    #[arg(long, value_name = "ADDR")]
    pub listen: Vec<SocketAddr>,
    /// Address of the HTTP /metrics and /health endpoint. Default 127.0.0.1:9101.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    /// Do not run the metrics endpoint.
    #[arg(long, conflicts_with = "metrics_listen")]
    pub no_metrics: bool,
    /// Once listening, write the bound addresses here (one `cmtp ADDR` / `metrics ADDR`
    /// per line), useful with port 0.
    #[arg(long, value_name = "FILE")]
    pub ready_file: Option<PathBuf>,
    /// Route a domain to a server, bypassing DNS (repeatable), e.g.
    /// `--route b.example=10.0.0.2:9001`. Same as `[federation] routes`.
    #[arg(long = "route", value_name = "DOMAIN=HOST:PORT", value_parser = parse_route)]
    pub routes: Vec<(String, String)>,
    /// DNS resolver for finding other domains' servers (UDP and TCP), instead of the
    /// system's. Same as `[federation] dns`.
    #[arg(long, value_name = "IP:PORT")]
    pub dns: Option<SocketAddr>,
}

/// Parses `DOMAIN=HOST:PORT`.
fn parse_route(s: &str) -> Result<(String, String), String> {
    let (domain, target) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected DOMAIN=HOST:PORT"))?;
    if domain.is_empty() {
        return Err(format!("{s:?}: the domain is empty"));
    }
    if crate::config::parse_host_port(target).is_none() {
        return Err(format!("{s:?}: {target:?} is not HOST:PORT"));
    }
    Ok((domain.to_owned(), target.to_owned()))
}

/// `cmtpd user ...`
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create an account: a fresh key pair, stored with its xzibit (v2, Argon2id).
    ///
    /// Example: cmtpd user add alice
    Add {
        /// Account name (UTF-8, ≤ 255 bytes, no `/`, `\`, control characters; not `.`/`..`).
        name: String,
        /// Read the password from the first line of standard input instead of prompting
        /// (needed when standard input is not a terminal).
        #[arg(long)]
        password_stdin: bool,
        /// Accept a password the strength estimate calls weak (tests, imports of known
        /// passwords). The xzibit can be attacked offline by anyone who asks for it, so
        /// a weak password is a weak account.
        #[arg(long)]
        allow_weak_password: bool,
    },
    /// Import an account made by the 2016 tools (its public.key and xzibit files).
    ///
    /// Example: cmtpd user import bob --public-key bob/public.key --xzibit bob/bob.xzibit
    Import {
        /// Account name.
        name: String,
        /// Raw 32-byte Ed25519 public key file.
        #[arg(long, value_name = "FILE")]
        public_key: PathBuf,
        /// The xzibit file (version 1, 156 bytes, or version 2).
        #[arg(long, value_name = "FILE")]
        xzibit: PathBuf,
    },
    /// List accounts.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove an account (its key is no longer handed out; stored mail stays).
    Remove {
        /// Account name.
        name: String,
    },
}

/// `cmtpd store ...`
#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Copy everything from one backend into another, then verify the copy byte for byte.
    ///
    /// The source is the embedded store of the data directory (--data-dir, or the
    /// configuration's); the target is the PostgreSQL database of `[store] url` or
    /// $CMTPD_DATABASE_URL, already migrated (`cmtpd db migrate`) and empty.
    ///
    /// Copied: users (keys, xzibits, creation times, OPAQUE logins), every mailbox's
    /// messages under their own ids with their receive times and metadata (the relay
    /// queue too), each mailbox's id sequence, pinned peer keys and TLS marks, the relay
    /// ids of the dedup window. Message bytes are streamed: memory stays small whatever
    /// a message's size. Afterwards both stores are read again and compared (metadata,
    /// and a BLAKE2b-256 of each message's bytes on each side); any difference fails
    /// the command.
    ///
    /// Stop the server first: the copy takes the embedded store's lock, and refuses
    /// while a server holds it. The data directory is left as it was (a way back).
    ///
    /// Steps: stop cmtpd; `CMTPD_DATABASE_URL=postgres://cmtp@db/cmtp cmtpd db migrate`;
    /// `CMTPD_DATABASE_URL=... cmtpd store copy --from embedded --to postgres`; set
    /// `[store] backend = "postgres"` in cmtpd.toml; start cmtpd.
    Copy(CopyArgs),
    /// Compare two stores as `store copy` does after copying, without writing anything
    /// (e.g. before switching over, when the source has not changed since the copy).
    Verify(CopyArgs),
}

/// A backend named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendName {
    /// The embedded store of the data directory.
    Embedded,
    /// The PostgreSQL database of `[store] url` or $CMTPD_DATABASE_URL.
    Postgres,
}

/// `store copy | verify` options.
#[derive(Debug, Clone, Args)]
pub struct CopyArgs {
    /// Where the installation is now (only `embedded` is supported as a source).
    #[arg(long, value_enum)]
    pub from: BackendName,
    /// Where it goes (only `postgres` is supported as a target).
    #[arg(long, value_enum)]
    pub to: BackendName,
}

/// `cmtpd db ...`
#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Create or upgrade the database schema (`[store] url` or `$CMTPD_DATABASE_URL`) to
    /// the version this cmtpd needs. Idempotent; several nodes may run it at once.
    Migrate,
}

/// `cmtpd key ...`
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Print the server key's fingerprint (the one `cmtp` shows and pins, to compare by
    /// eye or over the phone) and the Ed25519 public key in lower-case hex. Never creates a
    /// key: `serve` does that on first start.
    Show {
        /// Print JSON: `{"fingerprint": "...", "public_key": "<hex>"}`.
        #[arg(long)]
        json: bool,
    },
}

/// `cmtpd mailbox ...`
#[derive(Debug, Subcommand)]
pub enum MailboxCommand {
    /// Message and byte counts, per mailbox and for the whole store.
    Stats {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List a mailbox's messages (default: the server's own, postmaster).
    List {
        /// Account whose mailbox to list; omit for the server's own.
        account: Option<String>,
        /// Print JSON (an array of objects) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one message of the server's mailbox (version 1 is opened with the server key).
    Show {
        /// Message id (from `mailbox list`).
        id: u64,
        /// Mailbox the message is in (default: the server's own). Only the server's
        /// own mail can be opened; other mailboxes show the envelope only.
        #[arg(long)]
        account: Option<String>,
    },
}

/// `cmtpd config ...`
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the example configuration with every key and its default.
    Default,
    /// Load and validate the configuration (file, environment and flags, as `serve`
    /// would), then print the effective configuration as TOML; exit 1 with the error when
    /// it is not usable.
    Check,
}

impl Cli {
    /// The configuration overrides given on the command line.
    pub fn overrides(&self) -> Overrides {
        let mut o = Overrides {
            data_dir: self.global.data_dir.clone(),
            domains: self.global.domains.clone(),
            log_format: self.global.log_format,
            ..Default::default()
        };
        if let Command::Serve(s) = &self.command {
            o.listen = s.listen.clone();
            o.metrics_listen = s.metrics_listen;
            o.no_metrics = s.no_metrics;
            o.routes = s.routes.clone();
            o.dns = s.dns;
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn each_cause_is_printed_once() {
        let io = std::io::Error::from_raw_os_error(98);
        let text = io.to_string();
        let e = anyhow::Error::new(crate::ServerError::Bind {
            addr: "127.0.0.1:9".parse().unwrap(),
            source: io,
        })
        .context("starting the server");
        let shown = render_error(&e);
        assert_eq!(shown.matches(&text).count(), 1, "{shown}");
        assert!(shown.starts_with("starting the server: cannot listen on 127.0.0.1:9: "));
    }

    #[test]
    fn global_args_after_subcommand() {
        let c = Cli::try_parse_from([
            "cmtpd",
            "user",
            "list",
            "--data-dir",
            "/tmp/x",
            "--domain",
            "a.example",
        ])
        .unwrap();
        assert_eq!(c.global.data_dir, Some(PathBuf::from("/tmp/x")));
        assert_eq!(c.overrides().domains, vec!["a.example".to_owned()]);
    }
}
