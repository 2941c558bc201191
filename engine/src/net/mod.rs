//! The data protocol: the wire format ([`wire`]), session authentication
//! ([`auth`]), the server ([`server`]) and the client ([`client`]). It runs
//! over any [`flint_dataplane::nic::Port`]: kernel UDP now, DPDK with the
//! same frames. [`http`] is the small HTTP/1.1 client of the CLI and the
//! cluster's etcd client.

pub mod auth;
pub mod client;
pub mod http;
pub mod ns;
pub mod server;
pub mod slice;
pub mod wire;
