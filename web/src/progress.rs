//! A job's live progress: `GET /v1/jobs/{id}/events` over `EventSource` (the session cookie
//! goes with it), and polling of `GET /v1/jobs/{id}` when SSE cannot be used (an API key
//! cannot be sent by `EventSource`) or the stream fails. Both feed the same signals.

use std::cell::RefCell;
use std::rc::Rc;

use nimbus_domain::{JobHandle, JobStatus, ProgressEvent};
use sycamore::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen::closure::Closure;
use web_sys::{EventSource, MessageEvent};

use crate::api::{self, Failure};
use crate::session::Session;

/// How often the fallback polls.
const POLL_MS: u32 = 1000;

/// One line of the job's step log.
#[derive(Clone, Debug, PartialEq)]
pub struct StepLine {
    pub step: String,
    pub progress: i16,
    pub status: JobStatus,
    pub message: Option<String>,
}

/// What the page renders.
#[derive(Clone, Copy)]
pub struct Live {
    /// The latest handle (status, progress, step, error).
    pub job: Signal<Option<JobHandle>>,
    /// Every step seen, in order.
    pub steps: Signal<Vec<StepLine>>,
    /// `live` (SSE) or `polling`.
    pub transport: Signal<&'static str>,
    /// Why the job could not be read.
    pub failure: Signal<Option<Failure>>,
}

impl Live {
    fn push(self, line: StepLine) {
        self.steps.update(|steps| {
            let same = steps.last().is_some_and(|l| l.step == line.step && l.status == line.status);
            if same {
                if let Some(last) = steps.last_mut() {
                    *last = line;
                }
            } else {
                steps.push(line);
            }
        });
    }

    fn apply_handle(self, h: JobHandle) {
        if let Some(step) = &h.step {
            self.push(StepLine {
                step: step.clone(),
                progress: i16::from(h.progress),
                status: h.status,
                message: h.error.as_ref().map(|e| e.message.clone()),
            });
        }
        self.job.set(Some(h));
    }
}

struct Stream {
    source: EventSource,
    _callbacks: Vec<Closure<dyn FnMut(MessageEvent)>>,
}

/// Follows job `id` for as long as the calling scope lives.
pub fn follow(id: String) -> Live {
    let live = Live {
        job: create_signal(None),
        steps: create_signal(Vec::new()),
        transport: create_signal("connecting"),
        failure: create_signal(None),
    };
    let path = format!("/v1/jobs/{id}");
    {
        let path = path.clone();
        crate::task::spawn(async move {
            match api::get::<JobHandle>(&path).await {
                Ok(h) => {
                    // SSE may already have delivered a newer state.
                    if live.job.with_untracked(Option::is_none) {
                        live.job.set(Some(h));
                    }
                }
                Err(f) => live.failure.set(Some(f)),
            }
        });
    }
    if Session::uses_api_key() {
        poll(live, path);
        return live;
    }
    match open(live, &path) {
        Some(stream) => {
            let stream = Rc::new(RefCell::new(Some(stream)));
            let held = stream.clone();
            on_cleanup(move || {
                if let Some(s) = held.borrow_mut().take() {
                    s.source.close();
                }
            });
            // Falls back to polling when the stream fails for good (EventSource gives up on
            // HTTP errors; network errors it retries by itself).
            create_effect(move || {
                if live.transport.get() == "failed" {
                    if let Some(s) = stream.borrow_mut().take() {
                        s.source.close();
                    }
                    poll(live, path.clone());
                }
            });
        }
        None => poll(live, path),
    }
    live
}

fn open(live: Live, path: &str) -> Option<Stream> {
    let source = EventSource::new(&format!("{path}/events")).ok()?;
    let on_progress = Closure::<dyn FnMut(MessageEvent)>::new(move |e: MessageEvent| {
        let Some(data) = e.data().as_string() else { return };
        if let Ok(p) = serde_json::from_str::<ProgressEvent>(&data) {
            live.transport.set("live");
            live.push(StepLine {
                step: p.step.clone().unwrap_or_else(|| p.status.as_str().to_owned()),
                progress: p.progress,
                status: p.status,
                message: p.message.clone(),
            });
            live.job.update(|job| {
                if let Some(job) = job {
                    job.status = p.status;
                    job.progress = p.progress.clamp(0, 100) as u8;
                    job.step = p.step.clone();
                }
            });
        }
    });
    let end_source = source.clone();
    let on_end = Closure::<dyn FnMut(MessageEvent)>::new(move |e: MessageEvent| {
        // The server ends the stream after this event; without `close` the browser reconnects.
        end_source.close();
        if let Some(h) = e.data().as_string().and_then(|d| serde_json::from_str::<JobHandle>(&d).ok()) {
            live.transport.set("done");
            live.job.set(Some(h));
        }
    });
    let error_source = source.clone();
    let on_error = Closure::<dyn FnMut(MessageEvent)>::new(move |_e: MessageEvent| {
        if error_source.ready_state() == EventSource::CLOSED && live.transport.get_untracked() != "done" {
            live.transport.set("failed");
        }
    });
    source.add_event_listener_with_callback("progress", on_progress.as_ref().unchecked_ref()).ok()?;
    source.add_event_listener_with_callback("end", on_end.as_ref().unchecked_ref()).ok()?;
    source.add_event_listener_with_callback("error", on_error.as_ref().unchecked_ref()).ok()?;
    Some(Stream { source, _callbacks: vec![on_progress, on_end, on_error] })
}

fn poll(live: Live, path: String) {
    live.transport.set("polling");
    crate::task::spawn(async move {
        loop {
            match api::get::<JobHandle>(&path).await {
                Ok(h) => {
                    let done = h.status.is_final();
                    live.apply_handle(h);
                    if done {
                        return;
                    }
                }
                Err(f) => {
                    let stop = f.status == 401 || f.status == 404;
                    live.failure.set(Some(f));
                    if stop {
                        return;
                    }
                }
            }
            gloo_timers::future::TimeoutFuture::new(POLL_MS).await;
        }
    });
}

/// Why a queued job has not started (its handle's `waitingFor`, only while it is queued).
pub fn waiting_for(job: &nimbus_domain::JobHandle) -> Option<String> {
    job.waiting_for.clone().filter(|_| job.status == nimbus_domain::JobStatus::Queued)
}

/// The line that says why a queued job waits ([`waiting_for`]).
#[component(inline_props)]
pub fn WaitingFor(why: String) -> View {
    let text = format!("Queued: {why}");
    view! { p(class="waiting", role="status", data-testid="waiting-for") { (text) } }
}
