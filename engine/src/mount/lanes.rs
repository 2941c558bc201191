//! The mount's sessions with the appliance: a pool of protocol clients, one
//! per request being served at a time (each FUSE session thread takes one,
//! uses it, gives it back), so the threads never wait on each other.
//!
//! A call that cannot be answered is retransmitted by its client until the
//! mount's `timeout`; an appliance that restarts meanwhile is reconnected
//! to (a new session) and the call goes on. A client whose call failed for
//! any reason but the server's own refusal is dropped, and the next call
//! opens a fresh session.

use std::net::SocketAddr;
use std::sync::Mutex;

use crate::net::auth::Key;
use crate::net::client::{Client, ClientConfig, ClientError};
use crate::net::ns::{NsCall, NsRequest};
use crate::net::wire::Request;

/// A failed call: the negated errno the file system call returns.
pub type Errno = i32;

/// The pool of sessions with one appliance, for one file system.
pub struct Lanes {
    addr: SocketAddr,
    org: String,
    key: Key,
    cfg: ClientConfig,
    fs: String,
    idle: Mutex<Vec<Client>>,
}

impl Lanes {
    /// Opens the first session (so a wrong key or address fails the mount
    /// at once, with the server's reason).
    pub fn connect(
        addr: SocketAddr,
        org: &str,
        key: &Key,
        cfg: ClientConfig,
        fs: &str,
    ) -> Result<Lanes, ClientError> {
        let first = Client::connect(addr, org, key, cfg.clone())?;
        Ok(Lanes {
            addr,
            org: org.to_string(),
            key: *key,
            cfg,
            fs: fs.to_string(),
            idle: Mutex::new(vec![first]),
        })
    }

    /// The file system's name.
    pub fn fs(&self) -> &str {
        &self.fs
    }

    fn take(&self) -> Result<Client, Errno> {
        if let Some(c) = self.idle.lock().ok().and_then(|mut v| v.pop()) {
            return Ok(c);
        }
        Client::connect(self.addr, &self.org, &self.key, self.cfg.clone()).map_err(|e| {
            tracing::warn!("mount: cannot open a session with {}: {e}", self.addr);
            e.errno()
        })
    }

    /// Sends `req` and waits for its answer.
    pub fn call(&self, req: &Request) -> Result<Vec<u8>, Errno> {
        let mut c = self.take()?;
        match c.call(req) {
            Ok(body) => {
                self.give_back(c);
                Ok(body)
            }
            Err(ClientError::Status(code)) => {
                self.give_back(c);
                Err(code)
            }
            Err(e) => {
                tracing::warn!("mount: {} request failed: {e}", format!("{:?}", req.op()));
                Err(match e.errno() {
                    0 => -libc::EIO,
                    code => code,
                })
            }
        }
    }

    /// A namespace call on the mount's file system as `uid`/`gid`.
    pub fn ns(&self, uid: u32, gid: u32, call: NsCall) -> Result<Vec<u8>, Errno> {
        self.call(&Request::Ns(NsRequest {
            fs: self.fs.clone(),
            uid,
            gid,
            call,
        }))
    }

    fn give_back(&self, c: Client) {
        if let Ok(mut v) = self.idle.lock() {
            v.push(c);
        }
    }
}
