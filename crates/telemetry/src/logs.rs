//! Logs: human-readable lines by default, one JSON object per line with `LOG_FORMAT=json` (for a
//! log pipeline). Either way an event carries the fields of the spans it happened in: the API's
//! `request` span (`request.id`, the client's own id) and the workers' `job` span (`job.id`,
//! `job.kind`), so every line of a request or a job can be found by its id. `RUST_LOG` filters.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::{EnvFilter, Registry};

use crate::traces::Exporting;

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Lines for people.
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `fields` (with `message`),
    /// `span` (the innermost) and `spans` (every enclosing one, outermost first).
    Json,
}

impl LogFormat {
    /// `LOG_FORMAT`: `json`, or `text` (the default when unset).
    pub fn from_env_value(value: Option<&str>) -> Result<LogFormat, String> {
        match value.map(str::trim) {
            None | Some("") | Some("text") => Ok(LogFormat::Text),
            Some("json") => Ok(LogFormat::Json),
            Some(other) => Err(format!("LOG_FORMAT: {other:?} is neither text nor json")),
        }
    }
}

/// The subscriber for `format`, writing to `writer` (`RUST_LOG`, default `info`), with the
/// exporting trace layer of `service` when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
pub fn subscriber<W>(
    format: LogFormat,
    writer: W,
    service: Option<&str>,
) -> (Box<dyn tracing::Subscriber + Send + Sync>, Option<Exporting>)
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let (traces, exporting) = match service.map(crate::traces::layer::<Registry>) {
        Some(Ok(Some((layer, exporting)))) => (Some(layer), Some(exporting)),
        Some(Err(e)) => {
            eprintln!("{e}; traces are not exported");
            (None, None)
        }
        _ => (None, None),
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let base = tracing_subscriber::registry().with(traces).with(filter);
    let lines = tracing_subscriber::fmt::layer().with_writer(writer);
    let subscriber: Box<dyn tracing::Subscriber + Send + Sync> = match format {
        LogFormat::Text => Box::new(base.with(lines)),
        LogFormat::Json => Box::new(base.with(lines.json().with_current_span(true).with_span_list(true))),
    };
    (subscriber, exporting)
}

/// What [`init`] installed; [`Telemetry::shutdown`] flushes the traces still buffered.
#[derive(Debug)]
pub struct Telemetry(Option<Exporting>);

impl Telemetry {
    /// Flushes and stops the trace exporter, if any (at the process's end).
    pub async fn shutdown(self) {
        if let Some(exporting) = self.0 {
            exporting.shutdown().await;
        }
    }
}

/// Installs the process's subscriber, writing logs to stdout and exporting the traces of
/// `service` when configured.
pub fn init(format: LogFormat, service: &str) -> Telemetry {
    let (subscriber, exporting) = subscriber(format, std::io::stdout, Some(service));
    if tracing::subscriber::set_global_default(subscriber).is_err() {
        eprintln!("a log subscriber was already installed");
    }
    Telemetry(exporting)
}

/// [`init`] with the format `LOG_FORMAT` asks for; an invalid value is reported on stderr and
/// text is used.
pub fn init_from_env(service: &str) -> Telemetry {
    let format = LogFormat::from_env_value(std::env::var("LOG_FORMAT").ok().as_deref()).unwrap_or_else(|e| {
        eprintln!("{e}; logging as text");
        LogFormat::Text
    });
    init(format, service)
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::{LogFormat, subscriber};

    /// A writer into a shared buffer.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn json_lines_carry_the_request_and_job_they_happened_in() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let (logs, _) = subscriber(LogFormat::Json, move || writer.clone(), None);
        tracing::subscriber::with_default(logs, || {
            let request = tracing::info_span!("request", request.id = "0193-req");
            let _r = request.enter();
            let job = tracing::info_span!("job", job.id = "0193-job", job.kind = "provision");
            let _j = job.enter();
            tracing::info!(step = "clone template", "step done");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let line: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(line["fields"]["message"], "step done");
        assert_eq!(line["fields"]["step"], "clone template");
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["span"]["job.id"], "0193-job");
        assert_eq!(line["spans"][0]["request.id"], "0193-req");
        assert_eq!(line["spans"][1]["job.kind"], "provision");
    }

    #[test]
    fn log_format_reads_json_text_or_nothing() {
        assert_eq!(LogFormat::from_env_value(None), Ok(LogFormat::Text));
        assert_eq!(LogFormat::from_env_value(Some("json")), Ok(LogFormat::Json));
        assert_eq!(LogFormat::from_env_value(Some("text")), Ok(LogFormat::Text));
        assert!(LogFormat::from_env_value(Some("xml")).is_err());
    }
}
