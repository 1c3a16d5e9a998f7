//! The Console tab: `POST /v1/vms/{id}/console` gives a single-use ticket, and the console
//! module (`web/console.js`, fetched with noVNC or xterm.js only now, through
//! `window.nimbusConsole` set by boot.js) opens it in the tab: a screen for VMs, a terminal for
//! containers. The session ends when the tab closes or the user disconnects.

use std::cell::RefCell;
use std::rc::Rc;

use nimbus_domain::InstanceStatus;
use serde_json::{Value, json};
use sycamore::prelude::*;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};

use crate::api::{self, Failure};
use crate::components::ErrorBanner;
use crate::instance_live::LiveInstance;

/// An open console: the module's handle and the callback it reports to.
struct Session {
    handle: JsValue,
    _on_state: Closure<dyn FnMut(String, String)>,
}

impl Session {
    fn close(&self) {
        if let Ok(close) = js_sys::Reflect::get(&self.handle, &"close".into())
            && let Some(close) = close.dyn_ref::<js_sys::Function>()
        {
            let _ = close.call0(&self.handle);
        }
    }
}

/// Asks the console module to open `session` in `element`.
async fn open(
    element: &web_sys::Element,
    session: &Value,
    on_state: &Closure<dyn FnMut(String, String)>,
) -> Result<JsValue, String> {
    let window = web_sys::window().ok_or("no window")?;
    let loader = js_sys::Reflect::get(&window, &"nimbusConsole".into()).map_err(|_| "the console module is missing")?;
    let loader = loader.dyn_into::<js_sys::Function>().map_err(|_| "the console module is missing")?;
    let session = js_sys::JSON::parse(&session.to_string()).map_err(|_| "the console session could not be read")?;
    let promise = loader
        .call3(&JsValue::NULL, element, &session, on_state.as_ref().unchecked_ref())
        .map_err(|e| format!("the console could not start: {e:?}"))?;
    let promise = promise.dyn_into::<js_sys::Promise>().map_err(|_| "the console module answered no promise")?;
    wasm_bindgen_futures::JsFuture::from(promise).await.map_err(|e| {
        let message = js_sys::Reflect::get(&e, &"message".into()).ok().and_then(|m| m.as_string());
        format!("the console could not be loaded ({})", message.unwrap_or_else(|| "unknown error".into()))
    })
}

#[component(inline_props)]
pub fn ConsoleTab(live: LiveInstance) -> View {
    let Some(id) = live.instance.with_untracked(|i| i.as_ref().map(|i| i.id.to_string())) else { return view! {} };
    let running = create_selector(move || {
        live.instance.with(|i| i.as_ref().is_some_and(|i| i.status == InstanceStatus::Running))
    });
    let state = create_signal("closed".to_owned());
    let detail = create_signal(String::new());
    let failure = create_signal(None::<Failure>);
    let screen = create_node_ref();
    let current: Rc<RefCell<Option<Session>>> = Rc::default();
    {
        let current = current.clone();
        on_cleanup(move || {
            if let Some(s) = current.borrow_mut().take() {
                s.close();
            }
        });
    }
    let disconnect = {
        let current = current.clone();
        move |_| {
            if let Some(s) = current.borrow_mut().take() {
                s.close();
                state.set("disconnected".into());
                detail.set(String::new());
            }
        }
    };
    let connect = move |_| {
        let (id, current) = (id.clone(), current.clone());
        if let Some(s) = current.borrow_mut().take() {
            s.close();
        }
        state.set("connecting".into());
        detail.set(String::new());
        crate::task::spawn(async move {
            let session = match api::post::<Value, Value>(&format!("/v1/vms/{id}/console"), Some(&json!({})), &[]).await
            {
                Ok(s) => s,
                Err(f) => {
                    state.set("closed".into());
                    failure.set(Some(f));
                    return;
                }
            };
            let Some(element) = screen.try_get().and_then(|n| n.dyn_into::<web_sys::Element>().ok()) else { return };
            let on_state = Closure::<dyn FnMut(String, String)>::new(move |s: String, d: String| {
                state.set(s);
                detail.set(d);
            });
            match open(&element, &session, &on_state).await {
                Ok(handle) => *current.borrow_mut() = Some(Session { handle, _on_state: on_state }),
                Err(message) => {
                    // The module may still report on a session it failed to finish opening.
                    on_state.forget();
                    state.set("closed".into());
                    detail.set(message);
                }
            }
        });
    };
    let label = move || match state.get_clone().as_str() {
        "connecting" => "Connecting…".to_owned(),
        "connected" => "Connected".to_owned(),
        "disconnected" => {
            format!("Disconnected{}", detail.with(|d| if d.is_empty() { String::new() } else { format!(": {d}") }))
        }
        _ => detail.with(|d| if d.is_empty() { "Not connected".to_owned() } else { d.clone() }),
    };
    view! {
        div(class="card console-card") {
            div(class="page-head") {
                h2 { "Console" }
                div(class="actions") {
                    span(class="muted", data-testid="console-state", data-state=move || state.get_clone()) { (label) }
                    button(class="primary small", r#type="button", data-testid="console-connect",
                           disabled=move || !running.get() || state.get_clone() == "connecting" || state.get_clone() == "connected",
                           on:click=connect) { "Connect" }
                    button(class="small", r#type="button", data-testid="console-disconnect",
                           disabled=move || state.get_clone() != "connected", on:click=disconnect) { "Disconnect" }
                }
            }
            ErrorBanner(failure=failure)
            (move || if running.get() { view! {} } else {
                view! { p(class="muted") { "The console opens while the instance runs." } }
            })
            div(class="console-screen", data-testid="console-screen", r#ref=screen) {}
        }
    }
}
