//! The notification bell of the top bar: the unread count, live over
//! `GET /v1/notifications/stream` (an `unread` event, `{"count": N}`, at each change), and a
//! dropdown with the first page of the feed (`GET /v1/notifications?perPage=10`, unread first),
//! read again whenever the count changes while it is open. Opening an item marks it read
//! (`POST /v1/notifications/{id}/read`), and "Mark all read" reads them all
//! (`POST /v1/notifications/read-all`). An API key cannot be sent by `EventSource`: with one,
//! or when the stream fails for good, the count is that of the unread items of the first page,
//! read every 30 s.

use std::cell::RefCell;
use std::rc::Rc;

use serde_json::Value;
use sycamore::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen::closure::Closure;
use web_sys::{EventSource, MessageEvent};

use crate::api::{self, Failure};
use crate::components::{ErrorBanner, Loading, button, dynamic, on_click};
use crate::format;
use crate::pages::billing::text;
use crate::session::Session;

const FEED: &str = "/v1/notifications?perPage=10";

/// How often the count is read without the stream.
const POLL_MS: u32 = 30_000;

/// The bell's state.
#[derive(Clone, Copy)]
struct Bell {
    count: Signal<u64>,
    /// Whether the count comes from the feed (no stream).
    polling: Signal<bool>,
    open: Signal<bool>,
    feed: Signal<Option<Vec<Value>>>,
    failure: Signal<Option<Failure>>,
}

/// Whether a notification is unread.
fn unread(n: &Value) -> bool {
    n["readAt"].is_null() && n["read"] != true
}

impl Bell {
    /// Reads the first page of the feed; without the stream, the count comes from it too.
    async fn load(self, count_too: bool) {
        match api::list::<Value>(FEED).await {
            Ok((items, _)) => {
                if count_too {
                    self.count.set(items.iter().filter(|n| unread(n)).count() as u64);
                }
                self.feed.set(Some(items));
            }
            Err(f) => self.failure.set(Some(f)),
        }
    }

    fn poll(self) {
        self.polling.set(true);
        crate::task::spawn(async move {
            loop {
                self.load(true).await;
                gloo_timers::future::TimeoutFuture::new(POLL_MS).await;
            }
        });
    }

    /// Follows the count over SSE for as long as the calling scope lives, polling without it.
    fn follow(self) {
        let source = if Session::uses_api_key() { None } else { EventSource::new("/v1/notifications/stream").ok() };
        let Some(source) = source else { return self.poll() };
        let on_unread = Closure::<dyn FnMut(MessageEvent)>::new(move |e: MessageEvent| {
            let data = e.data().as_string().and_then(|d| serde_json::from_str::<Value>(&d).ok());
            if let Some(n) = data.and_then(|d| d["count"].as_u64()) {
                self.count.set(n);
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
        for (name, callback) in [("unread", &on_unread), ("error", &on_error)] {
            let _ = source.add_event_listener_with_callback(name, callback.as_ref().unchecked_ref());
        }
        let held = Rc::new(RefCell::new(Some((source, [on_unread, on_error]))));
        let close = move || {
            if let Some((s, _)) = held.borrow_mut().take() {
                s.close();
            }
        };
        on_cleanup(close.clone());
        create_effect(move || {
            if failed.get() {
                close();
                self.poll();
            }
        });
    }

    /// Marks one notification read (`id`) or all of them, then reads the feed again. The stream
    /// says the new count (counting down here too would count twice); without it, the feed does.
    fn mark(self, id: Option<String>) {
        crate::task::spawn(async move {
            let path = match &id {
                Some(id) => format!("/v1/notifications/{id}/read"),
                None => "/v1/notifications/read-all".to_owned(),
            };
            match api::act("POST", &path, None).await {
                Ok(_) => {
                    self.failure.set(None);
                    if id.is_none() {
                        self.count.set(0);
                    }
                    self.load(self.polling.get_untracked()).await;
                }
                Err(f) => self.failure.set(Some(f)),
            }
        });
    }
}

/// The bell, its count and its dropdown.
#[component]
pub fn NotificationBell() -> View {
    let bell = Bell {
        count: create_signal(0),
        polling: create_signal(false),
        open: create_signal(false),
        feed: create_signal(None),
        failure: create_signal(None),
    };
    bell.follow();
    // An open feed follows the count (a new notification, one read in another tab).
    create_effect(move || {
        bell.count.track();
        if bell.open.get() {
            crate::task::spawn(bell.load(false));
        }
    });
    let label = move || match bell.count.get() {
        0 => "Notifications".to_owned(),
        n => format!("Notifications, {n} unread"),
    };
    let escape = move |e: web_sys::KeyboardEvent| {
        if e.key() == "Escape" {
            bell.open.set(false);
        }
    };
    let (toggle, count, menu) = (
        on_click(Box::new(move || bell.open.set(!bell.open.get_untracked()))),
        dynamic(Box::new(move || match bell.count.get() {
            0 => view! {},
            n => {
                let n = n.to_string();
                view! { span(class="bell-count", data-testid="unread-count") { (n) } }
            }
        })),
        dynamic(Box::new(move || {
            if bell.open.get() {
                menu(bell)
            } else {
                view! {}
            }
        })),
    );
    view! {
        div(class="bell", on:keydown=escape) {
            button(class="ghost bell-button", r#type="button", data-testid="bell", aria-label=label, title=label,
                   aria-expanded=move || bell.open.get().to_string(), data-count=move || bell.count.get().to_string(),
                   on:click=toggle) {
                svg(width="18", height="18", viewBox="0 0 24 24", aria-hidden="true") {
                    path(d="M12 22a2.5 2.5 0 0 0 2.45-2h-4.9A2.5 2.5 0 0 0 12 22zm7-6V11a7 7 0 0 0-5.5-6.84V3a1.5 1.5 0 0 0-3 0v1.16A7 7 0 0 0 5 11v5l-2 2v1h18v-1z")
                }
                (count)
            }
            (menu)
        }
    }
}

/// The open dropdown: the feed, "Mark all read", the way to the settings; a click beside it
/// closes it.
fn menu(bell: Bell) -> View {
    let close = move || on_click(Box::new(move || bell.open.set(false)));
    let (shade, foot) = (close(), close());
    let (all, feed) =
        (button("Mark all read", "small", Box::new(move || bell.mark(None))), dynamic(Box::new(move || feed(bell))));
    view! {
        div(class="bell-shade", on:click=shade)
        div(class="bell-menu card", role="dialog", aria-label="Notifications", data-testid="notifications") {
            div(class="bell-head") { strong { "Notifications" } (all) }
            ErrorBanner(failure=bell.failure)
            (feed)
            a(class="bell-foot", href="/settings/notifications", on:click=foot) { "Notification settings" }
        }
    }
}

/// The first page of the feed: each item's title and how long ago it came, unread ones marked.
fn feed(bell: Bell) -> View {
    let Some(items) = bell.feed.get_clone() else { return view! { Loading(label="Loading…") } };
    if items.is_empty() {
        return view! { p(class="muted bell-empty") { "Nothing yet." } };
    }
    let now = (js_sys::Date::now() / 1000.0) as i64;
    let items = items
        .into_iter()
        .map(|n| {
            let (title, ago, when) =
                (text(&n["title"]), format::ago(&text(&n["createdAt"]), now), format::time_str(&text(&n["createdAt"])));
            let fresh = unread(&n);
            let (class, attr) = (if fresh { "unread" } else { "" }, fresh.to_string());
            let id = text(&n["id"]);
            let open = on_click(Box::new(move || {
                if fresh {
                    bell.mark(Some(id.clone()));
                }
            }));
            view! {
                li(class=class, data-unread=attr) {
                    button(class="bell-item", r#type="button", on:click=open) {
                        span { (title) }
                        span(class="muted", title=when) { (ago) }
                    }
                }
            }
        })
        .collect::<Vec<_>>();
    view! { ul(class="plain bell-feed") { (items) } }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_notification_is_unread_until_read() {
        assert!(unread(&json!({"readAt": null})));
        assert!(unread(&json!({"id": "n", "title": "t"})));
        assert!(!unread(&json!({"readAt": "2026-12-06T10:00:00Z"})));
        assert!(!unread(&json!({"read": true})));
    }
}
