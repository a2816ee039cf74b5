//! `push-server`: runs the push server. Settings: embedded defaults < `--config` TOML file <
//! `PUSH_*` environment variables (every key) < command-line flags (the common settings).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use push_server::config::{Config, DEV_API_TOKEN, DEV_JWT_SECRET};

/// jemalloc keeps the many small per-connection objects (tokio's 128-byte-aligned task cells
/// and I/O registrations among them) in exact size classes without per-object headers: at
/// 18,000 idle connections it measured 793 B of RSS per connection against 898 B with glibc
/// malloc and 1,052 B with mimalloc (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc options, read at its first allocation. One arena and thread caches limited to
/// objects of at most 1 KiB: with the default (four arenas per CPU and caches up to 32 KiB)
/// idle connections measured 876 B of RSS each instead of 794 B, because freed handshake and
/// storage-thread allocations stayed parked per thread and per arena (BENCHMARKS.md).
/// A background thread purges freed pages on jemalloc's decay schedule: without it pages are
/// only purged as a side effect of later allocations, and under steady churn freed pages
/// accumulated (the soak's creep, issue 18).
/// `_RJEM_MALLOC_CONF` in the environment still overrides these.
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8; 49] = b"narenas:1,tcache_max:1024,background_thread:true\0";

/// jemalloc's figures for `/metrics` (push_memory_*). Its statistics are cached until the epoch
/// is advanced, which every reading does (a scrape every few seconds).
fn jemalloc_stats() -> Option<push_server::memory::AllocatorStats> {
    use tikv_jemalloc_ctl::{epoch, stats};
    epoch::advance().ok()?;
    let read = |r: Result<usize, tikv_jemalloc_ctl::Error>| r.ok().map(|v| v as u64);
    Some(push_server::memory::AllocatorStats {
        allocated: read(stats::allocated::read())?,
        active: read(stats::active::read())?,
        resident: read(stats::resident::read())?,
        mapped: read(stats::mapped::read())?,
        retained: read(stats::retained::read())?,
        metadata: read(stats::metadata::read())?,
        dirty: arenas_pages(b"stats.arenas.4096.pdirty\0")?,
        muzzy: arenas_pages(b"stats.arenas.4096.pmuzzy\0")?,
    })
}

/// A page count summed over every arena (MALLCTL_ARENAS_ALL is 4096), in bytes.
fn arenas_pages(name: &[u8]) -> Option<u64> {
    // SAFETY: both names are NUL-terminated mallctl names whose value is a size_t.
    let pages = unsafe { tikv_jemalloc_ctl::raw::read::<usize>(name) }.ok()?;
    let page = unsafe { tikv_jemalloc_ctl::raw::read::<usize>(b"arenas.page\0") }.ok()?;
    Some((pages * page) as u64)
}

/// Push server: binary-protocol TCP connections, rooms, user/room/broadcast push, HTTP API.
///
/// With no flags it runs on embedded defaults (TCP 0.0.0.0:7100, HTTP 0.0.0.0:7180, data in
/// ./data) with a development JWT secret and API token, and says so in its log.
///
/// Every setting can be given in a TOML file (--config) and as an environment variable
/// PUSH_<KEY>: nested keys with a double underscore (PUSH_AMQP__URL, PUSH_TLS__CERT), lists and
/// tables in TOML syntax (PUSH_WS_ALLOWED_ORIGINS='["https://app.example"]'); PUSH_API_TOKENS
/// also takes a comma-separated list. The common settings are also flags below. Precedence:
/// defaults < file < environment < flags. push-server.example.toml lists every setting with
/// its default.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Cli {
    /// TOML config file.
    #[arg(long, short, env = "PUSH_CONFIG")]
    config: Option<PathBuf>,
    /// Binary-protocol listen address.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// HTTP API listen address.
    #[arg(long)]
    http_listen: Option<SocketAddr>,
    /// Data directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Storage backend: sled or redb.
    #[arg(long)]
    store: Option<push_server::store::Backend>,
    /// HS256 secret for client tokens.
    #[arg(long)]
    jwt_secret: Option<String>,
    /// API bearer tokens, comma-separated.
    #[arg(long, value_delimiter = ',')]
    api_tokens: Option<Vec<String>>,
    /// Maximum simultaneous connections.
    #[arg(long)]
    max_connections: Option<usize>,
    /// Heartbeat interval in ms.
    #[arg(long)]
    heartbeat_interval_ms: Option<u64>,
    /// Heartbeat timeout in ms.
    #[arg(long)]
    heartbeat_timeout_ms: Option<u64>,
    /// Allow clients to PUBLISH to rooms they joined.
    #[arg(long)]
    allow_client_publish: Option<bool>,
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `push_server=debug`.
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    log: String,
}

impl Cli {
    /// The layered settings, and the `PUSH_*` variables that name no setting.
    fn into_config(self) -> anyhow::Result<(Config, Vec<String>)> {
        let (mut c, unknown) = push_server::config::load(self.config.as_deref())?;
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = self.$f { c.$f = v; } )* };
        }
        set!(
            listen,
            http_listen,
            data_dir,
            store,
            jwt_secret,
            api_tokens,
            max_connections,
            heartbeat_interval_ms,
            heartbeat_timeout_ms,
            allow_client_publish
        );
        c.validate()?;
        Ok((c, unknown))
    }
}

fn main() -> anyhow::Result<()> {
    push_server::memory::set_source(jemalloc_stats);
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&cli.log).context("--log")?)
        .init();
    let (config, unknown) = cli.into_config()?;
    for name in unknown {
        tracing::warn!("environment variable {name} names no setting and is ignored (see push-server.example.toml)");
    }
    let public_keys = !config.jwt_public_keys.is_empty() || config.jwt_jwks_file.is_some();
    if config.jwt_secret == DEV_JWT_SECRET && !public_keys {
        tracing::warn!("using the built-in development JWT secret; set jwt_secret / PUSH_JWT_SECRET in production");
    }
    if config.api_tokens.iter().any(|t| t == DEV_API_TOKEN) {
        tracing::warn!("the development API token {DEV_API_TOKEN:?} is accepted; set api_tokens / PUSH_API_TOKENS in production");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(run(config))
}

async fn run(config: Config) -> anyhow::Result<()> {
    let server = push_server::start(config).await?;
    let ctx = server.ctx.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("signal received, shutting down gracefully");
        ctx.shutdown.cancel();
    });
    server.wait().await;
    Ok(())
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
