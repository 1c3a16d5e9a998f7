//! The sign-in page, also shown when the session has expired (a 401 after being signed in).
//! "Sign in" goes through the API's OIDC flow and comes back to the same address; an API key
//! can be used instead (kept for this tab only).

use sycamore::prelude::*;

use crate::api::Failure;
use crate::components::ErrorBanner;
use crate::session::Session;

fn current_path() -> String {
    web_sys::window()
        .and_then(|w| {
            let l = w.location();
            Some(format!("{}{}", l.pathname().ok()?, l.search().ok()?))
        })
        .unwrap_or_else(|| "/".into())
}

fn encode(s: &str) -> String {
    js_sys::encode_uri_component(s).into()
}

#[component(inline_props)]
pub fn SignIn(expired: bool) -> View {
    let key = create_signal(String::new());
    let failure = create_signal(None::<Failure>);
    let busy = create_signal(false);
    let login = move |_| {
        if let Some(w) = web_sys::window() {
            let _ = w.location().set_href(&format!("/auth/login?returnTo={}", encode(&current_path())));
        }
    };
    let with_key = move |e: web_sys::SubmitEvent| {
        e.prevent_default();
        let k = key.get_clone();
        if k.trim().is_empty() {
            return;
        }
        busy.set(true);
        crate::task::spawn(async move {
            // On success this page is gone (its signals disposed) as soon as the session changes.
            if let Err(f) = Session::get().sign_in_with_key(&k).await {
                failure.set(Some(f));
                busy.set(false);
            }
        });
    };
    view! {
        section(class="signin card") {
            (if expired {
                view! {
                    h1 { "Your session has expired" }
                    p { "For your security you were signed out. Sign in again to continue where you left off." }
                }
            } else {
                view! {
                    h1 { "Sign in to Nimbus" }
                    p { "Manage your virtual machines and containers." }
                }
            })
            ErrorBanner(failure=failure)
            button(class="primary wide", r#type="button", data-testid="sign-in", on:click=login) { "Sign in" }
            details(class="alt-signin") {
                summary { "Use an API key instead" }
                form(on:submit=with_key) {
                    label(r#for="api-key") { "API key" }
                    input(id="api-key", r#type="password", autocomplete="off", placeholder="nmb_…", bind:value=key)
                    button(r#type="submit", disabled=move || busy.get()) { "Sign in with key" }
                }
            }
        }
    }
}
