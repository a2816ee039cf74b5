//! Sending finished spans to the collector: the OTLP/HTTP exporter of `opentelemetry-otlp`,
//! whose requests are made on the server's tokio runtime.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use opentelemetry_http::hyper::HyperClient;
use opentelemetry_http::{HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig, WithHttpConfig};

use super::TraceError;
use crate::config::{OtlpProtocol, TracingConfig};

/// The SDK's batch processor exports from a thread of its own, outside any runtime, where
/// the hyper client cannot run: each request is handed to the server's runtime instead.
#[derive(Debug, Clone)]
struct OnRuntime {
    client: Arc<HyperClient>,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl HttpClient for OnRuntime {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        self.runtime
            .spawn(async move { client.send_bytes(request).await })
            .await
            .map_err(|e| HttpError::from(format!("export task failed: {e}")))?
    }
}

/// The collector URL: `/v1/traces` is the OTLP path when the setting names only a host.
fn traces_url(endpoint: &str) -> String {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    if rest.trim_end_matches('/').contains('/') {
        endpoint.to_string()
    } else {
        format!("{}/v1/traces", endpoint.trim_end_matches('/'))
    }
}

/// The exporter for `cfg`, making its requests on `runtime`.
pub(super) fn exporter(
    cfg: &TracingConfig,
    runtime: tokio::runtime::Handle,
) -> Result<SpanExporter, TraceError> {
    let timeout = Duration::from_millis(cfg.export_timeout_ms);
    let client = OnRuntime {
        client: Arc::new(HyperClient::with_default_connector(timeout, None)),
        runtime,
    };
    let protocol = match cfg.protocol {
        OtlpProtocol::Protobuf => Protocol::HttpBinary,
        OtlpProtocol::Json => Protocol::HttpJson,
    };
    SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_endpoint(traces_url(&cfg.otlp_endpoint))
        .with_protocol(protocol)
        .with_timeout(timeout)
        .build()
        .map_err(|e| TraceError::Exporter(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::traces_url;

    #[test]
    fn a_bare_collector_address_gets_the_otlp_path() {
        let bare = "http://collector:4318";
        assert_eq!(traces_url(bare), "http://collector:4318/v1/traces");
        assert_eq!(traces_url("http://c:4318/"), "http://c:4318/v1/traces");
        let full = "http://c:4318/custom/traces";
        assert_eq!(traces_url(full), full);
    }
}
