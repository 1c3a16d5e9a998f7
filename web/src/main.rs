//! `nimbus-web`: the Nimbus portal, a Sycamore SPA compiled to wasm and served by the API
//! (`api/src/routes/web.rs`). Built by `infra/scripts/build-web.sh`.
//!
//! * [`app`]: the routes, the layout and the sign-in gate.
//! * [`api`]: the HTTP client of `/v1` (envelope, errors with request ids, CSRF, 401 handling).
//! * [`session`]: who is signed in, and how (session cookie or API key).
//! * [`bell`]: the notification bell of the top bar, its count live over SSE.
//! * [`progress`]: a job's live progress over SSE, with polling as fallback.
//! * [`components`]: banners, badges, copyable ids, confirmations.
//! * [`pages`]: one module per page.

mod api;
mod app;
mod bell;
mod components;
mod format;
mod instance_live;
mod pages;
mod progress;
mod session;
mod task;

fn main() {
    sycamore::render(app::App);
}
