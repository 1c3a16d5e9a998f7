//! `/nodes/{node}/tasks`: the task list with PVE's filters, and per task the index, status,
//! log (paged, or downloaded) and stop.

use axum::body::Body;
use serde_json::{Value, json};

use crate::error::{PveError, PveResult};
use crate::params::{P, Params, f, split_list};
use crate::router::{Reply, Routes};
use crate::sim::Ctx;
use crate::tasks::{Task, Upid, status_type};

/// Registers the routes.
pub fn register(r: &mut Routes) {
    r.get(
        "/nodes/{node}/tasks",
        vec![
            P::node(),
            P::bool("errors").opt(),
            P::int("limit").opt().min(0),
            P::int("since").opt(),
            P::str("source").opt().en(&["archive", "active", "all"]),
            P::int("start").opt().min(0),
            P::str("statusfilter").opt().fmt(f::TASK_STATUS_LIST),
            P::str("typefilter").opt(),
            P::int("until").opt(),
            P::str("userfilter").opt(),
            P::vmid().opt(),
        ],
        list,
    );
    let upid_params = || vec![P::node(), P::str("upid")];
    r.get("/nodes/{node}/tasks/{upid}", upid_params(), |cx, p| {
        let st = cx.read();
        visible_task(cx, p, &st.tasks)?;
        Ok(json!([{"name": "log"}, {"name": "status"}]))
    })
    .local();
    r.delete("/nodes/{node}/tasks/{upid}", upid_params(), |cx, p| {
        let upid = {
            let st = cx.read();
            visible_task(cx, p, &st.tasks)?.upid.clone()
        };
        cx.sim.stop_task(&upid);
        Ok(json!(null))
    });
    r.get("/nodes/{node}/tasks/{upid}/status", upid_params(), |cx, p| {
        let st = cx.read();
        Ok(visible_task(cx, p, &st.tasks)?.status_json())
    });
    r.get_reply(
        "/nodes/{node}/tasks/{upid}/log",
        vec![
            P::node(),
            P::str("upid"),
            P::bool("download").opt(),
            P::int("limit").opt().min(0),
            P::int("start").opt().min(0),
        ],
        log,
    );
}

/// Finds the task of the `upid` parameter with PVE's checks and texts.
fn visible_task<'a>(cx: &Ctx, p: &Params, tasks: &'a crate::tasks::TaskList) -> PveResult<&'a Task> {
    let upid = p.str("upid")?;
    let node = p.node()?;
    let Some(parsed) = Upid::parse(upid) else {
        return Err(PveError::param("upid", "unable to parse worker upid"));
    };
    let task = match tasks.get(upid) {
        Some(t) if parsed.node == node => t,
        _ => return Err(PveError::param("upid", "no such task")),
    };
    if !task.visible_to(&cx.user()) {
        return Err(PveError::perm(&format!("/nodes/{node}"), "Sys.Audit"));
    }
    Ok(task)
}

fn list(cx: &Ctx, p: &Params) -> PveResult<Value> {
    let node = p.node()?;
    let start = p.opt_u64("start").unwrap_or(0);
    let mut limit = p.opt_i64("limit").unwrap_or(50);
    let source = p.opt_str("source").unwrap_or("archive");
    let errors = p.bool("errors");
    let mut statuses = vec!["ok", "warning", "error", "unknown"];
    if let Some(sf) = p.opt_str("statusfilter").filter(|_| !errors) {
        let wanted: Vec<String> = split_list(sf).into_iter().map(str::to_ascii_lowercase).collect();
        statuses.retain(|s| wanted.iter().any(|w| w == s));
    } else if errors {
        statuses.retain(|s| *s != "ok");
    }
    let user = cx.user();
    let userfilter = p.opt_str("userfilter").map(str::to_ascii_lowercase);
    let vmid = p.opt_u32("vmid").map(|v| v.to_string());
    let st = cx.read();
    let mut count: u64 = 0;
    let mut rows = Vec::new();
    let mut consider = |t: &Task, rows: &mut Vec<Value>| {
        if userfilter.as_ref().is_some_and(|u| !t.user.to_ascii_lowercase().contains(u.as_str())) {
            return;
        }
        if !t.visible_to(&user) || p.opt_str("typefilter").is_some_and(|f| t.ty != f) {
            return;
        }
        if vmid.as_ref().is_some_and(|v| t.id != *v) {
            return;
        }
        if p.opt_i64("since").is_some_and(|s| t.starttime < s) || p.opt_i64("until").is_some_and(|u| t.starttime > u) {
            return;
        }
        let status = if t.running { None } else { t.exitstatus.as_deref() };
        if !statuses.contains(&status_type(status)) {
            return;
        }
        count += 1;
        if count <= start || limit <= 0 {
            return;
        }
        let mut row = t.list_json();
        if t.running {
            row["status"] = json!("RUNNING");
        }
        rows.push(row);
        limit -= 1;
    };
    let on_node = || st.tasks.iter().rev().filter(|t| t.node == node);
    if source == "active" || source == "all" {
        for t in on_node().filter(|t| t.running) {
            consider(t, &mut rows);
        }
    }
    if source != "active" {
        for t in on_node().filter(|t| !t.running) {
            consider(t, &mut rows);
        }
    }
    cx.set_total(count);
    Ok(Value::Array(rows))
}

fn log(cx: &Ctx, p: &Params) -> PveResult<Reply> {
    let st = cx.read();
    let task = visible_task(cx, p, &st.tasks)?;
    if p.bool("download") {
        if p.has("start") || p.has("limit") {
            return Err(PveError::handler("'download' cannot be used together with 'start' or 'limit' parameters"));
        }
        let mut text = task.log.join("\n");
        if !text.is_empty() {
            text.push('\n');
        }
        let time = chrono::DateTime::from_timestamp(task.starttime, 0).unwrap_or_default().format("%FT%TZ");
        let mut resp = http::Response::new(Body::from(text));
        let h = resp.headers_mut();
        h.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain"));
        if let Ok(v) =
            http::HeaderValue::from_str(&format!("attachment; filename=\"task-{}-{}-{time}.log\"", task.node, task.ty))
        {
            h.insert(http::header::CONTENT_DISPOSITION, v);
        }
        h.insert(http::header::SERVER, http::HeaderValue::from_static("pve-api-daemon/3.0"));
        return Ok(Reply::Raw(resp));
    }
    let start = p.opt_u64("start").unwrap_or(0) as usize;
    let limit = p.opt_u64("limit").unwrap_or(50) as usize;
    // dump_logfile: limit 0 reads to the end; an empty log is one "no content" line.
    let mut lines: Vec<Value> = task
        .log
        .iter()
        .enumerate()
        .skip(start)
        .take(if limit == 0 { usize::MAX } else { limit })
        .map(|(i, t)| json!({"n": i + 1, "t": t}))
        .collect();
    let mut total = task.log.len() as u64;
    if total == 0 {
        total = 1;
        lines.push(json!({"n": 1, "t": "no content"}));
    }
    Ok(Reply::Data { data: Value::Array(lines), total: Some(total) })
}
