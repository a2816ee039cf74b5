//! The session's own TLS record layer against rustls' client: every suite of both versions,
//! records across slice and 16 KiB boundaries, close_notify, key updates either way.

use std::io::IoSlice;
use std::sync::Arc;

use bytes::BytesMut;
use rustls::crypto::ring::{cipher_suite as cs, default_provider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::UnbufferedServerConnection;
use rustls::{ClientConfig, RootCertStore, ServerConfig, SupportedCipherSuite};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream;

use super::Link;

fn configs(suite: SupportedCipherSuite) -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert: CertificateDer<'static> = ck.cert.der().clone();
    let key = PrivateKeyDer::try_from(ck.key_pair.serialize_der()).unwrap();
    let mut server = ServerConfig::builder_with_provider(Arc::new(default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    server.enable_secret_extraction = true;
    let mut roots = RootCertStore::empty();
    roots.add(cert).unwrap();
    let mut provider = default_provider();
    provider.cipher_suites = vec![suite];
    let client = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[suite.version()])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (Arc::new(server), Arc::new(client))
}

/// Accepts one connection from a rustls client (handshaking in a task of its own): the server
/// link, before its handshake, and the client's handshake result.
async fn accept_client(
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
) -> (Link, JoinHandle<std::io::Result<TlsStream<TcpStream>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connect = tokio::spawn(async move {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        tokio_rustls::TlsConnector::from(client)
            .connect(name, tcp)
            .await
    });
    let (tcp, _) = listener.accept().await.unwrap();
    let link = Link::tls_accept(tcp, UnbufferedServerConnection::new(server).unwrap());
    (link, connect)
}

/// A server link past its handshake and the rustls client at the other end.
async fn pair(suite: SupportedCipherSuite) -> (Link, TlsStream<TcpStream>) {
    let (server, client) = configs(suite);
    let (mut link, connect) = accept_client(server, client).await;
    link.tls_handshake().await.unwrap();
    (link, connect.await.unwrap().unwrap())
}

/// Reads from the server link until `n` bytes (or the end of the stream).
async fn read_link(link: &mut Link, n: usize) -> Vec<u8> {
    let mut buf = BytesMut::new();
    while buf.len() < n {
        link.readable().await.unwrap();
        match link.try_read_buf(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("{e}"),
        }
    }
    buf.to_vec()
}

/// Writes `parts` through the link's vectored path, then flushes.
async fn write_link(link: &mut Link, parts: &[&[u8]]) {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let mut done = 0;
    while done < total {
        let (mut skip, mut slices) = (done, Vec::new());
        for p in parts {
            if skip >= p.len() {
                skip -= p.len();
                continue;
            }
            slices.push(IoSlice::new(&p[skip..]));
            skip = 0;
        }
        match link.try_write_vectored(&slices) {
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("{e}"),
        }
        link.tcp().writable().await.unwrap();
    }
    while link.wants_flush() {
        match link.try_flush() {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                link.tcp().writable().await.unwrap()
            }
            Err(e) => panic!("{e}"),
        }
    }
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[tokio::test]
async fn every_suite_of_both_versions_carries_data_both_ways_and_closes() {
    let suites = [
        cs::TLS13_AES_128_GCM_SHA256,
        cs::TLS13_AES_256_GCM_SHA384,
        cs::TLS13_CHACHA20_POLY1305_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    ];
    for suite in suites {
        let (mut link, mut client) = pair(suite).await;
        assert!(link.has_own_records(), "{suite:?}");
        let up = pattern(40_000, 1);
        client.write_all(&up).await.unwrap();
        client.flush().await.unwrap();
        assert_eq!(read_link(&mut link, up.len()).await, up, "{suite:?}");
        // Three slices, 50,000 bytes: records cross slice and 16 KiB boundaries.
        let (a, b, c) = (pattern(10, 2), pattern(30_000, 3), pattern(19_990, 4));
        write_link(&mut link, &[&a, &b, &c]).await;
        let mut down = vec![0u8; 50_000];
        client.read_exact(&mut down).await.unwrap();
        assert_eq!(down, [a, b, c].concat(), "{suite:?}");
        client.shutdown().await.unwrap();
        assert!(read_link(&mut link, 1).await.is_empty(), "{suite:?}");
    }
}

#[tokio::test]
async fn a_key_update_from_the_client_is_followed_and_answered() {
    let (mut link, mut client) = pair(cs::TLS13_AES_128_GCM_SHA256).await;
    client.write_all(b"before").await.unwrap();
    assert_eq!(read_link(&mut link, 6).await, b"before");
    // rustls asks the peer to update its keys as well.
    client.get_mut().1.refresh_traffic_keys().unwrap();
    client.write_all(b"after").await.unwrap();
    client.flush().await.unwrap();
    assert_eq!(read_link(&mut link, 5).await, b"after");
    write_link(&mut link, &[b"reply"]).await;
    let mut reply = [0u8; 5];
    client.read_exact(&mut reply).await.unwrap();
    assert_eq!(&reply, b"reply");
    // Our KeyUpdate went under the old key; the reply is the first record under the new one.
    assert_eq!(link.records_mut().unwrap().tx_seq(), 1);
}

#[tokio::test]
async fn the_server_replaces_its_keys_before_the_suite_limit() {
    let (mut link, mut client) = pair(cs::TLS13_AES_256_GCM_SHA384).await;
    let before = link.records_mut().unwrap().tx_seq();
    link.records_mut().unwrap().set_tx_limit(2);
    for i in 0..7u8 {
        write_link(&mut link, &[&[i; 100]]).await;
    }
    let mut all = vec![0u8; 700];
    client.read_exact(&mut all).await.unwrap();
    let want: Vec<u8> = (0..7u8).flat_map(|i| [i; 100]).collect();
    assert_eq!(all, want);
    // Seven records went out, but never more than the limit under one key.
    assert!(link.records_mut().unwrap().tx_seq() <= before + 2);
    // And the client's records still open after our updates.
    client.write_all(b"ok").await.unwrap();
    assert_eq!(read_link(&mut link, 2).await, b"ok");
}

#[tokio::test]
async fn tls12_stops_at_the_record_limit_with_a_reason() {
    let (mut link, _client) = pair(cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256).await;
    link.records_mut().unwrap().set_tx_limit(1);
    write_link(&mut link, &[b"one"]).await;
    let err = link
        .try_write_vectored(&[IoSlice::new(b"two")])
        .unwrap_err();
    assert!(err.to_string().contains("record limit"), "{err}");
}

#[tokio::test]
async fn a_failed_handshake_tells_the_client_why_with_an_alert() {
    // The client speaks only TLS 1.2, the server only TLS 1.3.
    let (_, client) = configs(cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256);
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let key = PrivateKeyDer::try_from(ck.key_pair.serialize_der()).unwrap();
    let server = ServerConfig::builder_with_provider(Arc::new(default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![ck.cert.der().clone()], key)
        .unwrap();
    let (mut link, connect) = accept_client(Arc::new(server), client).await;
    let err = link.tls_handshake().await.unwrap_err();
    assert!(err.to_string().starts_with("TLS: "), "{err}");
    drop(link);
    let client_err = connect.await.unwrap().unwrap_err();
    assert!(
        client_err.to_string().contains("alert"),
        "the client saw no alert: {client_err}"
    );
}
