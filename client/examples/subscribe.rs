//! Connects as a user, joins a room, prints every message.
//!
//! ```sh
//! cargo run --release -p push-server &
//! cargo run -p push-client --example subscribe -- alice lobby
//! cargo run -p push-client --features cli --bin push-cli -- publish --room lobby --payload hello
//! ```

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use push_client::token::{mint, Claims};
use push_client::{Client, ClientConfig, Event};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let user = args.next().unwrap_or_else(|| "alice".into());
    let room = args.next();
    let secret = std::env::var("PUSH_JWT_SECRET").unwrap_or_else(|_| "dev-secret-change-me".into());
    let exp = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() + 3600;
    let token = mint(
        secret.as_bytes(),
        &Claims {
            sub: user,
            exp,
            device: None,
            rooms: Vec::new(),
        },
    );
    let mut config = ClientConfig::new("127.0.0.1:7100".parse()?, token);
    config.backoff_max = Duration::from_secs(5);
    let mut client = Client::connect(config).await?;
    if let Some(room) = room {
        client.join(&room).await?;
    }
    while let Some(event) = client.next_event().await {
        match event {
            Event::Message(m) => println!(
                "{:?} #{} {}: {}",
                m.stream,
                m.position,
                m.kind,
                String::from_utf8_lossy(&m.payload)
            ),
            Event::Connected { conn_id, user } => eprintln!("connected as {user} ({conn_id})"),
            Event::Disconnected { error, fatal } => {
                eprintln!("disconnected: {error}");
                if fatal {
                    break;
                }
            }
            Event::Gap {
                stream,
                first_available,
            } => {
                eprintln!("history of {stream:?} before {first_available} is gone")
            }
            Event::Recalled {
                id,
                stream,
                position,
            } => eprintln!("{stream:?} #{position} ({id}) was withdrawn by its publisher"),
        }
    }
    Ok(())
}
