//! A blocking raw-protocol client that checks every reply's bytes and verifies every
//! server signature with the server key.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use cmtp_crypto::{KeyPair, PublicKey, Signature};

use crate::fixtures::IO_TIMEOUT;

/// A blocking test client that checks every reply's bytes and signature.
pub struct Client {
    /// The connection (public for tests that write or read raw bytes).
    pub s: TcpStream,
    /// The server key every reply signature is verified with.
    pub key: PublicKey,
}

impl Client {
    /// Connects and checks the CMTP/1 greeting line.
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

    /// Writes `b` as is.
    pub fn send(&mut self, b: &[u8]) {
        self.s.write_all(b).unwrap();
    }

    /// Reads exactly `n` bytes.
    pub fn read_n(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0; n];
        self.s.read_exact(&mut v).unwrap();
        v
    }

    /// Reads one line (up to `\n`, at most 600 bytes).
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

    /// Asserts that `sig` is the server's signature over `msg`.
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

    /// Sends MAIL `n` times with message `m`, every one on the wire before the first
    /// reply is read (written from another thread, so a server that reads ahead cannot
    /// stall on a full socket), and returns the `n` replies in order.
    pub fn mail_pipelined(&mut self, m: &[u8], n: usize) -> Vec<String> {
        let mut w = Vec::with_capacity(n * (m.len() + 5));
        for _ in 0..n {
            w.extend_from_slice(b"MAIL\0");
            w.extend_from_slice(m);
        }
        let mut s = self.s.try_clone().expect("cloning the client socket");
        let writer = std::thread::spawn(move || s.write_all(&w).expect("writing the MAILs"));
        let replies = (0..n).map(|_| self.status()).collect();
        writer.join().expect("the writer thread");
        replies
    }

    /// The listing of `user`'s mailbox at `localhost` (a signed MBOXLIST), asserting
    /// that the server answered it.
    pub fn list_mailbox(&mut self, user: &str, key: &KeyPair) -> Vec<cmtp_proto::ListEntry> {
        let req = cmtp_proto::MboxRequest::list(user, crate::now());
        let payload = self
            .mbox(cmtp_proto::MboxKind::List, req, key, "localhost")
            .unwrap_or_else(|e| panic!("MBOXLIST of {user}: {e}"));
        cmtp_proto::mbox::decode_list(&payload, u32::MAX).expect("a mailbox listing")
    }

    /// Message `id` of `user`'s mailbox at `localhost`, whole (a signed MBOXFETCH),
    /// asserting that the server answered it.
    pub fn fetch_message(&mut self, user: &str, key: &KeyPair, id: u64) -> Vec<u8> {
        let req =
            cmtp_proto::MboxRequest::fetch(user, crate::now(), id, cmtp_proto::FetchPart::Full);
        self.mbox(cmtp_proto::MboxKind::Fetch, req, key, "localhost")
            .unwrap_or_else(|e| panic!("MBOXFETCH {id} of {user}: {e}"))
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

    /// Reads a mailbox reply to the request signed `req_sig`: Ok(payload) after
    /// checking the reply signature, or Err(v0 text).
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
