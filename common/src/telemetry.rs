//! Traces that cross processes: the spans of a service exported over OTLP/gRPC when
//! `log.otlp_endpoint` is set, and the W3C trace context (`traceparent`) carried from one
//! process to the next in HTTP and gRPC headers, or kept in a database row for work that runs
//! later (an operation).
//!
//! ```text
//!  cloudctl ──traceparent──▶ control plane: request ─▶ operation (row keeps traceparent)
//!                                              executor: operation ─▶ step ──gRPC metadata──▶
//!  host agent: grpc ─▶ instance action ─▶ vmm launch / restore / snapshot
//! ```
//! Without an endpoint no OpenTelemetry layer is installed: spans cost what they cost in logs,
//! [`traceparent`] is `None` and [`inject`] adds nothing.

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::config::LogConfig;

/// The trace exporter of a running service; [`Telemetry::shutdown`] sends what is left.
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

/// Installs the global subscriber (see [`crate::startup::init_logging`]) and, when
/// `log.otlp_endpoint` is set, a layer exporting its spans as service `service`. Call it on the
/// runtime: the exporter's gRPC channel lives there.
pub fn init(log: &LogConfig, service: &'static str) -> anyhow::Result<Telemetry> {
    let Some(endpoint) = &log.otlp_endpoint else {
        crate::startup::init_logging(log);
        return Ok(Telemetry { provider: None });
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint.clone())
        .build()
        .map_err(|e| anyhow::anyhow!("cannot export traces to {endpoint}: {e}"))?;
    let resource = opentelemetry_sdk::Resource::builder().with_service_name(service).build();
    let provider = SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build();
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer(service));
    crate::startup::install(log, Some(layer));
    tracing::info!(%endpoint, "exporting traces over OTLP");
    Ok(Telemetry { provider: Some(provider) })
}

impl Telemetry {
    /// Exports the spans still buffered and stops the exporter.
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else { return };
        let done = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        if let Ok(Err(e)) = done {
            tracing::warn!(error = %e, "cannot send the last traces");
        }
    }
}

/// The current span's trace context as a W3C `traceparent` value, if it is traced.
pub fn traceparent() -> Option<String> {
    let mut found = None;
    inject(|key, value| {
        if key == "traceparent" {
            found = Some(value);
        }
    });
    found
}

/// The trace id of a `traceparent` value (32 hex digits), if it is one.
pub fn trace_id(traceparent: &str) -> Option<&str> {
    let id = traceparent.split('-').nth(1)?;
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) && id.bytes().any(|b| b != b'0')).then_some(id)
}

/// Writes the current span's trace context as headers (`traceparent`, `tracestate`) through
/// `set(name, value)`: into the gRPC metadata of a call, for instance.
pub fn inject(set: impl FnMut(&str, String)) {
    let context = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&context, &mut Setter(set));
}

/// Makes `span` a child of the trace context in headers read through `get(name)`, when they
/// hold a valid one (others are ignored: a caller cannot break a request with a bad header).
pub fn set_parent(span: &tracing::Span, get: impl Fn(&str) -> Option<String>) {
    let headers = Headers { traceparent: get("traceparent"), tracestate: get("tracestate") };
    let context = TraceContextPropagator::new().extract(&headers);
    if context.span().span_context().is_valid() {
        let _ = span.set_parent(context);
    }
}

/// [`set_parent`] from a stored `traceparent` value.
pub fn set_parent_traceparent(span: &tracing::Span, traceparent: &str) {
    set_parent(span, |key| (key == "traceparent").then(|| traceparent.to_owned()));
}

struct Setter<F>(F);

impl<F: FnMut(&str, String)> Injector for Setter<F> {
    fn set(&mut self, key: &str, value: String) {
        (self.0)(key, value);
    }
}

/// The two headers of W3C trace context.
struct Headers {
    traceparent: Option<String>,
    tracestate: Option<String>,
}

impl Extractor for Headers {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            "traceparent" => self.traceparent.as_deref(),
            "tracestate" => self.tracestate.as_deref(),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent", "tracestate"]
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn trace_ids_are_read_from_valid_traceparents_only() {
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        assert_eq!(trace_id(&format!("00-{id}-00f067aa0ba902b7-01")), Some(id));
        assert_eq!(trace_id("00-00000000000000000000000000000000-00f067aa0ba902b7-01"), None);
        assert_eq!(trace_id("00-xyz-00f067aa0ba902b7-01"), None);
        assert_eq!(trace_id("garbage"), None);
    }

    #[test]
    fn without_an_exporter_nothing_is_traced_or_injected() {
        assert_eq!(traceparent(), None);
        let mut set = Vec::new();
        inject(|k, v| set.push((k.to_owned(), v)));
        assert!(set.is_empty());
    }
}
