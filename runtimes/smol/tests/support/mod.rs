//! What the parity tests need: the two server binaries run as child processes, and a
//! blocking HTTP/1.1 client small enough to send half a request on purpose.

pub mod http;
pub mod server;
