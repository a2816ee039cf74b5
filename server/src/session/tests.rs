//! Size budget of a connection's task, and admission release.

use super::*;
use crate::context::Ctx;
use std::sync::atomic::Ordering;

fn ctx_with(tls: Option<Arc<rustls::ServerConfig>>) -> Arc<Ctx> {
    let dir =
        std::env::temp_dir().join(format!("push-size-{}", crate::delivery::ids::random_u64()));
    let config = crate::Config {
        data_dir: dir,
        ..crate::Config::default()
    };
    Ctx::build(config, tls, Arc::new(crate::clock::SystemClock)).unwrap()
}

async fn accepted() -> (TcpStream, TcpStream, SocketAddr) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
    let (s, peer) = l.accept().await.unwrap();
    (c, s, peer)
}

/// tokio allocates each task in a 128-byte-aligned cell of about 104 bytes plus the future;
/// a future of at most 24 bytes keeps the whole cell in one 128-byte slot, which is part of
/// the idle-connection memory budget (BENCHMARKS.md).
#[tokio::test]
async fn connection_task_future_fits_the_smallest_task_cell() {
    let (_c, s, peer) = accepted().await;
    let ctx = ctx_with(None);
    let fut = serve(s, peer, ctx.admit(peer).unwrap());
    assert!(
        std::mem::size_of_val(&fut) <= 24,
        "{}",
        std::mem::size_of_val(&fut)
    );
    // With the Arc's two counters, 144 bytes keep it in jemalloc's 160-byte class.
    assert!(
        std::mem::size_of::<Conn>() <= 144,
        "{}",
        std::mem::size_of::<Conn>()
    );
}

/// The admission is released when TLS cannot even start (it once leaked a count of the
/// global connection limit per failure).
#[tokio::test]
async fn a_connection_whose_tls_setup_fails_releases_its_admission() {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::try_from(ck.key_pair.serialize_der()).unwrap();
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![ck.cert.der().clone()], key)
    .unwrap();
    // Out of rustls' range: ServerConnection::new refuses it.
    tls.max_fragment_size = Some(1);
    let ctx = ctx_with(Some(Arc::new(tls)));
    let (_c, s, peer) = accepted().await;
    let admission = ctx.admit(peer).unwrap();
    assert_eq!(ctx.open.load(Ordering::Relaxed), 1);
    serve(s, peer, admission).await;
    assert_eq!(ctx.open.load(Ordering::Relaxed), 0);
}
