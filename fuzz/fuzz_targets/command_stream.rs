//! Parses commands from arbitrary bytes until an error or "need more", and checks that
//! feeding the same bytes in pieces (as a socket would) gives the same result.
#![no_main]

use cmtp_proto::command::{Command, CommandError};
use libfuzzer_sys::fuzz_target;

type Outcome = (Vec<(Command, usize)>, Result<(), CommandError>);

fn contiguous(buf: &[u8]) -> Outcome {
    let mut pos = 0;
    let mut cmds = Vec::new();
    loop {
        match Command::parse(&buf[pos..]) {
            Ok(Some((c, n))) => {
                assert!(n > 0 && pos + n <= buf.len(), "bad consumed count");
                // Everything except an SMTP verb re-encodes to the bytes it used.
                if !matches!(c, Command::Smtp(_)) {
                    assert_eq!(c.to_bytes(), &buf[pos..pos + n]);
                }
                cmds.push((c, n));
                pos += n;
            }
            Ok(None) => return (cmds, Ok(())),
            Err(e) => return (cmds, Err(e)),
        }
    }
}

fn split(buf: &[u8], step: usize) -> Outcome {
    let mut pos = 0;
    let mut end = 0;
    let mut cmds = Vec::new();
    while end < buf.len() {
        end = (end + step).min(buf.len());
        loop {
            match Command::parse(&buf[pos..end]) {
                Ok(Some((c, n))) => {
                    cmds.push((c, n));
                    pos += n;
                }
                Ok(None) => break,
                Err(e) => return (cmds, Err(e)),
            }
        }
    }
    (cmds, Ok(()))
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, buf)) = data.split_first() else {
        return;
    };
    let whole = contiguous(buf);
    let step = usize::from(seed % 17) + 1;
    assert_eq!(split(buf, step), whole);
});
