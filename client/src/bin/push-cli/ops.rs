//! Operator commands: presence, kick, room, history and stats, all through the HTTP API.

use std::fmt::Write as _;
use std::net::SocketAddr;

use clap::{Args, ValueEnum};
use push_client::http_api::Http;
use serde_json::{json, Value};

/// Where the HTTP API is, the key to call it with, and the output format.
#[derive(Args, Clone)]
pub(crate) struct Api {
    /// HTTP API address.
    #[arg(long, default_value = "127.0.0.1:7180")]
    http: SocketAddr,
    /// API key (bearer token) with the scope the command needs.
    #[arg(long, env = "PUSH_API_TOKEN", default_value = "dev-api-token")]
    api_token: String,
    /// Print the server's JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// Which stream's history to read.
#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum StreamKind {
    /// A user's stream (give the user id).
    User,
    /// A room (give the room name).
    Room,
    /// The broadcast stream (no id).
    Broadcast,
}

type Res = Result<(), Box<dyn std::error::Error>>;

/// Percent-encodes one path segment (user ids and room names may hold any character).
fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

impl Api {
    /// Sends one request; a non-2xx answer becomes an error carrying the server's reason.
    async fn call(&self, method: &str, path: &str) -> Result<Value, Box<dyn std::error::Error>> {
        let mut http = Http::new(self.http);
        let (status, body) = match method {
            "DELETE" => http.delete(path, &self.api_token).await,
            _ => http.get(path, &self.api_token).await,
        }
        .map_err(|e| format!("cannot reach the HTTP API at {}: {e}", self.http))?;
        let value: Value = serde_json::from_str(&body).unwrap_or_else(|_| json!(body));
        if !(200..300).contains(&status) {
            let reason = value["error"].as_str().unwrap_or(&body).to_string();
            return Err(format!("HTTP {status}: {reason}").into());
        }
        Ok(value)
    }

    /// Prints `value` as JSON when asked, else `text`.
    fn print(&self, value: &Value, text: impl FnOnce(&Value) -> String) {
        if self.json {
            println!("{value}");
        } else {
            print!("{}", text(value));
        }
    }
}

/// `push-cli presence USER`.
pub(crate) async fn presence(api: Api, user: String) -> Res {
    let v = api
        .call("GET", &format!("/api/v1/users/{}/presence", segment(&user)))
        .await?;
    api.print(&v, |v| {
        let n = v["connections"].as_u64().unwrap_or(0);
        let mut out = if n == 0 {
            format!("{user}: offline\n")
        } else {
            format!("{user}: online, {n} connection{}\n", plural(n))
        };
        for s in v["sessions"].as_array().into_iter().flatten() {
            let since_s = s["connected_at_ms"].as_u64().unwrap_or(0) / 1000;
            let age_s = crate::now_secs().saturating_sub(since_s);
            let _ = writeln!(
                out,
                "  {} v{} device {} connected {}{}",
                s["transport"].as_str().unwrap_or("?"),
                s["protocol_version"],
                s["device"].as_str().unwrap_or("-"),
                ago(age_s),
                s["node"]
                    .as_str()
                    .map(|n| format!(" on {n}"))
                    .unwrap_or_default()
            );
        }
        out
    });
    Ok(())
}

/// `push-cli kick USER`.
pub(crate) async fn kick(api: Api, user: String) -> Res {
    let v = api
        .call(
            "DELETE",
            &format!("/api/v1/users/{}/connections", segment(&user)),
        )
        .await?;
    api.print(&v, |v| {
        let n = v["closed"].as_u64().unwrap_or(0);
        format!("{user}: closed {n} connection{}\n", plural(n))
    });
    Ok(())
}

/// `push-cli room ROOM`: members (every node) and the stored stream's tail.
pub(crate) async fn room(api: Api, room: String) -> Res {
    let name = segment(&room);
    let members = api.call("GET", &format!("/api/v1/rooms/{name}")).await?;
    let history = api
        .call("GET", &format!("/api/v1/history/rooms/{name}?limit=1"))
        .await?;
    let v = json!({
        "room": room,
        "members": members["members"],
        "tail": history["tail"],
        "first_retained": history["first_retained"],
    });
    api.print(&v, |v| {
        format!(
            "room {room}: {} members, tail position {}, oldest retained {}\n",
            v["members"], v["tail"], v["first_retained"]
        )
    });
    Ok(())
}

/// `push-cli history user|room|broadcast [ID]`.
pub(crate) async fn history(
    api: Api,
    kind: StreamKind,
    id: Option<String>,
    after: u64,
    limit: usize,
) -> Res {
    let base = match (kind, &id) {
        (StreamKind::User, Some(id)) => format!("/api/v1/history/users/{}", segment(id)),
        (StreamKind::Room, Some(id)) => format!("/api/v1/history/rooms/{}", segment(id)),
        (StreamKind::Broadcast, None) => "/api/v1/history/broadcast".to_string(),
        (StreamKind::Broadcast, Some(_)) => return Err("broadcast takes no id".into()),
        (_, None) => return Err("give the user id or room name".into()),
    };
    let v = api
        .call("GET", &format!("{base}?after={after}&limit={limit}"))
        .await?;
    api.print(&v, history_text);
    Ok(())
}

fn history_text(v: &Value) -> String {
    let mut out = format!(
        "{}: tail {}, acknowledged up to {}, oldest retained {}\n",
        v["stream"].as_str().unwrap_or("?"),
        v["tail"],
        v["acked"],
        v["first_retained"]
    );
    let messages = v["messages"].as_array().cloned().unwrap_or_default();
    if messages.is_empty() {
        out.push_str("  (no messages)\n");
    }
    for m in &messages {
        let body = match (m["title"].as_str(), m["payload"].as_str()) {
            (Some(title), _) => format!(
                "[{}] {title}: {}",
                m["level"].as_str().unwrap_or("info"),
                m["content"].as_str().unwrap_or("")
            ),
            (None, Some(p)) => p.to_string(),
            (None, None) => "(binary payload)".to_string(),
        };
        let _ = writeln!(
            out,
            "  #{:<6} {:<9} {:<10} {}",
            m["position"].to_string(),
            m["state"].as_str().unwrap_or("?"),
            m["kind"].as_str().unwrap_or("?"),
            body
        );
    }
    if let Some(next) = v["next_after"].as_u64() {
        if v["tail"].as_u64().is_some_and(|tail| tail > next) {
            let _ = writeln!(out, "  (more: --after {next})");
        }
    }
    out
}

/// `push-cli stats`: a one-screen summary of the server's figures (`GET /api/v1/stats`: the
/// counters of `/metrics` with latency quantiles since start), one block per node in a cluster.
pub(crate) async fn stats(api: Api) -> Res {
    let v = api.call("GET", "/api/v1/stats").await?;
    api.print(&v, |v| {
        let mut out = String::new();
        let nodes = v["nodes"].as_array().cloned().unwrap_or_default();
        if nodes.len() > 1 {
            for n in &nodes {
                let _ = writeln!(out, "node {}", n["node"].as_str().unwrap_or("?"));
                out.push_str(&stats_text(n));
            }
            out.push_str("all nodes\n");
        }
        out.push_str(&stats_text(&v["total"]));
        if let Some(broker) = v["broker"].as_str() {
            let _ = writeln!(out, "rabbitmq     {broker}");
        }
        out
    });
    Ok(())
}

fn stats_text(v: &Value) -> String {
    let mut out = String::new();
    let c = &v["connections"];
    let _ = writeln!(
        out,
        "connections  {} (tcp {}, websocket {}, long-poll {}), {} rooms",
        c["total"], c["tcp"], c["websocket"], c["long_poll"], v["rooms"]
    );
    let _ = writeln!(
        out,
        "{:<12} {:>12} {:>8} {:>10} {:>14} {:>9} {:>9}",
        "scenario", "accepted", "failed", "transient", "deliveries", "p50 ms", "p99 ms"
    );
    for s in ["user", "room", "broadcast"] {
        let x = &v["scenarios"][s];
        let _ = writeln!(
            out,
            "{:<12} {:>12} {:>8} {:>10} {:>14} {:>9} {:>9}",
            s,
            x["accepted"].to_string(),
            x["failed"].to_string(),
            x["transient"].to_string(),
            x["deliveries"].to_string(),
            ms(&x["accept_to_write_p50_s"]),
            ms(&x["accept_to_write_p99_s"])
        );
    }
    let st = &v["storage"];
    let _ = writeln!(
        out,
        "storage      {} commits, commit p99 {} ms, {} errors{}{}",
        st["commits"],
        ms(&st["commit_p99_s"]),
        st["errors"],
        if st["failing"] == json!(true) {
            ", FAILING WRITES"
        } else {
            ""
        },
        st["bytes"]
            .as_u64()
            .map(|b| format!(", {} on disk", bytes(b)))
            .unwrap_or_default()
    );
    let p = &v["problems"];
    let _ = writeln!(
        out,
        "dropped      {} slow consumers, {} heartbeat timeouts, {} kicked; {} handshakes refused, {} protocol errors",
        p["slow_consumers"], p["heartbeat_timeouts"], p["kicked"], p["handshakes_failed"], p["protocol_errors"]
    );
    if let Some(a) = v["memory"]["allocated"].as_u64() {
        let _ = writeln!(
            out,
            "memory       {} allocated, {} resident (allocator)",
            bytes(a),
            bytes(v["memory"]["resident"].as_u64().unwrap_or(0))
        );
    }
    out
}

fn ms(seconds: &Value) -> String {
    seconds
        .as_f64()
        .map_or_else(|| "-".to_string(), |s| format!("{:.2}", s * 1e3))
}

fn bytes(b: u64) -> String {
    if b >= 1 << 20 {
        format!("{:.1} MiB", b as f64 / f64::from(1 << 20))
    } else {
        format!("{:.1} KiB", b as f64 / 1024.0)
    }
}

/// "12 s ago", "5 min ago", "3 h ago", "2 d ago".
fn ago(s: u64) -> String {
    match s {
        0..120 => format!("{s} s ago"),
        120..7200 => format!("{} min ago", s / 60),
        7200..172_800 => format!("{} h ago", s / 3600),
        _ => format!("{} d ago", s / 86_400),
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_escaped() {
        assert_eq!(segment("alice"), "alice");
        assert_eq!(segment("a b/c?d"), "a%20b%2Fc%3Fd");
        assert_eq!(segment("zoë"), "zo%C3%AB");
    }

    #[test]
    fn history_lists_each_message_with_its_state() {
        let v = json!({
            "stream": "user:ann", "tail": 2, "acked": 1, "first_retained": 1, "next_after": 2,
            "messages": [
                {"position": 1, "state": "acked", "kind": "notice", "title": "Hi", "content": "there", "level": "info"},
                {"position": 2, "state": "queued", "kind": "chat", "payload": "hello"},
            ]
        });
        let text = history_text(&v);
        assert!(
            text.starts_with("user:ann: tail 2, acknowledged up to 1"),
            "{text}"
        );
        assert!(
            text.contains("#1      acked     notice     [info] Hi: there"),
            "{text}"
        );
        assert!(
            text.contains("#2      queued    chat       hello"),
            "{text}"
        );
    }
}
