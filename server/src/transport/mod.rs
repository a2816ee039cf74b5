//! Socket adapters that feed connections to sessions.

pub mod tcp;
pub mod ws;
