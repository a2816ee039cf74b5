//! The `[tracing]` table: where message traces go (OTLP over HTTP) and how much of them is
//! kept. Without the table nothing is traced and a `traceparent` header is ignored.

use serde::Deserialize;

/// How spans are encoded for the collector (OTLP/HTTP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OtlpProtocol {
    /// `application/x-protobuf`, what collectors expect by default.
    #[default]
    Protobuf,
    /// `application/json`.
    Json,
}

/// Message tracing settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracingConfig {
    /// The collector's OTLP/HTTP endpoint; `/v1/traces` is added when the URL has no path.
    pub otlp_endpoint: String,
    /// Encoding of the export requests.
    #[serde(default)]
    pub protocol: OtlpProtocol,
    /// `service.name` of the exported spans.
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// `service.instance.id` of the exported spans, telling nodes apart; default the
    /// cluster's node name, else host name and binary-protocol port.
    #[serde(default)]
    pub instance: Option<String>,
    /// Share of publishes without a `traceparent` that start a trace of their own (0 to 1).
    /// Publishes with one follow its sampled flag.
    #[serde(default)]
    pub sample_ratio: f64,
    /// Spans are sent at least this often.
    #[serde(default = "default_export_interval_ms")]
    pub export_interval_ms: u64,
    /// An export request that takes longer is abandoned (its spans are lost).
    #[serde(default = "default_export_timeout_ms")]
    pub export_timeout_ms: u64,
    /// Finished spans waiting for export; beyond this new spans are dropped.
    #[serde(default = "default_max_queued_spans")]
    pub max_queued_spans: usize,
    /// Traced messages followed at once to their connections' writes and acks; the oldest
    /// is let go first.
    #[serde(default = "default_max_traced_messages")]
    pub max_traced_messages: usize,
    /// `push.write` spans recorded per message and stream (a broadcast reaches every
    /// connection; the fan-out span counts them all).
    #[serde(default = "default_max_write_spans")]
    pub max_write_spans: u32,
    /// How long a traced user message waits for its `push.ack` spans.
    #[serde(default = "default_ack_window_ms")]
    pub ack_window_ms: u64,
}

fn default_service_name() -> String {
    "push-server".into()
}
fn default_export_interval_ms() -> u64 {
    5_000
}
fn default_export_timeout_ms() -> u64 {
    10_000
}
fn default_max_queued_spans() -> usize {
    8_192
}
fn default_max_traced_messages() -> usize {
    1_024
}
fn default_max_write_spans() -> u32 {
    64
}
fn default_ack_window_ms() -> u64 {
    60_000
}

impl TracingConfig {
    /// Settings with every default, sending to `endpoint`.
    pub fn new(endpoint: impl Into<String>) -> TracingConfig {
        TracingConfig {
            otlp_endpoint: endpoint.into(),
            protocol: OtlpProtocol::default(),
            service_name: default_service_name(),
            instance: None,
            sample_ratio: 0.0,
            export_interval_ms: default_export_interval_ms(),
            export_timeout_ms: default_export_timeout_ms(),
            max_queued_spans: default_max_queued_spans(),
            max_traced_messages: default_max_traced_messages(),
            max_write_spans: default_max_write_spans(),
            ack_window_ms: default_ack_window_ms(),
        }
    }

    /// The first setting that cannot work, with the reason.
    pub(super) fn invalid(&self) -> Option<(&'static str, &'static str)> {
        let url = self.otlp_endpoint.as_str();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Some(("tracing.otlp_endpoint", "must be an http:// URL"));
        }
        if url.starts_with("https://") {
            return Some((
                "tracing.otlp_endpoint",
                "https is not supported; send to a local collector over http",
            ));
        }
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return Some(("tracing.sample_ratio", "must be between 0 and 1"));
        }
        if self.service_name.is_empty() {
            return Some(("tracing.service_name", "must not be empty"));
        }
        if self.export_interval_ms == 0 || self.export_timeout_ms == 0 {
            return Some((
                "tracing.export_interval_ms",
                "export_interval_ms and export_timeout_ms must be positive",
            ));
        }
        if self.max_queued_spans == 0 || self.max_traced_messages == 0 {
            return Some((
                "tracing.max_queued_spans",
                "max_queued_spans and max_traced_messages must be positive",
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_that_cannot_work_are_named() {
        assert_eq!(TracingConfig::new("http://c:4318").invalid(), None);
        let field = |t: TracingConfig| t.invalid().map(|(f, _)| f);
        assert_eq!(
            field(TracingConfig::new("c:4318")),
            Some("tracing.otlp_endpoint")
        );
        assert_eq!(
            field(TracingConfig::new("https://c:4318")),
            Some("tracing.otlp_endpoint")
        );
        let mut t = TracingConfig::new("http://c:4318");
        t.sample_ratio = 1.5;
        assert_eq!(field(t), Some("tracing.sample_ratio"));
        let parsed: TracingConfig =
            toml::from_str("otlp_endpoint = \"http://c:4318\"\nprotocol = \"json\"").unwrap();
        assert_eq!(parsed.protocol, OtlpProtocol::Json);
        assert_eq!(parsed.max_write_spans, 64);
    }
}
