//! Logs in Gardener's JSON shape (`level`, `ts`, `logger`, `msg`, then key/values), or plain text
//! for local runs.

use std::fmt;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogLevel {
    Debug,
    Info,
    Error,
}

struct JsonFields(serde_json::Map<String, serde_json::Value>);

impl Visit for JsonFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(key(field), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(key(field), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(key(field), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(key(field), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(key(field), value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.insert(key(field), value.to_string().into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(key(field), format!("{value:?}").into());
    }
}

fn key(field: &Field) -> String {
    match field.name() {
        "message" => "msg".into(),
        other => other.into(),
    }
}

/// zap's production JSON encoder, as Gardener components use it.
pub struct GardenerJson;

impl<S, N> FormatEvent<S, N> for GardenerJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, _ctx: &FmtContext<'_, S, N>, mut w: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let meta = event.metadata();
        let mut fields = JsonFields(serde_json::Map::new());
        event.record(&mut fields);
        let mut out = serde_json::Map::new();
        out.insert("level".into(), meta.level().as_str().to_lowercase().into());
        out.insert(
            "ts".into(),
            chrono::Utc::now()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                .into(),
        );
        out.insert("logger".into(), logger_name(meta.target()).into());
        out.insert(
            "msg".into(),
            fields
                .0
                .remove("msg")
                .unwrap_or(serde_json::Value::String(String::new())),
        );
        out.extend(fields.0);
        writeln!(w, "{}", serde_json::Value::Object(out))
    }
}

/// `gardener_extension_runtime_kata::extension::controller` → `runtime-kata.extension.controller`.
fn logger_name(target: &str) -> String {
    match target.strip_prefix("gardener_extension_runtime_kata") {
        Some(rest) => format!("runtime-kata{}", rest.replace("::", ".")),
        None => target.replace("::", "."),
    }
}

/// Installs the global subscriber. `RUST_LOG` refines the level when set.
pub fn init(level: LogLevel, format: LogFormat) {
    let level = match level {
        LogLevel::Debug => "debug",
        LogLevel::Info => "info",
        LogLevel::Error => "error",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(
            // kube logs every failed request at error level; we log failures ourselves, with context
            format!("{level},kube_client::client::builder=off,hyper=warn,rustls=warn"),
        )
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.event_format(GardenerJson).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logger_names_are_dotted() {
        assert_eq!(
            logger_name("gardener_extension_runtime_kata::extension::controller"),
            "runtime-kata.extension.controller"
        );
        assert_eq!(logger_name("kube_runtime::watcher"), "kube_runtime.watcher");
    }
}
