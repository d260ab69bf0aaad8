//! Command dispatch and handlers, one module per command that does more than send a
//! constant reply.
//!
//! Every general FAILURE for an internal error closes the connection (docs/protocol.md
//! §6): the server cannot vouch for the state of a conversation in which it failed.

mod keyrequest;
mod login;
mod mail;
mod mbox;
mod opaque;

use cmtp_proto::opaque::OpaqueCommand;
use cmtp_proto::{Command, MboxKind};

use crate::connection::{Conn, ConnError, Flow};
use crate::metrics::{CommandKind, FailureReason};
use crate::ratelimit::Class;
use crate::shared::Backend;

/// The metric kind and the rate bucket (if any) of a command.
fn classify(command: &Command) -> (CommandKind, Option<Class>) {
    match command {
        Command::Empty => (CommandKind::Empty, None),
        Command::Ohai => (CommandKind::Ohai, Some(Class::Any)),
        Command::Noop => (CommandKind::Noop, Some(Class::Any)),
        Command::Help => (CommandKind::Help, Some(Class::Any)),
        Command::Obai => (CommandKind::Obai, None),
        Command::Smtp(_) => (CommandKind::Smtp, None),
        Command::KeyRequest { user, .. } if user.is_empty() => {
            (CommandKind::KeyRequest, Some(Class::Any))
        }
        Command::KeyRequest { .. } => (CommandKind::KeyRequest, Some(Class::KeyRequest)),
        Command::Login { .. } => (CommandKind::Login, Some(Class::Login)),
        Command::Mail => (CommandKind::Mail, Some(Class::Mail)),
        Command::Submit(_) => (CommandKind::Submit, Some(Class::Mail)),
        Command::MboxList(_) => (CommandKind::MboxList, Some(Class::Any)),
        Command::MboxFetch(_) => (CommandKind::MboxFetch, Some(Class::Any)),
        Command::MboxDelete(_) => (CommandKind::MboxDel, Some(Class::Any)),
        Command::Opaque(c) => match c {
            OpaqueCommand::Login1 { .. } => (CommandKind::Opaque1, Some(Class::Opaque)),
            OpaqueCommand::Login2 { .. } => (CommandKind::Opaque2, Some(Class::Any)),
            OpaqueCommand::Register1 { .. } => (CommandKind::OpaqueReg1, Some(Class::Any)),
            OpaqueCommand::Register2 { .. } => (CommandKind::OpaqueReg2, Some(Class::Any)),
        },
    }
}

/// Runs one command: counts it, applies the client address's rate limits, and calls its
/// handler.
pub async fn dispatch<S: Backend>(c: &mut Conn<S>, command: Command) -> Result<Flow, ConnError> {
    let (kind, class) = classify(&command);
    let sh = c.shared().clone();
    if matches!(command, Command::Opaque(_)) && sh.opaque.is_none() {
        // The extension is off: its words are unknown commands, as on any CMTP/1 server.
        sh.metrics.failure(FailureReason::Framing);
        c.reply_failure();
        return Ok(Flow::Close);
    }
    sh.metrics.command(kind);
    if let Some(class) = class
        && !c.limits().allow(class)
    {
        sh.metrics.failure(FailureReason::RateLimited);
        tracing::debug!(peer = %c.peer(), command = kind.label(), "rate limited");
        c.reply_failure();
        // A refused MAIL leaves its message unread: framing is lost.
        return Ok(if matches!(kind, CommandKind::Mail | CommandKind::Submit) {
            Flow::Close
        } else {
            Flow::Continue
        });
    }
    match command {
        Command::Empty => {}
        Command::Ohai => c.reply(&sh.ohai),
        Command::Noop => c.reply(&sh.signer.success),
        Command::Help => c.reply(&sh.signer.help),
        Command::Obai => return Ok(Flow::Close),
        Command::Smtp(verb) => {
            tracing::debug!(peer = %c.peer(), %verb, "SMTP client refused");
            sh.metrics.failure(FailureReason::Smtp);
            c.reply(cmtp_proto::reply::SMTP_REFUSAL);
            return Ok(Flow::Close);
        }
        Command::KeyRequest { user, domain } => {
            return keyrequest::keyrequest(c, &user, &domain).await;
        }
        Command::Login { user } => login::login(c, &user),
        Command::Mail => return mail::mail(c, None).await,
        Command::Submit(r) => return mail::mail(c, Some(r)).await,
        Command::MboxList(r) => return mbox::mbox(c, MboxKind::List, r).await,
        Command::MboxFetch(r) => return mbox::mbox(c, MboxKind::Fetch, r).await,
        Command::MboxDelete(r) => return mbox::mbox(c, MboxKind::Delete, r).await,
        Command::Opaque(o) => opaque::opaque(c, o),
    }
    Ok(Flow::Continue)
}
