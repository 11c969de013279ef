//! Logging and tracing, set up once per process: `RUST_LOG` filters, `AGENTQ_LOG_FORMAT=json` for
//! machine-readable logs, and OTLP export of spans when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
//!
//! Spans always carry OpenTelemetry context (exported or not), so one session is one trace: the
//! API's span for the `POST` is the parent of every step's span, on every worker. The session
//! keeps its W3C `traceparent` and each step job carries it ([`traceparent`],
//! [`continue_trace`]); the `session`/`step` spans record their `trace_id`, which JSON log
//! lines carry with `session_id` and `step`.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Keeps the exporter alive; flushes spans when dropped at the end of `main`.
pub struct TelemetryGuard(Option<opentelemetry_sdk::trace::SdkTracerProvider>);

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.0.take() {
            let _ = provider.shutdown();
        }
    }
}

/// `default_filter` applies when `RUST_LOG` is unset (e.g. "info" for services, "warn" for the CLI).
pub fn init(service_name: &'static str, default_filter: &str) -> TelemetryGuard {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let json = std::env::var("AGENTQ_LOG_FORMAT").is_ok_and(|f| f == "json");
    let fmt = if json {
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed()
    };
    let provider = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
        .ok()
        .filter(|e| !e.is_empty())
        .and_then(|_| otlp_provider(service_name))
        .unwrap_or_else(|| {
            // No exporter: spans still get trace ids, for logs and propagation.
            opentelemetry_sdk::trace::SdkTracerProvider::builder()
                .with_resource(resource(service_name))
                .build()
        });
    let otel = tracing_opentelemetry::layer().with_tracer(provider.tracer(service_name));
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init();
    TelemetryGuard(Some(provider))
}

fn resource(service_name: &'static str) -> opentelemetry_sdk::Resource {
    opentelemetry_sdk::Resource::builder()
        .with_service_name(service_name)
        .build()
}

/// The span's trace as a W3C `traceparent` header value, to hand to another process.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
    carrier.remove("traceparent")
}

/// Makes `span` a child of the trace in `traceparent` (from another process).
pub fn continue_trace(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(traceparent) = traceparent else {
        return;
    };
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let parent = TraceContextPropagator::new().extract(&carrier);
    let _ = span.set_parent(parent);
}

/// The span's trace id (32 hex digits), recorded in its `trace_id` field for the logs.
pub fn record_trace_id(span: &tracing::Span) {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    if span_context.is_valid() {
        span.record("trace_id", span_context.trace_id().to_string());
    }
}

fn otlp_provider(
    service_name: &'static str,
) -> Option<opentelemetry_sdk::trace::SdkTracerProvider> {
    let exporter = match opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()
    {
        Ok(exporter) => exporter,
        Err(e) => {
            eprintln!("OTEL_EXPORTER_OTLP_ENDPOINT is set but the OTLP exporter failed: {e}");
            return None;
        }
    };
    Some(
        opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource(service_name))
            .build(),
    )
}
