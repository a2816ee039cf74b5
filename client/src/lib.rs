//! Client SDK for the push server.
