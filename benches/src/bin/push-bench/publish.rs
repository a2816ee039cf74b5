//! Publishing through the HTTP API at a steady rate, as the scenarios with bystanders do.

/// Publishes `n` messages through `POST /api/v1/push` at `rate` per second from `t0`, the body
/// of message `i` being `body(i)`; samples the server's RSS every 25 messages. Returns the
/// publishes that were not answered 200 and the highest RSS seen (at least `rss_floor`).
pub(crate) async fn publish_paced(
    http: &mut crate::http::Http,
    token: &str,
    (n, rate, t0): (usize, f64, std::time::Instant),
    pid: &crate::procstat::Servers,
    rss_floor: u64,
    mut body: impl FnMut(usize) -> String,
) -> (u64, u64) {
    let mut failed = 0;
    let mut rss_peak = rss_floor;
    for i in 0..n {
        let at = t0 + std::time::Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(at.into()).await;
        if !matches!(
            http.post("/api/v1/push", token, &body(i)).await,
            Ok((200, _))
        ) {
            failed += 1;
        }
        if i % 25 == 0 {
            let rss = pid.rss_bytes().unwrap_or(0);
            rss_peak = rss_peak.max(rss);
        }
    }
    (failed, rss_peak)
}
