//! Test support: runs the real `cmtpd` binary on 127.0.0.1 (port 0, `--ready-file`),
//! and a small blocking client that checks replies byte for byte and verifies their
//! signatures with the server key.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cmtp_crypto::{KeyPair, PublicKey, Signature, Xzibit};
use cmtp_store::{FsUsers, UserRecord, UserStore};

/// Read timeout of test clients: a guard against hangs (a test fails instead), never a
/// synchronisation device.
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_cmtpd")
}

/// Polls `cond` until true or the deadline (then panics with `what`).
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A running server.
pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub data: PathBuf,
    pub addr: SocketAddr,
    pub metrics: SocketAddr,
    pub key: PublicKey,
    pub child: Option<Child>,
    pub config: Option<PathBuf>,
}

/// Options of a test server.
#[derive(Default, Clone)]
pub struct Opts {
    /// Extra TOML configuration.
    pub config: String,
    /// Extra `serve` arguments.
    pub args: Vec<String>,
    /// Bind to this CMTP address instead of port 0.
    pub listen: Option<SocketAddr>,
}

impl TestServer {
    pub fn start() -> TestServer {
        Self::start_with(Opts::default())
    }

    pub fn start_with(opts: Opts) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let config = if opts.config.is_empty() {
            None
        } else {
            let p = dir.path().join("cmtpd.toml");
            std::fs::write(&p, &opts.config).unwrap();
            Some(p)
        };
        let mut s = TestServer {
            dir,
            data,
            addr: "127.0.0.1:0".parse().unwrap(),
            metrics: "127.0.0.1:0".parse().unwrap(),
            key: PublicKey::from_array([0; 32]),
            child: None,
            config,
        };
        s.spawn(opts.listen, &opts.args);
        s
    }

    /// Starts (or restarts) the process on the same data directory.
    pub fn spawn(&mut self, listen: Option<SocketAddr>, extra: &[String]) {
        let ready = self.dir.path().join("ready");
        let _ = std::fs::remove_file(&ready);
        let listen = listen.map_or_else(|| "127.0.0.1:0".to_owned(), |a| a.to_string());
        let mut cmd = Command::new(bin());
        cmd.arg("--data-dir").arg(&self.data);
        if let Some(c) = &self.config {
            cmd.arg("--config").arg(c);
        }
        cmd.args([
            "serve",
            "--listen",
            &listen,
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .arg("--ready-file")
        .arg(&ready)
        .args(extra)
        .env(
            "RUST_LOG",
            std::env::var("CMTPD_TEST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("spawn cmtpd");
        wait_until("the ready file", Duration::from_secs(30), || {
            if let Ok(Some(st)) = child.try_wait() {
                panic!("cmtpd exited early: {st}");
            }
            ready.exists()
        });
        let text = std::fs::read_to_string(&ready).unwrap();
        for line in text.lines() {
            let (k, v) = line.split_once(' ').unwrap();
            match k {
                "cmtp" => self.addr = v.parse().unwrap(),
                "metrics" => self.metrics = v.parse().unwrap(),
                _ => {}
            }
        }
        self.key = server_public_key(&self.data);
        self.child = Some(child);
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    /// Waits for the process to exit (deadline: a hang fails the test).
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let child = self.child.as_mut().unwrap();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                self.child = None;
                return st;
            }
            assert!(Instant::now() < deadline, "cmtpd did not exit in time");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn client(&self) -> Client {
        Client::connect(self.addr, self.key)
    }

    /// Adds a user with a cheap-KDF v2 xzibit straight into the data directory.
    pub fn add_user(&self, name: &str, password: &str) -> KeyPair {
        add_user(&self.data, name, password)
    }

    /// `GET path` on the metrics endpoint: (status line, body).
    pub fn http_get(&self, path: &str) -> (String, String) {
        let mut s = TcpStream::connect(self.metrics).unwrap();
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        write!(s, "GET {path} HTTP/1.0\r\n\r\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        (head.lines().next().unwrap().to_owned(), body.to_owned())
    }

    /// One metric's value (the exact series name, labels included).
    pub fn metric(&self, series: &str) -> i64 {
        let (_, body) = self.http_get("/metrics");
        body.lines()
            .find_map(|l| {
                l.strip_prefix(series)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| panic!("no metric {series}"))
    }

    /// Runs an admin subcommand on this server's data directory.
    pub fn admin(&self, args: &[&str], stdin: Option<&str>) -> std::process::Output {
        admin(&self.data, args, stdin)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn admin(data: &Path, args: &[&str], stdin: Option<&str>) -> std::process::Output {
    let mut cmd = Command::new(bin());
    cmd.arg("--data-dir").arg(data).args(args);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    {
        let mut input = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            input.write_all(s.as_bytes()).unwrap();
        }
    }
    child.wait_with_output().unwrap()
}

pub fn server_public_key(data: &Path) -> PublicKey {
    let sk = std::fs::read(data.join("server.key")).unwrap();
    assert_eq!(sk.len(), 64);
    PublicKey::from_bytes(&sk[32..]).unwrap()
}

pub fn add_user(data: &Path, name: &str, password: &str) -> KeyPair {
    let kp = KeyPair::generate().unwrap();
    let xz = Xzibit::create_v2_with_limits(&kp, password.as_bytes(), 1, 8192).unwrap();
    FsUsers::open(data)
        .unwrap()
        .add(&UserRecord {
            name: name.to_owned(),
            public_key: *kp.public().as_bytes(),
            xzibit: xz.into_bytes(),
            created: 0,
        })
        .unwrap();
    kp
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Builds a message (spec §6).
pub fn message(
    version: u32,
    dest: (&str, &str),
    src: (&str, &str),
    log: &[u8],
    body: &[u8],
    atts: &[&[u8]],
) -> Vec<u8> {
    let env = cmtp_proto::Envelope::new(version, dest.0, dest.1, src.0, src.1);
    let mut out = Vec::new();
    cmtp_proto::message::encode_message(&env, log, body, atts, &mut out).unwrap();
    out
}

/// A blocking test client that checks every reply's bytes and signature.
pub struct Client {
    pub s: TcpStream,
    pub key: PublicKey,
}

impl Client {
    pub fn connect(addr: SocketAddr, key: PublicKey) -> Client {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        s.set_nodelay(true).unwrap();
        let mut c = Client { s, key };
        let g = c.read_line();
        assert!(
            g.starts_with("220 ") && g.ends_with(" CMTP/1 ready\r\n"),
            "{g:?}"
        );
        c
    }

    /// Connects without reading the greeting.
    pub fn connect_raw(addr: SocketAddr, key: PublicKey) -> Client {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        Client { s, key }
    }

    pub fn send(&mut self, b: &[u8]) {
        self.s.write_all(b).unwrap();
    }

    pub fn read_n(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0; n];
        self.s.read_exact(&mut v).unwrap();
        v
    }

    pub fn read_line(&mut self) -> String {
        let mut v = Vec::new();
        let mut b = [0u8; 1];
        while !v.ends_with(b"\n") {
            self.s.read_exact(&mut b).unwrap();
            v.push(b[0]);
            assert!(v.len() < 600);
        }
        String::from_utf8(v).unwrap()
    }

    pub fn verify(&self, msg: &[u8], sig: &[u8]) {
        self.key
            .verify(msg, &Signature::from_bytes(sig).unwrap())
            .unwrap_or_else(|_| panic!("bad server signature over {msg:?}"));
    }

    /// Reads a general reply `TEXT NUL sig NUL` and returns TEXT (signature checked).
    pub fn general(&mut self) -> String {
        self.general_from(Vec::new())
    }

    fn general_from(&mut self, mut text: Vec<u8>) -> String {
        loop {
            let b = self.read_n(1)[0];
            if b == 0 {
                break;
            }
            text.push(b);
            assert!(text.len() <= 200, "not a general reply: {text:?}");
        }
        let sig = self.read_n(65);
        assert_eq!(sig[64], 0);
        self.verify(&text, &sig[..64]);
        String::from_utf8(text).unwrap()
    }

    /// Reads a version-0 reply `u32 0 | TEXT NUL | sig NUL` and returns TEXT.
    pub fn v0(&mut self) -> String {
        assert_eq!(self.read_n(4), [0, 0, 0, 0], "not a version-0 reply");
        self.general()
    }

    /// Reads a key reply (102 bytes), returns the key (signature checked).
    pub fn key_reply(&mut self) -> [u8; 32] {
        let r = self.read_n(102);
        assert_eq!(&r[..4], &[0, 0, 0, 1]);
        assert_eq!(r[36], 0);
        assert_eq!(r[101], 0);
        self.verify(&r[4..36], &r[37..101]);
        r[4..36].try_into().unwrap()
    }

    /// Reads a key reply or KEYNOTAVAILABLE.
    pub fn key_or_none(&mut self) -> Option<[u8; 32]> {
        let head = self.read_n(4);
        if head == [0, 0, 0, 0] {
            assert_eq!(self.general(), "KEYNOTAVAILABLE");
            return None;
        }
        assert_eq!(head, [0, 0, 0, 1]);
        let r = self.read_n(98);
        self.verify(&r[..32], &r[33..97]);
        Some(r[..32].try_into().unwrap())
    }

    /// LOGIN reply: the xzibit, or None for the version-0 FAILURE.
    pub fn login_reply(&mut self) -> Option<Vec<u8>> {
        let v = self.read_n(4);
        if v == [0, 0, 0, 0] {
            assert_eq!(self.general(), "FAILURE");
            return None;
        }
        assert_eq!(v, [0, 0, 0, 1]);
        let len = u32::from_be_bytes(self.read_n(4).try_into().unwrap()) as usize;
        let x = self.read_n(len);
        let sig = self.read_n(64);
        self.verify(&x, &sig);
        Some(x)
    }

    /// Expects the peer to close (EOF) with no further bytes.
    pub fn expect_eof(&mut self) {
        let mut b = [0u8; 64];
        match self.s.read(&mut b) {
            Ok(0) => {}
            Ok(n) => panic!("expected EOF, got {:?}", &b[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("expected EOF, got {e}"),
        }
    }

    /// Sends `MAIL\0` + message and returns the reply (general or v0 text).
    pub fn mail(&mut self, msg: &[u8]) -> String {
        let mut w = b"MAIL\0".to_vec();
        w.extend_from_slice(msg);
        self.send(&w);
        self.status()
    }

    /// A general or version-0 reply (first byte tells).
    pub fn status(&mut self) -> String {
        let mut first = [0u8; 1];
        self.s.read_exact(&mut first).unwrap();
        if first[0] == 0 {
            assert_eq!(self.read_n(3), [0, 0, 0]);
            return format!("v0:{}", self.general());
        }
        self.general_from(vec![first[0]])
    }

    /// Sends a signed mailbox command for `user` and reads the reply: Ok(payload) after
    /// checking the reply signature, or Err(v0 text).
    pub fn mbox(
        &mut self,
        kind: cmtp_proto::MboxKind,
        mut req: cmtp_proto::MboxRequest,
        user_key: &KeyPair,
        domain: &str,
    ) -> Result<Vec<u8>, String> {
        let sig = user_key.sign(&req.signing_bytes(kind, domain));
        req.signature = *sig.as_bytes();
        let cmd = match kind {
            cmtp_proto::MboxKind::List => cmtp_proto::Command::MboxList(req.clone()),
            cmtp_proto::MboxKind::Fetch => cmtp_proto::Command::MboxFetch(req.clone()),
            cmtp_proto::MboxKind::Delete => cmtp_proto::Command::MboxDelete(req.clone()),
        };
        self.send(&cmd.to_bytes());
        self.mbox_reply(&req.signature)
    }

    pub fn mbox_reply(&mut self, req_sig: &[u8; 64]) -> Result<Vec<u8>, String> {
        let v = self.read_n(4);
        if v == [0, 0, 0, 0] {
            return Err(self.general());
        }
        assert_eq!(v, [0, 0, 0, 1]);
        let len = u64::from_be_bytes(self.read_n(8).try_into().unwrap()) as usize;
        let payload = self.read_n(len);
        let sig = self.read_n(64);
        let digest = cmtp_crypto::blake2b_256(&payload);
        self.verify(
            &cmtp_proto::mbox::reply_signing_bytes(req_sig, &digest),
            &sig,
        );
        Ok(payload)
    }
}
