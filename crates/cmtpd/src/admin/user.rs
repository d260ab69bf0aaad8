//! `init` and the `user` subcommands: accounts are created under their canonical name
//! (docs/protocol.md §4) with a password the strength estimate accepts.

use std::fmt::Write as _;
use std::path::Path;

use cmtp_crypto::{KeyPair, PublicKey, Xzibit};
use cmtp_store::{UserRecord, UserStore};
use serde::Serialize;
use zeroize::Zeroizing;

use super::{AdminError, AdminStores, Result, format, read};
use crate::keys;

/// The least zxcvbn score (0–4) `user add` accepts: 3 is "safely unguessable: moderate
/// protection from offline slow-hash scenario", which is what an xzibit faces.
pub const MIN_PASSWORD_SCORE: u8 = 3;

/// `init`: creates the data directory (mode 0700) and the server key, as `serve` does on
/// first start. Returns the text to print.
pub fn init(data_dir: &Path) -> Result<String> {
    keys::ensure_data_dir(data_dir).map_err(|source| AdminError::Io {
        path: data_dir.display().to_string(),
        source,
    })?;
    let (kp, created) = keys::load_or_create(data_dir)?;
    // The OPAQUE secrets belong with the server key: made once, here or at first start.
    keys::load_or_create_opaque_setup(data_dir)?;
    let pk = kp.public();
    Ok(format!(
        "{} {}\nfingerprint: {}\npublic key:  {}\n",
        if created {
            "created the server key in"
        } else {
            "the server key already exists in"
        },
        data_dir.display(),
        pk.fingerprint(),
        pk.to_hex()
    ))
}

/// Fails unless `data_dir` exists: the admin subcommands never create one (a command run
/// from the wrong folder must not report success into a directory no server uses).
/// `config` is the configuration file in use, named in the error.
pub fn require_data_dir(data_dir: &Path, config: Option<&Path>) -> Result<()> {
    if data_dir.is_dir() {
        return Ok(());
    }
    let origin = match config {
        Some(c) => format!("data directory of the configuration {}", c.display()),
        None => "no configuration file; the default, or --data-dir / $CMTPD_DATA_DIR".into(),
    };
    Err(AdminError::NoDataDir {
        path: data_dir.display().to_string(),
        origin,
    })
}

/// The stored name of account `name`: its canonical form if such an account exists, else
/// the name as given if an account was stored under it before names were canonical,
/// else the canonical form (for messages to an account that is gone).
pub fn stored_name(users: &impl UserStore, name: &str) -> Result<String> {
    super::check_name(name)?;
    let folded = cmtp_proto::fold(name);
    if folded != name && users.public_key(&folded)?.is_none() && users.public_key(name)?.is_some() {
        return Ok(name.to_owned());
    }
    Ok(folded)
}

/// Whether `password` is strong enough for an xzibit; the error carries zxcvbn's advice.
pub fn check_password_strength(password: &[u8], name: &str) -> Result<()> {
    let Ok(text) = std::str::from_utf8(password) else {
        // Not UTF-8: zxcvbn cannot judge it; its length alone is the estimate.
        return if password.len() >= 16 {
            Ok(())
        } else {
            Err(AdminError::WeakPassword {
                score: 0,
                min: MIN_PASSWORD_SCORE,
                feedback: String::new(),
            })
        };
    };
    let est = zxcvbn::zxcvbn(text, &[name]);
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
    Err(AdminError::WeakPassword {
        score,
        min: MIN_PASSWORD_SCORE,
        feedback: if advice.is_empty() {
            String::new()
        } else {
            format!(": {}", advice.join(" "))
        },
    })
}

fn add_record(s: &impl AdminStores, rec: &UserRecord) -> Result<()> {
    s.prepare_user_writes()?;
    match s.users()?.add(rec) {
        Err(cmtp_store::StoreError::AlreadyExists) => Err(AdminError::Exists(rec.name.clone())),
        r => Ok(r?),
    }
}

/// Refuses `canonical` when an account of that name exists, or one whose name folds to
/// it (stored before names were canonical): `Alice` cannot be created beside `alice`.
fn ensure_free(users: &impl UserStore, canonical: &str) -> Result<()> {
    if users.public_key(canonical)?.is_some() {
        return Err(AdminError::Exists(canonical.to_owned()));
    }
    if let Some(u) = users
        .list_users()?
        .into_iter()
        .find(|u| cmtp_proto::fold(&u.name) == canonical)
    {
        return Err(AdminError::Exists(u.name));
    }
    Ok(())
}

/// What `user add` created.
#[derive(Debug)]
pub struct Added {
    /// The name the account is stored under (canonical: NFC, lower case).
    pub name: String,
    /// Its new public key.
    pub key: PublicKey,
}

/// `user add`: a fresh key pair sealed in a version-2 xzibit under `password`, stored
/// under the canonical form of `name`, with its OPAQUE login (docs/protocol.md D8; the
/// server's OPAQUE secrets are created in the data directory if they are not there yet).
/// A password the strength estimate calls weak is refused unless `allow_weak`.
/// `data_dir` holds the OPAQUE secrets (with the server key, on every backend).
pub fn user_add(
    s: &impl AdminStores,
    data_dir: &Path,
    name: &str,
    password: &[u8],
    allow_weak: bool,
) -> Result<Added> {
    let canonical = canonical(name)?;
    if password.is_empty() {
        return Err(AdminError::EmptyPassword);
    }
    if !allow_weak {
        check_password_strength(password, &canonical)?;
    }
    ensure_free(s.users()?, &canonical)?;
    let kp = KeyPair::generate()?;
    let xz = Xzibit::create_v2(&kp, password)?;
    let setup = keys::load_or_create_opaque_setup(data_dir)?;
    let now = crate::unix_now();
    let login = crate::opaque::register_locally(&setup, &canonical, password, now)?;
    add_record(
        s,
        &UserRecord {
            name: canonical.clone(),
            public_key: *kp.public().as_bytes(),
            xzibit: xz.into_bytes(),
            created: now,
        },
    )?;
    // Added first, then given its login: a crash in between leaves an account without
    // one, which upgrades at its first `cmtp login` like any CMTP/1 account.
    s.users()?
        .set_opaque_login(&canonical, &login.to_bytes(), None)?;
    Ok(Added {
        name: canonical,
        key: kp.public(),
    })
}

fn canonical(name: &str) -> Result<String> {
    cmtp_proto::canonical_account(name).map_err(|e| AdminError::InvalidName(name.to_owned(), e))
}

/// Reads a password from the first line of `input` (only the final `\n` is removed, as
/// the 2016 tool did, so leading and trailing spaces are kept).
pub fn password_from_reader(
    mut input: impl std::io::BufRead,
) -> std::io::Result<Zeroizing<String>> {
    let mut line = Zeroizing::new(String::new());
    input.read_line(&mut line)?;
    if line.ends_with('\n') {
        line.pop();
    }
    Ok(line)
}

/// `user import`: an account made by the 2016 tools (raw 32-byte public key file and
/// xzibit file), stored under the canonical form of `name` (returned). The xzibit's
/// structure is checked; it cannot be opened without the password.
pub fn user_import(
    s: &impl AdminStores,
    name: &str,
    public_key: &Path,
    xzibit: &Path,
) -> Result<String> {
    let canonical = canonical(name)?;
    let pk = read(public_key)?;
    let pk: [u8; 32] = pk.as_slice().try_into().map_err(|_| {
        AdminError::BadImport(format!(
            "{} is {} bytes, a public key file is exactly 32",
            public_key.display(),
            pk.len()
        ))
    })?;
    PublicKey::from_array(pk)
        .to_x25519()
        .map_err(|_| AdminError::BadImport("the public key is not a usable Ed25519 key".into()))?;
    let xz = read(xzibit)?;
    Xzibit::parse(&xz).map_err(|e| {
        AdminError::BadImport(format!("{} is not a valid xzibit: {e}", xzibit.display()))
    })?;
    ensure_free(s.users()?, &canonical)?;
    add_record(
        s,
        &UserRecord {
            name: canonical.clone(),
            public_key: pk,
            xzibit: xz,
            created: crate::unix_now(),
        },
    )?;
    Ok(canonical)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weak_passwords_are_refused_with_advice() {
        for weak in ["pw", "password1", "alice123", "qwertyuiop", "bob password"] {
            let e = check_password_strength(weak.as_bytes(), "alice").unwrap_err();
            assert!(e.to_string().contains("--allow-weak-password"), "{e}");
        }
        for strong in [
            "tulip marble quarry 42",
            "ember fjord lantern 77",
            "coral zephyr anvil 1958",
            "bob passphrase",
        ] {
            check_password_strength(strong.as_bytes(), "alice").unwrap();
        }
    }
}

#[derive(Serialize)]
struct UserJson {
    name: String,
    public_key: String,
    xzibit_version: Option<u32>,
    created: u64,
}

/// `user list` (an aligned table with creation dates, or JSON with `json`).
pub fn user_list(users: &impl UserStore, json: bool) -> Result<String> {
    let users = users.list_users()?;
    let rows: Vec<UserJson> = users
        .into_iter()
        .map(|u| UserJson {
            xzibit_version: Xzibit::parse(&u.xzibit).ok().map(|x| x.version()),
            public_key: hex::encode(u.public_key),
            name: u.name,
            created: u.created,
        })
        .collect();
    if json {
        return Ok(serde_json::to_string_pretty(&rows).unwrap_or_default() + "\n");
    }
    if rows.is_empty() {
        return Ok("no users\n".to_owned());
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                cmtp_client::terminal::sanitize(&r.name, cmtp_client::terminal::Layout::Line),
                format::date(r.created),
                r.xzibit_version
                    .map_or_else(|| "?".to_owned(), |v| format!("v{v}")),
                r.public_key.clone(),
            ]
        })
        .collect();
    let mut o = format::table(&["NAME", "CREATED (UTC)", "XZIBIT", "PUBLIC KEY"], &table);
    let _ = writeln!(o, "{}", format::count(rows.len() as u64, "user", "users"));
    Ok(o)
}

/// `user remove`: the account `name` denotes (canonical form first, then the exact name
/// of an account stored before names were canonical). Returns the name removed.
pub fn user_remove(users: &impl UserStore, name: &str) -> Result<String> {
    let stored = stored_name(users, name)?;
    if users.remove(&stored)? {
        Ok(stored)
    } else {
        Err(AdminError::NoSuchUser(name.to_owned()))
    }
}
