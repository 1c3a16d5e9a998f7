//! An instance as its open page shows it: `GET /v1/vms/{id}/events` over `EventSource` (an
//! `instance` event at each change: an operation starting, progressing and ending, a status the
//! reconciler read from Proxmox; `end` once deleted), and polling of `GET /v1/vms/{id}` when SSE
//! cannot be used (an API key cannot be sent by `EventSource`) or the stream fails for good.

use std::cell::RefCell;
use std::rc::Rc;

use nimbus_domain::{InstanceStatus, InstanceView};
use sycamore::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen::closure::Closure;
use web_sys::{EventSource, MessageEvent};

use crate::api::{self, Failure};
use crate::session::Session;

/// What the page renders.
#[derive(Clone, Copy)]
pub struct LiveInstance {
    /// The latest view.
    pub instance: Signal<Option<InstanceView>>,
    /// Why it could not be read.
    pub failure: Signal<Option<Failure>>,
}

impl LiveInstance {
    /// `Some(true)` while the instance has no operation: a tab reads its lists again each time
    /// this becomes true (an operation of its ended).
    pub fn settled(self) -> ReadSignal<Option<bool>> {
        create_selector(move || self.instance.with(|i| i.as_ref().map(|i| i.operation.is_none())))
    }

    /// Whether operations are offered now ([`idle`]).
    pub fn usable(self) -> ReadSignal<bool> {
        create_selector(move || self.instance.with(|i| i.as_ref().is_some_and(idle)))
    }

    /// Reads the instance now (after an action, before its first event arrives).
    pub async fn reload(self, id: &str) {
        match api::get::<InstanceView>(&format!("/v1/vms/{id}")).await {
            Ok(i) => self.instance.set(Some(i)),
            Err(f) => self.failure.set(Some(f)),
        }
    }
}

/// Whether operations are offered: the guest exists and nothing else runs on it.
pub fn idle(i: &InstanceView) -> bool {
    i.operation.is_none() && matches!(i.status, InstanceStatus::Running | InstanceStatus::Stopped)
}

/// Follows instance `id` for as long as the calling scope lives.
pub fn follow(id: String) -> LiveInstance {
    let live = LiveInstance { instance: create_signal(None), failure: create_signal(None) };
    let path = format!("/v1/vms/{id}");
    if Session::uses_api_key() {
        poll(live, path);
        return live;
    }
    let Some(source) = EventSource::new(&format!("{path}/events")).ok() else {
        poll(live, path);
        return live;
    };
    let on_view = Closure::<dyn FnMut(MessageEvent)>::new(move |e: MessageEvent| {
        if let Some(v) = e.data().as_string().and_then(|d| serde_json::from_str::<InstanceView>(&d).ok()) {
            live.instance.set(Some(v));
        }
    });
    let end_source = source.clone();
    let on_end = Closure::<dyn FnMut(MessageEvent)>::new(move |e: MessageEvent| {
        // The server ends the stream after this event; without `close` the browser reconnects.
        end_source.close();
        if let Some(v) = e.data().as_string().and_then(|d| serde_json::from_str::<InstanceView>(&d).ok()) {
            live.instance.set(Some(v));
        }
    });
    let failed = create_signal(false);
    let error_source = source.clone();
    let on_error = Closure::<dyn FnMut(MessageEvent)>::new(move |_e: MessageEvent| {
        // EventSource retries network errors by itself and gives up on HTTP errors (closed).
        if error_source.ready_state() == EventSource::CLOSED {
            failed.set(true);
        }
    });
    for (name, callback) in [("instance", &on_view), ("end", &on_end), ("error", &on_error)] {
        let _ = source.add_event_listener_with_callback(name, callback.as_ref().unchecked_ref());
    }
    let held = Rc::new(RefCell::new(Some((source, [on_view, on_end, on_error]))));
    let on_leave = held.clone();
    on_cleanup(move || {
        if let Some((s, _)) = on_leave.borrow_mut().take() {
            s.close();
        }
    });
    create_effect(move || {
        if failed.get() {
            if let Some((s, _)) = held.borrow_mut().take() {
                s.close();
            }
            poll(live, path.clone());
        }
    });
    live
}

fn poll(live: LiveInstance, path: String) {
    crate::task::spawn(async move {
        loop {
            match api::get::<InstanceView>(&path).await {
                Ok(i) => live.instance.set(Some(i)),
                Err(f) => {
                    let stop = f.status == 404 || f.status == 400 || f.status == 401;
                    live.failure.set(Some(f));
                    if stop {
                        return;
                    }
                }
            }
            // Faster while an operation runs on it.
            let settled = live.instance.with_untracked(|i| i.as_ref().is_some_and(|i| i.operation.is_none()));
            gloo_timers::future::TimeoutFuture::new(if settled { 10_000 } else { 1000 }).await;
        }
    });
}
