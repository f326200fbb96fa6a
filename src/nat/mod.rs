//! NAT traversal (feature `nat`): learning this host's address as seen from outside.
//!
//! [`stun`] sends a STUN binding request (RFC 8489) over UDP and reads the mapped
//! address from the response. [`natpmp`] maps a port on the gateway with NAT-PMP
//! (RFC 6886). UPnP IGD is not here yet.

pub mod natpmp;
pub mod stun;

pub use stun::{StunOptions, StunResult, stun_binding, stun_external_address, stun_query};
