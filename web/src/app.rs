//! The app: typed routes, the layout (navigation, the signed-in user, sign-out) and the gate
//! that shows the sign-in or session-expired page instead of a page the caller cannot load.

use sycamore::prelude::*;
use sycamore_router::{HistoryIntegration, Route, Router};

use crate::components::{dynamic, on_click};
use crate::pages;
use crate::session::{Me, Session, SessionState};

/// Every page of the portal.
#[derive(Route, Clone, Debug, PartialEq, Eq)]
pub enum AppRoute {
    #[to("/")]
    Dashboard,
    #[to("/instances")]
    Instances,
    #[to("/instances/new")]
    Create,
    #[to("/instances/<id>")]
    Instance { id: String },
    #[to("/jobs/<id>")]
    Job { id: String },
    #[to("/keys")]
    Keys,
    #[to("/webhooks")]
    Webhooks,
    #[to("/webhooks/<id>")]
    Webhook { id: String },
    #[to("/settings/notifications")]
    NotificationSettings,
    #[to("/billing")]
    Billing,
    #[to("/billing/invoices/<id>")]
    Invoice { id: String },
    #[to("/admin/queues")]
    Queues,
    #[to("/admin/nodes")]
    Nodes,
    #[to("/admin/instances")]
    AdminInstances,
    #[to("/admin/schedules")]
    Schedules,
    #[to("/admin/billing")]
    AdminBilling,
    #[to("/admin/webhooks")]
    AdminWebhooks,
    #[not_found]
    NotFound,
}

/// The root component.
#[component]
pub fn App() -> View {
    let session = Session::install();
    crate::task::spawn(session.refresh());
    view! {
        Router(
            integration=HistoryIntegration::new(),
            view=move |route: ReadSignal<AppRoute>| view! { Layout(route=route) },
        )
    }
}

#[component(inline_props)]
fn Layout(route: ReadSignal<AppRoute>) -> View {
    let session = Session::get();
    // Pages are rebuilt only when the caller signs in or out, not when `/v1/me` is re-read.
    let gate = create_selector(move || match session.state.get_clone() {
        SessionState::Loading => 0,
        SessionState::SignedOut => 1,
        SessionState::Expired => 2,
        SessionState::SignedIn(_) => 3,
    });
    let operator = create_selector(move || {
        session.state.with(|s| if let SessionState::SignedIn(me) = s { me.operator_level() } else { 0 })
    });
    let nav_class = move |r: AppRoute| {
        move || if route.with(|cur| std::mem::discriminant(cur) == std::mem::discriminant(&r)) { "active" } else { "" }
    };
    // The parts go through `dynamic`, like the pages': one copy of the dynamic view for all.
    let nav = dynamic(Box::new(move || {
        if gate.get() != 3 {
            return view! {};
        }
        let admin_nav = dynamic(Box::new(move || match operator.get() {
            0 => view! {},
            // A billing administrator sees the billing operations alone.
            1 => view! {
                a(href="/admin/billing", class=nav_class(AppRoute::AdminBilling)) { "Revenue" }
            },
            _ => view! {
                a(href="/admin/queues", class=nav_class(AppRoute::Queues)) { "Queues" }
                a(href="/admin/nodes", class=nav_class(AppRoute::Nodes)) { "Nodes" }
                a(href="/admin/instances", class=nav_class(AppRoute::AdminInstances)) { "All instances" }
                a(href="/admin/schedules", class=nav_class(AppRoute::Schedules)) { "Schedules" }
                a(href="/admin/webhooks", class=nav_class(AppRoute::AdminWebhooks)) { "Hooks" }
                a(href="/admin/billing", class=nav_class(AppRoute::AdminBilling)) { "Revenue" }
            },
        }));
        view! {
            nav(aria-label="Main") {
                a(href="/", class=nav_class(AppRoute::Dashboard)) { "Dashboard" }
                a(href="/instances", class=nav_class(AppRoute::Instances)) { "Instances" }
                a(href="/instances/new", class=nav_class(AppRoute::Create)) { "Create" }
                a(href="/billing", class=nav_class(AppRoute::Billing)) { "Billing" }
                a(href="/keys", class=nav_class(AppRoute::Keys)) { "API keys" }
                a(href="/webhooks", class=nav_class(AppRoute::Webhooks)) { "Webhooks" }
                (admin_nav)
            }
            UserBox()
        }
    }));
    let content = dynamic(Box::new(move || match gate.get() {
        0 => view! { crate::components::Loading(label="Loading…") },
        1 => view! { pages::signin::SignIn(expired=false) },
        2 => view! { pages::signin::SignIn(expired=true) },
        _ => view! { Page(route=route) },
    }));
    view! {
        header(class="topbar") {
            a(class="brand", href="/") { "Nimbus" }
            (nav)
        }
        ImpersonationBanner()
        main(class="content") { (content) }
    }
}

#[component(inline_props)]
fn Page(route: ReadSignal<AppRoute>) -> View {
    dynamic(Box::new(move || match route.get_clone() {
        AppRoute::Dashboard => view! { pages::dashboard::Dashboard() },
        AppRoute::Instances => view! { pages::instances::Instances() },
        AppRoute::Create => view! { pages::create::Create() },
        AppRoute::Instance { id } => view! { pages::instance::InstanceDetail(id=id) },
        AppRoute::Job { id } => view! { pages::job::JobPage(id=id) },
        AppRoute::Keys => view! { pages::keys::Keys() },
        AppRoute::Webhooks => view! { pages::webhooks::Webhooks() },
        AppRoute::Webhook { id } => view! { pages::webhook::WebhookPage(id=id) },
        AppRoute::NotificationSettings => view! { pages::notifications::NotificationSettings() },
        AppRoute::Billing => view! { pages::billing::Billing() },
        AppRoute::Invoice { id } => view! { pages::billing::InvoicePage(id=id) },
        AppRoute::Queues => view! { pages::admin_queues::Queues() },
        AppRoute::Nodes => view! { pages::admin_nodes::Nodes() },
        AppRoute::AdminInstances => view! { pages::admin_vms::AdminVms() },
        AppRoute::Schedules => view! { pages::admin_schedules::AdminSchedules() },
        AppRoute::AdminBilling => view! { pages::admin_billing::AdminBilling() },
        AppRoute::AdminWebhooks => view! { pages::admin_webhooks::AdminWebhooks() },
        AppRoute::NotFound => view! {
            section {
                h1 { "Page not found" }
                p { "There is nothing at this address. " a(href="/") { "Back to the dashboard" } }
            }
        },
    }))
}

/// While an administrator acts as another user: who, and the way back.
#[component]
fn ImpersonationBanner() -> View {
    let session = Session::get();
    let acting = create_memo(move || match session.state.get_clone() {
        SessionState::SignedIn(me) => me.impersonator.clone().map(|admin| (admin, me.name, me.tenant)),
        _ => None,
    });
    dynamic(Box::new(move || {
        let Some((admin, name, tenant)) = acting.get_clone() else { return view! {} };
        let text = format!("{admin}, you are acting as {name} of {tenant}: what you do is recorded under both names.");
        let stop = on_click(Box::new(move || {
            crate::task::spawn(async move {
                // The answer does not matter: the session is read again either way.
                let _ = crate::api::delete("/v1/admin/impersonation").await;
                session.refresh().await;
                sycamore_router::navigate("/admin/instances");
            });
        }));
        view! {
            div(class="banner impersonating", role="status", data-testid="impersonating") {
                div(class="banner-text") { (text) }
                button(class="small", r#type="button", data-testid="stop-impersonating", on:click=stop) { "Stop acting" }
            }
        }
    }))
}

#[component]
fn UserBox() -> View {
    let session = Session::get();
    let me = create_memo(move || match session.state.get_clone() {
        SessionState::SignedIn(me) => Some(me),
        _ => None,
    });
    let user = dynamic(Box::new(move || match me.get_clone() {
        None => view! {},
        Some(me) => {
            let role_class = format!("role role-{}", me.role);
            let Me { name, email, tenant, role, csrf_token, .. } = me;
            // A browser session ends with a real form post: the API clears the cookie and
            // sends the browser on to the provider's sign-out page.
            let out = match csrf_token {
                Some(token) => view! {
                    form(method="post", action="/auth/logout", class="inline") {
                        input(r#type="hidden", name="csrfToken", value=token)
                        button(class="ghost", r#type="submit", data-testid="sign-out") { "Sign out" }
                    }
                },
                None => {
                    let sign_out = on_click(Box::new(move || session.sign_out()));
                    view! { button(class="ghost", r#type="button", data-testid="sign-out", on:click=sign_out) { "Sign out" } }
                }
            };
            // Inside the user's part: a new user (or an administrator acting as one)
            // gets a bell of their own, with its own stream.
            view! {
                crate::bell::NotificationBell()
                span(class="who", data-testid="user-name", title=email) { (name) }
                span(class="tenant", data-testid="user-tenant") { (tenant) }
                span(class=role_class, data-testid="user-role") { (role) }
                (out)
            }
        }
    }));
    view! { div(class="userbox") { (user) } }
}
