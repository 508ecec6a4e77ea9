//! W3C trace context (`traceparent`) carried across Kafka in message headers.
//!
//! A saga keeps the trace id of the trigger that started it (or, when the trigger carried
//! none, one derived from the saga id); every command it sends carries that trace id with a
//! fresh span id, and participants answer with the command's `traceparent`, so one trace
//! follows a saga across every service.

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use uuid::Uuid;

pub use schemas::headers::TRACEPARENT as TRACEPARENT_HEADER;

/// Makes `span` a child of the remote span `traceparent` names, so an exporter (when one is
/// installed) shows it in that trace. Without an OpenTelemetry layer this does nothing.
pub fn continue_trace(span: &tracing::Span, traceparent: &str) {
    let mut parts = traceparent.split('-');
    let (Some(_), Some(trace), Some(parent), Some(flags)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return;
    };
    let (Ok(trace), Ok(parent), Ok(flags)) = (
        TraceId::from_hex(trace),
        SpanId::from_hex(parent),
        u8::from_str_radix(flags, 16),
    ) else {
        return;
    };
    if trace == TraceId::INVALID || parent == SpanId::INVALID {
        return;
    }
    let remote = SpanContext::new(
        trace,
        parent,
        TraceFlags::new(flags),
        true,
        TraceState::default(),
    );
    let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
}

/// [`continue_trace`] for a trace known only by its id (a saga whose trigger carried no
/// `traceparent`): the span joins the trace under a parent derived from the trace id.
pub fn continue_trace_id(span: &tracing::Span, trace_id: &str) {
    if trace_id.len() == 32 {
        continue_trace(span, &format!("00-{trace_id}-{}-01", &trace_id[16..]));
    }
}

/// The trace id (32 lowercase hex digits) of a `traceparent` value, if it is well formed.
pub fn trace_id_of(traceparent: &str) -> Option<String> {
    let mut parts = traceparent.split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    let valid = hex(version, 2)
        && hex(trace, 32)
        && hex(span, 16)
        && hex(flags, 2)
        && parts.next().is_none()
        && trace.bytes().any(|b| b != b'0');
    valid.then(|| trace.to_ascii_lowercase())
}

/// The trace id a saga uses when its trigger carried none: the saga id's hex digits.
pub fn trace_id_for_saga(saga_id: Uuid) -> String {
    saga_id.simple().to_string()
}

/// A `traceparent` for a new span (a fresh span id) in trace `trace_id`, sampled.
pub fn child_traceparent(trace_id: &str) -> String {
    let span = Uuid::new_v4().simple().to_string();
    format!("00-{trace_id}-{}-01", &span[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_traceparent_yields_its_trace_id() {
        let header = "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01";
        assert_eq!(
            trace_id_of(header).as_deref(),
            Some("0af7651916cd43dd8448eb211c80319c")
        );
    }

    #[test]
    fn malformed_traceparents_are_ignored() {
        for bad in [
            "",
            "00-abc-def-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
            "00-0af7651916cd43dd8448eb211c80319g-b7ad6b7169203331-01",
        ] {
            assert_eq!(trace_id_of(bad), None, "{bad}");
        }
    }

    #[test]
    fn children_keep_the_trace_and_get_fresh_spans() {
        let trace = trace_id_for_saga(Uuid::new_v4());
        let (a, b) = (child_traceparent(&trace), child_traceparent(&trace));
        assert_ne!(a, b);
        assert_eq!(trace_id_of(&a), Some(trace.clone()));
        assert_eq!(trace_id_of(&b), Some(trace));
    }
}
