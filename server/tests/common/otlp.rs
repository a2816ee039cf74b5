//! An in-process OTLP/HTTP trace receiver: decodes each export request (protobuf or JSON,
//! by its content type) into plain spans the tests can check.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use prost::Message;
use push_server::config::TracingConfig;
use serde_json::Value;
use tokio::sync::mpsc;

/// One received span, ids in lowercase hex (empty parent for a root).
#[derive(Debug, Clone)]
pub(crate) struct Span {
    pub name: String,
    pub trace: String,
    pub id: String,
    pub parent: String,
    pub start_ns: u64,
    pub end_ns: u64,
    pub attrs: HashMap<String, String>,
    /// The content type of the request that carried it.
    pub encoding: String,
    /// The sender's `service.instance.id`.
    pub instance: String,
}

/// The receiver and what it has received so far.
pub(crate) struct Collector {
    /// `http://127.0.0.1:port`, the value for `tracing.otlp_endpoint`.
    pub url: String,
    rx: mpsc::UnboundedReceiver<Span>,
    /// Every span received, in arrival order.
    pub spans: Vec<Span>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn from_proto(body: &[u8]) -> Result<Vec<Span>, String> {
    let req = ExportTraceServiceRequest::decode(body).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for rs in req.resource_spans {
        let instance = rs
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.instance.id")
            .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                Any::StringValue(s) => Some(s.clone()),
                _ => None,
            })
            .unwrap_or_default();
        for ss in rs.scope_spans {
            for s in ss.spans {
                let attrs = s
                    .attributes
                    .iter()
                    .map(|kv| {
                        let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                            Some(Any::StringValue(s)) => s.clone(),
                            Some(Any::IntValue(i)) => i.to_string(),
                            Some(Any::BoolValue(b)) => b.to_string(),
                            other => format!("{other:?}"),
                        };
                        (kv.key.clone(), v)
                    })
                    .collect();
                out.push(Span {
                    name: s.name,
                    trace: hex(&s.trace_id),
                    id: hex(&s.span_id),
                    parent: hex(&s.parent_span_id),
                    start_ns: s.start_time_unix_nano,
                    end_ns: s.end_time_unix_nano,
                    attrs,
                    encoding: "application/x-protobuf".into(),
                    instance: instance.clone(),
                });
            }
        }
    }
    Ok(out)
}

/// A JSON number that OTLP/JSON may also write as a string.
fn num(v: &Value) -> u64 {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or(0)
}

fn from_json(body: &[u8]) -> Result<Vec<Span>, String> {
    let req: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let list = |v: &Value, key: &str| v[key].as_array().cloned().unwrap_or_default();
    let mut out = Vec::new();
    for rs in list(&req, "resourceSpans") {
        let instance = list(&rs["resource"], "attributes")
            .iter()
            .find(|kv| kv["key"] == "service.instance.id")
            .and_then(|kv| kv["value"]["stringValue"].as_str().map(str::to_string))
            .unwrap_or_default();
        for ss in list(&rs, "scopeSpans") {
            for s in list(&ss, "spans") {
                let attrs = list(&s, "attributes")
                    .iter()
                    .map(|kv| {
                        let v = &kv["value"];
                        let text = v["stringValue"]
                            .as_str()
                            .map(str::to_string)
                            .or_else(|| v.get("intValue").map(|i| num(i).to_string()))
                            .or_else(|| v["boolValue"].as_bool().map(|b| b.to_string()))
                            .unwrap_or_else(|| v.to_string());
                        (kv["key"].as_str().unwrap_or_default().to_string(), text)
                    })
                    .collect();
                let text = |k: &str| s[k].as_str().unwrap_or_default().to_lowercase();
                out.push(Span {
                    name: text("name"),
                    trace: text("traceId"),
                    id: text("spanId"),
                    parent: text("parentSpanId"),
                    start_ns: num(&s["startTimeUnixNano"]),
                    end_ns: num(&s["endTimeUnixNano"]),
                    attrs,
                    encoding: "application/json".into(),
                    instance: instance.clone(),
                });
            }
        }
    }
    Ok(out)
}

impl Collector {
    /// Starts the receiver on an ephemeral localhost port.
    pub(crate) async fn start() -> Collector {
        let (tx, rx) = mpsc::unbounded_channel();
        let app = axum::Router::new().route(
            "/v1/traces",
            post(move |headers: HeaderMap, body: Bytes| {
                let tx = tx.clone();
                async move {
                    let ct = headers
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default();
                    let spans = match ct {
                        "application/x-protobuf" => from_proto(&body),
                        "application/json" => from_json(&body),
                        other => Err(format!("unexpected content type {other:?}")),
                    };
                    match spans {
                        Ok(spans) => {
                            for s in spans {
                                let _ = tx.send(s);
                            }
                            (StatusCode::OK, String::new())
                        }
                        Err(e) => (StatusCode::BAD_REQUEST, e),
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Collector {
            url: format!("http://{addr}"),
            rx,
            spans: Vec::new(),
        }
    }

    /// Waits until the spans received satisfy `done` (panics after `within`).
    pub(crate) async fn until(&mut self, within: Duration, done: impl Fn(&[Span]) -> bool) {
        let deadline = tokio::time::Instant::now() + within;
        while !done(&self.spans) {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(s)) => self.spans.push(s),
                _ => panic!("spans not received in time; have {:#?}", self.spans),
            }
        }
    }

    /// Takes whatever else has arrived (after the server flushed its spans at shutdown).
    pub(crate) fn drain(&mut self) {
        while let Ok(s) = self.rx.try_recv() {
            self.spans.push(s);
        }
    }

    /// `base` with tracing to this receiver (spans sent every 20 ms), tuned by `tune`.
    pub(crate) fn config(
        &self,
        base: push_server::Config,
        tune: impl FnOnce(&mut TracingConfig),
    ) -> push_server::Config {
        let mut t = TracingConfig::new(self.url.clone());
        t.export_interval_ms = 20;
        tune(&mut t);
        push_server::Config {
            tracing: Some(t),
            ..base
        }
    }

    /// The only span named `name` in trace `trace` (panics unless there is exactly one).
    pub(crate) fn one(&self, trace: &str, name: &str) -> &Span {
        let found = self.named(trace, name);
        assert_eq!(found.len(), 1, "one {name} in {:#?}", self.spans);
        found[0]
    }

    /// The spans named `name` in trace `trace`.
    pub(crate) fn named(&self, trace: &str, name: &str) -> Vec<&Span> {
        self.spans
            .iter()
            .filter(|s| s.trace == trace && s.name == name)
            .collect()
    }
}

/// POST /api/v1/push with `body` and, if given, a `traceparent` header; expects 200.
pub(crate) async fn push_traced(
    server: &push_server::ServerHandle,
    traceparent: Option<&str>,
    body: &str,
) {
    let headers: Vec<(&str, &str)> = traceparent
        .map(|t| ("traceparent", t))
        .into_iter()
        .collect();
    let (status, text) = super::http_with(
        server.http_addr,
        "POST",
        "/api/v1/push",
        Some(super::API_TOKEN),
        &headers,
        body,
    )
    .await;
    assert_eq!(status, 200, "{text}");
}
