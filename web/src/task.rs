//! One way to start a page's background work. Every future goes through a single
//! instantiation of the scope-bound spawner (boxed), instead of one copy of sycamore's task
//! machinery per call site, which keeps the wasm of the first load small.

use std::future::Future;
use std::pin::Pin;

/// Runs `work` for as long as the current reactive scope lives.
pub fn spawn(work: impl Future<Output = ()> + 'static) {
    let boxed: Pin<Box<dyn Future<Output = ()>>> = Box::pin(work);
    sycamore::futures::spawn_local_scoped(boxed);
}
