//! Accept loops that hand sockets to sessions: raw TCP (`tcp`) and the WebSocket upgrade
//! (`ws`). The session owns the socket from then on (`session::Link`).

pub(crate) mod tcp;
pub(crate) mod ws;
