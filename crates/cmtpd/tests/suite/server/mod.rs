//! The real `cmtpd` binary over real TCP on 127.0.0.1: every command and error path, on
//! the backend of the including test target (`BACKEND`: tests/server.rs runs these on
//! the embedded store, tests/suite_pg.rs on PostgreSQL).

mod mail;
mod mailbox;
mod protocol;
mod service;
