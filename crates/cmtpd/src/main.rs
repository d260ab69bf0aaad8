//! The `cmtpd` binary: parses the command line and runs `serve` or an admin subcommand.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Parser;
use cmtp_store::EmbeddedStore;
use cmtp_store_pg::{PgOptions, PgStore};
use cmtpd::cli::{
    BackendName, Cli, Command, ConfigCommand, CopyArgs, DbCommand, DomainCommand, KeyCommand,
    LOCAL_CONFIG, MailboxCommand, QueueCommand, ServeArgs, StoreCommand, UserCommand, render_error,
};
use cmtpd::config::{Config, EXAMPLE_CONFIG, LogFormat, Overrides, StoreBackend};
use cmtpd::{Backend, Server, admin};
use tracing_subscriber::EnvFilter;

/// How often the trimmer runs. A spike's memory is back with the OS within this period
/// after it was freed.
#[cfg(all(feature = "malloc-trim", target_os = "linux", target_env = "gnu"))]
const TRIM_PERIOD: std::time::Duration = std::time::Duration::from_secs(2);

/// glibc malloc keeps freed memory in its arenas (one per thread, up to 8 per core) and
/// returns only the top of the main heap by itself: after 4,000 stalled uploads closed,
/// 390 of 614 MiB stayed resident. `malloc_trim(0)` hands every arena's free pages back
/// (measured against jemalloc and mimalloc in docs/performance.md "Memory after a spike").
#[cfg(all(feature = "malloc-trim", target_os = "linux", target_env = "gnu"))]
fn start_malloc_trim() {
    let spawned = std::thread::Builder::new()
        .name("malloc-trim".into())
        .spawn(|| {
            loop {
                // A period, not synchronisation.
                std::thread::sleep(TRIM_PERIOD);
                // SAFETY: malloc_trim has no preconditions; it takes the arenas' locks.
                unsafe { libc::malloc_trim(0) };
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "malloc-trim thread not started: freed memory stays with the allocator");
    }
}

/// Caps added to every log filter, whatever `RUST_LOG` says: tokio-postgres logs each
/// statement with its parameters at debug level, and those are message bodies, xzibits
/// and keys. (A directive for the same target replaces the operator's; the module's own
/// target is capped too, since a more specific directive would win.)
const LOG_CAPS: [&str; 2] = ["tokio_postgres=info", "tokio_postgres::query=info"];

fn init_logging(format: LogFormat) {
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    for cap in LOG_CAPS {
        filter = filter.add_directive(cap.parse().expect("a valid log directive"));
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // `cmtpd man | head`: the reader left; nothing to report.
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cmtpd: {}", render_error(&e));
            ExitCode::FAILURE
        }
    }
}

/// The configuration file in use: `--config` (or `$CMTPD_CONFIG`, which clap reads into
/// the same flag), else `./cmtpd.toml` when it exists, else none (the defaults).
fn config_path(cli: &Cli) -> Option<PathBuf> {
    cli.global.config.clone().or_else(|| {
        let local = PathBuf::from(LOCAL_CONFIG);
        local.is_file().then_some(local)
    })
}

fn run(cli: Cli) -> Result<()> {
    // Commands that only print something fixed: no configuration, no data directory.
    match cli.command {
        Command::Config(ConfigCommand::Default) => {
            print!("{EXAMPLE_CONFIG}");
            return Ok(());
        }
        Command::Completions { shell } => {
            std::io::stdout().write_all(&Cli::completions(shell))?;
            return Ok(());
        }
        Command::Man => {
            std::io::stdout().write_all(&Cli::man_page()?)?;
            return Ok(());
        }
        _ => {}
    }
    let path = config_path(&cli);
    let overrides = cli.overrides();
    let cfg = Config::load(path.as_deref(), &overrides).context("loading the configuration")?;
    if let Command::Config(ConfigCommand::Check) = cli.command {
        let from = path.as_ref().map_or_else(
            || "built-in defaults (no configuration file)".to_owned(),
            |p| p.display().to_string(),
        );
        let mut shown = cfg.clone();
        if let Some(url) = &mut shown.store.url {
            *url = cmtpd::config::redacted_url(url);
        }
        let text = toml::to_string(&shown).context("printing the configuration")?;
        print!("# configuration: {from}\n# valid; effective values:\n{text}");
        return Ok(());
    }
    init_logging(cfg.log_format);
    let data = cfg.data_dir.clone();
    match cli.command {
        Command::Serve(args) => return serve(cfg, path, overrides, args),
        Command::Db(DbCommand::Migrate) => return db_migrate(&cfg),
        Command::Init => {
            let out = admin::init(&data)?;
            print!("{out}");
            return Ok(());
        }
        // Nothing but `serve` and `init` may create a data directory: an admin command
        // run from the wrong folder must not report success into a directory no server
        // uses.
        _ => admin::require_data_dir(&data, path.as_deref())?,
    }
    if let Command::Key(KeyCommand::Show { json }) = cli.command {
        // The key is a file of the data directory on every backend.
        print!("{}", admin::key_show(&data, json)?);
        return Ok(());
    }
    if let Command::Store(StoreCommand::Copy(args)) = &cli.command {
        return store_copy(&cfg, args);
    }
    if let Command::Store(StoreCommand::Verify(args)) = &cli.command {
        return store_verify(&cfg, args);
    }
    // One store for the whole command, whatever the backend: the admin functions are
    // generic over it.
    let out = match cfg.store.backend {
        StoreBackend::Embedded => admin_command(&admin::Embedded::new(&data), &data, cli.command)?,
        StoreBackend::Postgres => admin_command(&open_postgres(&cfg)?, &data, cli.command)?,
    };
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(out.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

/// The configured PostgreSQL database, for an admin command: a small pool, and a clear
/// error when it cannot be reached or has no (or another) schema.
fn open_postgres(cfg: &Config) -> Result<PgStore> {
    let url = cfg.store.database_url().with_context(|| {
        format!(
            "no database: set [store] url or {}",
            cmtpd::config::DATABASE_URL_ENV
        )
    })?;
    let opts = PgOptions {
        pool_size: 2,
        ..PgOptions::default()
    };
    PgStore::connect(&url, opts).with_context(|| {
        format!(
            "cannot open the PostgreSQL store at {}",
            cmtpd::config::redacted_url(&url)
        )
    })
}

/// The two stores of `store copy | verify`: the data directory's embedded store (opened
/// as the writer, so no server runs on it meanwhile) and the PostgreSQL database.
fn copy_stores(cfg: &Config, args: &CopyArgs) -> Result<(EmbeddedStore, PgStore)> {
    if (args.from, args.to) != (BackendName::Embedded, BackendName::Postgres) {
        bail!(
            "only --from embedded --to postgres is supported; to back up or move a \
             PostgreSQL installation use pg_dump / pg_restore"
        );
    }
    let src = admin::copy::open_source(&cfg.data_dir)?;
    let dst = open_postgres(cfg)?;
    Ok((src, dst))
}

/// `store copy`: copies, then verifies; fails if anything differs.
fn store_copy(cfg: &Config, args: &CopyArgs) -> Result<()> {
    let (src, dst) = copy_stores(cfg, args)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let t0 = std::time::Instant::now();
    let r = rt
        .block_on(admin::copy::copy(&src, &dst))
        .context("copying into the PostgreSQL store")?;
    println!(
        "copied {}, {} with an OPAQUE login; {}; {} in {}; {}; {} ({:.1} s)",
        admin::format::count(r.users, "user", "users"),
        r.opaque_logins,
        admin::format::count(r.peers, "peer record", "peer records"),
        admin::format::count(r.messages, "message", "messages"),
        admin::format::count(r.mailboxes, "mailbox", "mailboxes"),
        admin::format::size(r.bytes),
        admin::format::count(r.relay_ids, "relay id", "relay ids"),
        t0.elapsed().as_secs_f64()
    );
    verify_and_report(&rt, &src, &dst)
}

/// `store verify`: compares without writing.
fn store_verify(cfg: &Config, args: &CopyArgs) -> Result<()> {
    let (src, dst) = copy_stores(cfg, args)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    verify_and_report(&rt, &src, &dst)
}

/// Compares the stores, prints the result; fails if anything differs.
fn verify_and_report(
    rt: &tokio::runtime::Runtime,
    src: &EmbeddedStore,
    dst: &PgStore,
) -> Result<()> {
    let t0 = std::time::Instant::now();
    let v = rt
        .block_on(admin::copy::verify(src, dst))
        .context("verifying the copy")?;
    if v.problems.is_empty() {
        println!(
            "verified: {}, {}, {} ({}) equal in both stores (metadata, and BLAKE2b-256 of every message's bytes) ({:.1} s)",
            admin::format::count(v.users, "user", "users"),
            admin::format::count(v.peers, "peer record", "peer records"),
            admin::format::count(v.messages, "message", "messages"),
            admin::format::size(v.bytes),
            t0.elapsed().as_secs_f64()
        );
        return Ok(());
    }
    for p in &v.problems {
        println!("DIFFERS: {p}");
    }
    bail!(
        "verification failed: {} between the stores (listed above)",
        admin::format::count(v.problems.len() as u64, "difference", "differences")
    )
}

/// Runs one admin subcommand on `st`; returns the text to print.
fn admin_command<S: admin::AdminStores>(st: &S, data: &Path, command: Command) -> Result<String> {
    let rt = || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")
    };
    Ok(match command {
        Command::Serve(_)
        | Command::Init
        | Command::Config(_)
        | Command::Db(_)
        | Command::Key(_)
        | Command::Store(_)
        | Command::Completions { .. }
        | Command::Man => unreachable!("handled by the caller"),
        Command::User(UserCommand::Add {
            name,
            password_stdin,
            allow_weak_password,
        }) => {
            let pw = read_password(password_stdin)?;
            let added = admin::user_add(st, data, &name, pw.as_bytes(), allow_weak_password)
                .with_context(|| format!("adding user {name:?}"))?;
            format!("added {} {}\n", added.name, added.key.to_hex())
        }
        Command::User(UserCommand::Import {
            name,
            public_key,
            xzibit,
        }) => {
            let stored = admin::user_import(st, &name, &public_key, &xzibit)
                .with_context(|| format!("importing user {name:?}"))?;
            format!("imported {stored}\n")
        }
        Command::User(UserCommand::List { json }) => admin::user_list(st.users()?, json)?,
        Command::User(UserCommand::Remove { name }) => {
            let removed = admin::user_remove(st.users()?, &name)?;
            format!("removed {removed}\n")
        }
        Command::Mailbox(MailboxCommand::Stats { json }) => admin::mailbox_stats(st, json)?,
        Command::Mailbox(MailboxCommand::List { account, json }) => {
            rt()?.block_on(admin::mailbox_list(st, account.as_deref(), json))?
        }
        Command::Mailbox(MailboxCommand::Show { id, account }) => {
            rt()?.block_on(admin::mailbox_show(st, data, account.as_deref(), id))?
        }
        Command::Queue(QueueCommand::List { json }) => {
            rt()?.block_on(admin::queue::list(st.mail()?, json))?
        }
        Command::Queue(QueueCommand::Show { id }) => {
            rt()?.block_on(admin::queue::show(st.mail()?, id))?
        }
        Command::Queue(QueueCommand::Retry { id, all }) => {
            let target = if all { None } else { id };
            rt()?.block_on(admin::queue::retry(st, data, target))?
        }
        Command::Queue(QueueCommand::Drop { id }) => {
            rt()?.block_on(admin::queue::drop(st, data, id))?
        }
        Command::Domain(DomainCommand::Keys { json }) => admin::domain::keys(st.peers()?, json)?,
        Command::Domain(DomainCommand::Trust { domain }) => {
            admin::domain::trust(st.peers()?, &domain)?
        }
    })
}

fn read_password(from_stdin: bool) -> Result<zeroize::Zeroizing<String>> {
    if from_stdin {
        let pw = admin::password_from_reader(std::io::stdin().lock())
            .context("reading the password from standard input")?;
        return Ok(pw);
    }
    if !std::io::stdin().is_terminal() {
        bail!(
            "standard input is not a terminal, so there is nobody to ask for the password: \
             pass it on standard input with --password-stdin"
        );
    }
    // Echo goes off before each prompt is shown (typed-ahead characters never echo).
    let a = cmtp_client::terminal::prompt_password("Password: ")?;
    let b = cmtp_client::terminal::prompt_password("Password (again): ")?;
    if a != b {
        bail!("the passwords differ");
    }
    Ok(a)
}

fn serve(cfg: Config, path: Option<PathBuf>, overrides: Overrides, args: ServeArgs) -> Result<()> {
    #[cfg(all(feature = "malloc-trim", target_os = "linux", target_env = "gnu"))]
    start_malloc_trim();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let shutdown = shutdown_signal()?;
        // Installed before the ready file is written: SIGHUP's default action is to
        // terminate, so a reload asked for as soon as the server is ready must find it.
        let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("installing the SIGHUP handler")?;
        match cfg.store.backend {
            StoreBackend::Embedded => {
                let server = Server::bind(cfg.clone()).context("starting the server")?;
                run_server(server, cfg, path, overrides, args, shutdown, hup).await
            }
            StoreBackend::Postgres => {
                let server = Server::bind_postgres(cfg.clone()).context("starting the server")?;
                run_server(server, cfg, path, overrides, args, shutdown, hup).await
            }
        }
    })
}

/// `cmtpd db migrate`: the schema of the configured PostgreSQL database.
fn db_migrate(cfg: &Config) -> Result<()> {
    let url = cfg.store.database_url().with_context(|| {
        format!(
            "no database: set [store] url or {}",
            cmtpd::config::DATABASE_URL_ENV
        )
    })?;
    let r = cmtp_store_pg::migrate(&url).context("migrating the database")?;
    if r.from == r.to {
        println!("database schema already at version {}", r.to);
    } else {
        println!(
            "database schema migrated from version {} to {}",
            r.from, r.to
        );
    }
    Ok(())
}

/// Serves until a shutdown signal, whatever the backend.
async fn run_server<S: Backend>(
    server: Server<S>,
    cfg: Config,
    path: Option<PathBuf>,
    overrides: Overrides,
    args: ServeArgs,
    shutdown: impl std::future::Future<Output = ()>,
    mut hup: tokio::signal::unix::Signal,
) -> Result<()> {
    let domains = cfg.domains.join(", ");
    for a in server.local_addrs() {
        tracing::info!(
            addr = %a,
            domain = cfg.primary_domain(),
            domains = %domains,
            "CMTP listening; the local domains share one account space (alice@ any of them is the same account)"
        );
    }
    if let Some(m) = server.metrics_addr() {
        tracing::info!(addr = %m, "metrics listening");
    }
    tracing::info!(
        public_key = %server.shared().signer.public().to_hex(),
        data_dir = %cfg.data_dir.display(),
        store = ?cfg.store.backend,
        "server ready"
    );
    if let Some(p) = &args.ready_file {
        server.write_ready_file(p)?;
    }
    let shared = server.shared();
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            reload(&shared, path.as_deref(), &overrides);
        }
    });
    server.run(shutdown).await;
    Ok(())
}

/// SIGHUP: reads the configuration again (same file, same flags) and applies what can
/// change live; a file that does not load leaves the running configuration as it was.
fn reload<S: Backend>(shared: &cmtpd::Shared<S>, path: Option<&Path>, o: &Overrides) {
    let from = path.map_or_else(|| "defaults".to_owned(), |p| p.display().to_string());
    tracing::info!(config = %from, "SIGHUP received: reloading the configuration");
    match Config::load(path, o) {
        Ok(cfg) => {
            let kept = shared.reload(cfg);
            if kept.is_empty() {
                tracing::info!("configuration reloaded");
            } else {
                tracing::warn!(
                    needs_restart = %kept.join(", "),
                    "configuration reloaded; these settings changed but need a restart (the running values stay)"
                );
            }
        }
        Err(e) => {
            let e = anyhow::Error::from(e);
            tracing::error!(
                error = %render_error(&e),
                "configuration not reloaded: the running configuration stays in force"
            );
        }
    }
}

/// Installs the SIGTERM/SIGINT handlers now (before the ready file is written, so a
/// signal sent as soon as the server is ready is never lost) and resolves on either.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    })
}
