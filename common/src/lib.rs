//! What the control plane and the host agent share that is not part of their contract
//! (`cloud-proto`): value types both speak ([`net`]), durable writes of small files ([`fs`]).
//! Nothing here knows either service; both depend on it, it depends on neither.
#![forbid(unsafe_code)]

pub mod fs;
pub mod net;
