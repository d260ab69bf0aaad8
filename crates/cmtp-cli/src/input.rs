//! Reading the password and the message text.

use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::Path;

use anyhow::{Context, Result, bail};
use zeroize::Zeroizing;

/// Environment variable holding the password (for scripts; prefer --password-stdin).
pub const PASSWORD_ENV: &str = "CMTP_PASSWORD";

/// The password: the first line of standard input with `--password-stdin`, else
/// `$CMTP_PASSWORD`, else a no-echo prompt on the terminal.
pub fn password(from_stdin: bool, prompt: &str) -> Result<Zeroizing<String>> {
    if from_stdin {
        let mut line = Zeroizing::new(String::new());
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the password from standard input")?;
        // Strip only the line end: spaces are part of a password.
        let trimmed = line.strip_suffix('\n').unwrap_or(&line);
        let trimmed = trimmed.strip_suffix('\r').unwrap_or(trimmed);
        return Ok(Zeroizing::new(trimmed.to_owned()));
    }
    if let Ok(p) = std::env::var(PASSWORD_ENV) {
        return Ok(Zeroizing::new(p));
    }
    if !std::io::stdin().is_terminal() && !std::io::stderr().is_terminal() {
        bail!("a password is needed: use --password-stdin or set {PASSWORD_ENV}");
    }
    cmtp_client::terminal::prompt_password(prompt)
        .context("reading the password from the terminal (use --password-stdin or CMTP_PASSWORD)")
}

/// The least zxcvbn score (0–4) of a new password, as `cmtpd user add` asks: the
/// server's stored xzibit can still be attacked offline by whoever steals its database.
pub const MIN_PASSWORD_SCORE: u8 = 3;

/// A new password: the next line of standard input with `--password-stdin`, else asked
/// twice on the terminal (never from the environment, which holds the current one).
pub fn new_password(from_stdin: bool) -> Result<Zeroizing<String>> {
    if from_stdin {
        return password(true, "");
    }
    if !std::io::stdin().is_terminal() && !std::io::stderr().is_terminal() {
        bail!("a new password is needed: use --password-stdin (second line)");
    }
    let a = cmtp_client::terminal::prompt_password("New password: ")
        .context("reading the new password from the terminal")?;
    let b = cmtp_client::terminal::prompt_password("New password again: ")
        .context("reading the new password from the terminal")?;
    if *a != *b {
        bail!("the two new passwords differ");
    }
    Ok(a)
}

/// Refuses a password zxcvbn scores below [`MIN_PASSWORD_SCORE`], with its advice.
pub fn check_strength(password: &str, account: &str) -> Result<()> {
    if password.is_empty() {
        bail!("the new password is empty");
    }
    let est = zxcvbn::zxcvbn(password, &[account]);
    let score = u8::from(est.score());
    if score >= MIN_PASSWORD_SCORE {
        return Ok(());
    }
    let mut advice = Vec::new();
    if let Some(f) = est.feedback() {
        if let Some(w) = f.warning() {
            advice.push(w.to_string());
        }
        advice.extend(f.suggestions().iter().map(ToString::to_string));
    }
    bail!(
        "the new password is too weak (strength {score} of 4, at least {MIN_PASSWORD_SCORE} \
         needed){}; use --allow-weak-password to keep it anyway",
        if advice.is_empty() {
            String::new()
        } else {
            format!(": {}", advice.join(" "))
        }
    )
}

/// The message text: `--body-file` (`-` = standard input), else standard input when it
/// is not a terminal, else an editor.
pub fn body(file: Option<&Path>) -> Result<String> {
    match file {
        Some(p) if p == Path::new("-") => read_stdin(),
        Some(p) => {
            let b = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
            String::from_utf8(b).with_context(|| format!("{} is not UTF-8 text", p.display()))
        }
        None if !std::io::stdin().is_terminal() => read_stdin(),
        None => {
            let text = editor("")?;
            if text.trim().is_empty() {
                bail!("empty message; nothing sent");
            }
            Ok(text)
        }
    }
}

/// The text of a reply or a forward: what [`body`] gives, followed by `tail` (the quote
/// or the forwarded message) after a blank line; on a terminal without --body-file,
/// an editor opened on a blank line and `tail`. An unchanged draft is refused unless
/// `unchanged_ok` (a forward needs no note).
pub fn body_with(file: Option<&Path>, tail: &str, unchanged_ok: bool) -> Result<String> {
    if file.is_none() && std::io::stdin().is_terminal() {
        let template = format!("\n\n{tail}");
        let text = editor(&template)?;
        if text.trim().is_empty() || (!unchanged_ok && text == template) {
            bail!("nothing written; nothing sent");
        }
        return Ok(text);
    }
    let text = body(file)?;
    Ok(if text.trim().is_empty() {
        tail.to_owned()
    } else {
        let sep = if text.ends_with("\n\n") {
            ""
        } else if text.ends_with('\n') {
            "\n"
        } else {
            "\n\n"
        };
        format!("{text}{sep}{tail}")
    })
}

fn read_stdin() -> Result<String> {
    let mut s = String::new();
    std::io::stdin()
        .lock()
        .read_to_string(&mut s)
        .context("reading the message text from standard input (must be UTF-8)")?;
    Ok(s)
}

/// Runs `$VISUAL`, else `$EDITOR`, else `vi` on a private temporary file holding
/// `initial`, and returns what the file holds afterwards.
fn editor(initial: &str) -> Result<String> {
    let ed = std::env::var("VISUAL")
        .or_else(|_| std::env::var("EDITOR"))
        .unwrap_or_else(|_| "vi".into());
    let path = std::env::temp_dir().join(format!(
        "cmtp-draft-{}-{}.txt",
        std::process::id(),
        cmtp_client::unix_now()
    ));
    {
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            o.mode(0o600);
        }
        let mut f = o
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        if let Err(e) = f.write_all(initial.as_bytes()) {
            let _ = std::fs::remove_file(&path);
            return Err(e).with_context(|| format!("writing {}", path.display()));
        }
    }
    // The editor command may carry arguments ("code --wait"): let the shell split it.
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{ed} \"$1\""))
        .arg("cmtp-editor")
        .arg(&path)
        .status()
        .with_context(|| format!("running the editor {ed:?}"));
    let text = std::fs::read_to_string(&path);
    let _ = std::fs::remove_file(&path);
    let status = status?;
    if !status.success() {
        bail!("the editor {ed:?} failed ({status}); nothing sent");
    }
    text.context("reading the draft back")
}
