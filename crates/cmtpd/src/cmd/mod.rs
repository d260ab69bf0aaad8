//! Command handlers, one module per command that does more than send a constant reply.

mod keyrequest;
mod login;
mod mail;
mod mbox;

pub(crate) use keyrequest::keyrequest;
pub(crate) use login::login;
pub(crate) use mail::mail;
pub(crate) use mbox::mbox;
