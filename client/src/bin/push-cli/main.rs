//! `push-cli`: mint test tokens, subscribe and print arriving messages, publish through the API,
//! and the operator commands (presence, kick, room, history, stats).

mod ops;

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};

// The harness's small HTTP/1.1 client serves here too.
use push_client::protocol::{Notice, PayloadFormat, Push, Stream};
use push_client::token::{mint, Claims};
use push_client::{Client, ClientConfig, Event};
use serde_json::json;

/// Command-line client for the push server.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Mint an HS256 client token (for development and tests).
    Token {
        /// User id (`sub`).
        #[arg(long)]
        user: String,
        /// Secret the server verifies with.
        #[arg(long, env = "PUSH_JWT_SECRET", default_value = "dev-secret-change-me")]
        secret: String,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 86_400)]
        ttl: u64,
        /// Optional device id claim.
        #[arg(long)]
        device: Option<String>,
    },
    /// Connect and print every message that arrives.
    Subscribe {
        /// Server address.
        #[arg(long, default_value = "127.0.0.1:7100")]
        addr: SocketAddr,
        /// Token; if absent one is minted for --user with --secret.
        #[arg(long, env = "PUSH_TOKEN")]
        token: Option<String>,
        /// User to mint a token for when --token is absent.
        #[arg(long, default_value = "alice")]
        user: String,
        /// Secret to mint with when --token is absent.
        #[arg(long, env = "PUSH_JWT_SECRET", default_value = "dev-secret-change-me")]
        secret: String,
        /// Rooms to join (repeatable).
        #[arg(long)]
        room: Vec<String>,
        /// Print one JSON object per line instead of text.
        #[arg(long)]
        json: bool,
        /// Exit after this many messages.
        #[arg(long)]
        count: Option<u64>,
    },
    /// Push a message through the HTTP API.
    Publish {
        /// HTTP API address.
        #[arg(long, default_value = "127.0.0.1:7180")]
        http: SocketAddr,
        /// API bearer token.
        #[arg(long, env = "PUSH_API_TOKEN", default_value = "dev-api-token")]
        api_token: String,
        /// Target users (repeatable).
        #[arg(long)]
        user: Vec<String>,
        /// Target room.
        #[arg(long)]
        room: Option<String>,
        /// Target everyone.
        #[arg(long)]
        broadcast: bool,
        /// Message kind.
        #[arg(long, default_value = "notice")]
        kind: String,
        /// Notice title.
        #[arg(long)]
        title: Option<String>,
        /// Notice content.
        #[arg(long)]
        content: Option<String>,
        /// Notice level: info, warning, error, critical.
        #[arg(long)]
        level: Option<String>,
        /// Opaque payload instead of a notice.
        #[arg(long)]
        payload: Option<String>,
        /// Idempotency id.
        #[arg(long)]
        id: Option<String>,
    },
    /// Is a user online: connections, devices (and nodes, in a cluster).
    Presence {
        /// User id.
        user: String,
        #[command(flatten)]
        api: ops::Api,
    },
    /// Close every connection of a user (KICKED, no reconnect hint); needs the admin scope.
    Kick {
        /// User id.
        user: String,
        #[command(flatten)]
        api: ops::Api,
    },
    /// A room's members (on every node) and its stored stream's tail.
    Room {
        /// Room name.
        room: String,
        #[command(flatten)]
        api: ops::Api,
    },
    /// Stored messages of a stream with their delivery states.
    History {
        /// user, room or broadcast.
        #[arg(value_enum)]
        stream: ops::StreamKind,
        /// The user id or room name (none for broadcast).
        id: Option<String>,
        /// Positions after this one.
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// Messages to list (at most 1000).
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[command(flatten)]
        api: ops::Api,
    },
    /// One screen of the server's figures (every node's in a cluster).
    Stats {
        #[command(flatten)]
        api: ops::Api,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let code = match run(Cli::parse()).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("push-cli: {e}");
            1
        }
    };
    std::process::exit(code);
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    match cli.cmd {
        Cmd::Presence { user, api } => ops::presence(api, user).await,
        Cmd::Kick { user, api } => ops::kick(api, user).await,
        Cmd::Room { room, api } => ops::room(api, room).await,
        Cmd::History {
            stream,
            id,
            after,
            limit,
            api,
        } => ops::history(api, stream, id, after, limit).await,
        Cmd::Stats { api } => ops::stats(api).await,
        Cmd::Token {
            user,
            secret,
            ttl,
            device,
        } => {
            println!(
                "{}",
                mint(
                    secret.as_bytes(),
                    &Claims {
                        sub: user,
                        exp: now_secs() + ttl,
                        device,
                        rooms: Vec::new(),
                    }
                )
            );
            Ok(())
        }
        Cmd::Subscribe {
            addr,
            token,
            user,
            secret,
            room,
            json,
            count,
        } => {
            let token = token.unwrap_or_else(|| {
                mint(
                    secret.as_bytes(),
                    &Claims {
                        sub: user,
                        exp: now_secs() + 86_400,
                        device: None,
                        rooms: Vec::new(),
                    },
                )
            });
            subscribe(addr, token, room, json, count).await
        }
        Cmd::Publish {
            http,
            api_token,
            user,
            room,
            broadcast,
            kind,
            title,
            content,
            level,
            payload,
            id,
        } => {
            let to = if !user.is_empty() {
                json!({ "users": user })
            } else if let Some(r) = room {
                json!({ "room": r })
            } else if broadcast {
                json!({ "broadcast": true })
            } else {
                return Err("give --user, --room or --broadcast".into());
            };
            let mut body = json!({ "to": to, "kind": kind });
            for (k, v) in [
                ("title", title),
                ("content", content),
                ("level", level),
                ("payload", payload),
                ("id", id),
            ] {
                if let Some(v) = v {
                    body[k] = json!(v);
                }
            }
            let (status, text) = push_client::http_api::Http::new(http)
                .post("/api/v1/push", &api_token, &body.to_string())
                .await?;
            println!("{text}");
            if status == 200 {
                Ok(())
            } else {
                Err(format!("HTTP {status}").into())
            }
        }
    }
}

fn describe(p: &Push) -> (String, serde_json::Value) {
    let stream = match &p.stream {
        Stream::User => "user".to_string(),
        Stream::Room(r) => format!("room:{r}"),
        Stream::Broadcast => "broadcast".to_string(),
    };
    let mut v = json!({
        "id": p.id.to_string(),
        "stream": stream,
        "position": p.position,
        "timestamp": p.timestamp_ms,
        "kind": p.kind,
    });
    let text = if p.format == PayloadFormat::NOTICE {
        match Notice::decode(p.payload.clone()) {
            Ok(n) => {
                v["data"] =
                    json!({ "title": n.title, "content": n.content, "level": n.level.as_str() });
                format!("[{}] {}: {}", n.level.as_str(), n.title, n.content)
            }
            Err(e) => format!("(bad notice: {e})"),
        }
    } else {
        let s = String::from_utf8_lossy(&p.payload).to_string();
        v["payload"] = json!(s);
        s
    };
    (format!("{stream} #{} {} {}", p.position, p.kind, text), v)
}

async fn subscribe(
    addr: SocketAddr,
    token: String,
    rooms: Vec<String>,
    as_json: bool,
    count: Option<u64>,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut client = Client::connect(ClientConfig::new(addr, token)).await?;
    for room in rooms {
        client.join(&room).await?;
        eprintln!("joined {room}");
    }
    let mut seen = 0;
    while let Some(event) = client.next_event().await {
        match event {
            Event::Connected { conn_id, user } => {
                eprintln!("connected as {user} (connection {conn_id})")
            }
            Event::Disconnected { error, fatal } => {
                eprintln!("disconnected: {error}");
                if fatal {
                    return Err(error.into());
                }
            }
            Event::Gap {
                stream,
                first_available,
            } => eprintln!("history of {stream:?} before position {first_available} is gone"),
            Event::Recalled {
                id,
                stream,
                position,
            } => eprintln!("{stream:?} position {position} ({id}) was withdrawn by its publisher"),
            Event::Message(m) => {
                let push = Push::from(m);
                let (text, v) = describe(&push);
                if as_json {
                    println!("{v}");
                } else {
                    println!("{text}");
                }
                seen += 1;
                if count.is_some_and(|c| seen >= c) {
                    client.close();
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}
