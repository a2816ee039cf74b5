//! Socket adapters that feed connections to sessions.

pub mod link;
pub mod tcp;
pub mod ws;
