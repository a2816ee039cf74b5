//! One type for a stream of messages: a user's, a room's or the broadcast stream.
//!
//! A [`StreamKey`] knows every form a stream takes: its name in the store, the HTTP API and
//! the logs (`user:alice`, `room:lobby`, `broadcast`), its form on the wire (relative to the
//! connection's user: [`Stream::User`] for the user's own stream), and the scenario it is
//! counted under in the metrics. Nothing else parses or builds stream names.

use std::fmt;

use push_protocol::Stream;

/// Scenario index (into `stats::SCENARIOS`) of user streams.
pub const SCENARIO_USER: usize = 0;
/// Scenario index of room streams.
pub const SCENARIO_ROOM: usize = 1;
/// Scenario index of the broadcast stream.
pub const SCENARIO_BROADCAST: usize = 2;

const USER_PREFIX: &str = "user:";
const ROOM_PREFIX: &str = "room:";
const BROADCAST: &str = "broadcast";

/// A stream of messages with its own positions.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StreamKey {
    /// One user's stream: every connection of the user, acknowledged cumulatively.
    User(String),
    /// A room's stream: every member, retained for resume.
    Room(String),
    /// The broadcast stream: every connection.
    Broadcast,
}

impl StreamKey {
    /// The stream of user `id`.
    pub fn user(id: &str) -> StreamKey {
        StreamKey::User(id.to_string())
    }

    /// The stream of room `name`.
    pub fn room(name: &str) -> StreamKey {
        StreamKey::Room(name.to_string())
    }

    /// The stream a connection of `user` means by `wire`.
    pub fn from_wire(wire: &Stream, user: &str) -> StreamKey {
        match wire {
            Stream::User => StreamKey::user(user),
            Stream::Room(r) => StreamKey::room(r),
            Stream::Broadcast => StreamKey::Broadcast,
        }
    }

    /// Parses a stream name (`user:<id>`, `room:<name>` or `broadcast`).
    pub fn parse(name: &str) -> Option<StreamKey> {
        if name == BROADCAST {
            return Some(StreamKey::Broadcast);
        }
        if let Some(id) = name.strip_prefix(USER_PREFIX) {
            return Some(StreamKey::user(id));
        }
        name.strip_prefix(ROOM_PREFIX).map(StreamKey::room)
    }

    /// The stream's name in the store, the API and the logs.
    pub fn name(&self) -> String {
        self.to_string()
    }

    /// Appends the stream's name to `out` (store keys) without an intermediate string.
    pub fn write_name(&self, out: &mut Vec<u8>) {
        let (prefix, id) = self.parts();
        out.extend_from_slice(prefix.as_bytes());
        out.extend_from_slice(id.as_bytes());
    }

    /// Length in bytes of [`StreamKey::name`].
    pub fn name_len(&self) -> usize {
        let (prefix, id) = self.parts();
        prefix.len() + id.len()
    }

    fn parts(&self) -> (&'static str, &str) {
        match self {
            StreamKey::User(id) => (USER_PREFIX, id),
            StreamKey::Room(name) => (ROOM_PREFIX, name),
            StreamKey::Broadcast => (BROADCAST, ""),
        }
    }

    /// The stream as it is named on the wire to a connection of its user.
    pub fn wire(&self) -> Stream {
        match self {
            StreamKey::User(_) => Stream::User,
            StreamKey::Room(name) => Stream::Room(name.clone()),
            StreamKey::Broadcast => Stream::Broadcast,
        }
    }

    /// Index into `stats::SCENARIOS`: the metric label it is counted under.
    pub fn scenario(&self) -> usize {
        match self {
            StreamKey::User(_) => SCENARIO_USER,
            StreamKey::Room(_) => SCENARIO_ROOM,
            StreamKey::Broadcast => SCENARIO_BROADCAST,
        }
    }

    /// The user whose stream this is.
    pub fn as_user(&self) -> Option<&str> {
        match self {
            StreamKey::User(id) => Some(id),
            _ => None,
        }
    }
}

impl fmt::Display for StreamKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (prefix, id) = self.parts();
        write!(f, "{prefix}{id}")
    }
}

/// Longest room name.
pub const MAX_ROOM_LEN: usize = 64;

/// Checks a room name against SPEC.md §5.7: 1–64 bytes of `[A-Za-z0-9_.:-]`.
pub fn valid_room_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > MAX_ROOM_LEN {
        return Err("room name must be 1 to 64 bytes");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
    {
        return Err("room name may only contain A-Z a-z 0-9 _ . : -");
    }
    Ok(())
}

/// True when a connection whose token grants `grants` may join `room`: rooms under none of
/// the `restricted` prefixes are open; the others need a grant (a room name, or a prefix
/// ending in `*`).
pub fn may_join<G: AsRef<str>>(grants: &[G], room: &str, restricted: &[String]) -> bool {
    if !restricted.iter().any(|p| room.starts_with(p.as_str())) {
        return true;
    }
    grants
        .iter()
        .map(AsRef::as_ref)
        .any(|g| match g.strip_suffix('*') {
            Some(prefix) => room.starts_with(prefix),
            None => g == room,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restricted_rooms_need_a_grant() {
        let restricted = vec!["private:".to_string()];
        let grants = ["private:team*", "private:x"];
        let none: [&str; 0] = [];
        assert!(may_join(&none, "lobby", &restricted));
        assert!(!may_join(&none, "private:x", &restricted));
        assert!(may_join(&grants, "private:x", &restricted));
        assert!(may_join(&grants, "private:team-1", &restricted));
        assert!(!may_join(&grants, "private:xy", &restricted));
    }

    #[test]
    fn room_names() {
        assert!(valid_room_name("lobby").is_ok());
        assert!(valid_room_name("team:42.a_b-c").is_ok());
        assert!(valid_room_name("").is_err());
        assert!(valid_room_name("has space").is_err());
        assert!(valid_room_name(&"x".repeat(65)).is_err());
    }

    #[test]
    fn every_form_of_a_stream_agrees() {
        for (key, name, wire, scenario) in [
            (StreamKey::user("al:ice"), "user:al:ice", Stream::User, 0),
            (
                StreamKey::room("lobby"),
                "room:lobby",
                Stream::Room("lobby".into()),
                1,
            ),
            (StreamKey::Broadcast, "broadcast", Stream::Broadcast, 2),
        ] {
            assert_eq!(key.name(), name);
            assert_eq!(key.name_len(), name.len());
            let mut out = Vec::new();
            key.write_name(&mut out);
            assert_eq!(out, name.as_bytes());
            assert_eq!(StreamKey::parse(name), Some(key.clone()));
            assert_eq!(key.wire(), wire);
            assert_eq!(StreamKey::from_wire(&wire, "al:ice"), key);
            assert_eq!(key.scenario(), scenario);
            assert_eq!(
                crate::stats::SCENARIOS[scenario],
                name.split(':').next().unwrap()
            );
        }
        assert_eq!(StreamKey::parse("nope"), None);
        assert_eq!(StreamKey::user("a").as_user(), Some("a"));
        assert_eq!(StreamKey::Broadcast.as_user(), None);
    }
}
