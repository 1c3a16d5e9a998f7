//! `/access`: ticket login (`POST /access/ticket`, refused for API tokens), permissions, and
//! API token management under `/access/users/{userid}/token/{tokenid}`.

use serde_json::{Map, Value, json};

use crate::auth;
use crate::error::{PveError, PveResult};
use crate::model::ApiToken;
use crate::params::{P, Params, f};
use crate::router::Routes;
use crate::sim::Ctx;
use crate::util;

/// Privileges the simulated users hold (everything, like root@pam).
pub const PRIVILEGES: &[&str] = &[
    "Datastore.Allocate",
    "Datastore.AllocateSpace",
    "Datastore.AllocateTemplate",
    "Datastore.Audit",
    "Permissions.Modify",
    "Pool.Allocate",
    "Pool.Audit",
    "Sys.Audit",
    "Sys.Console",
    "Sys.Modify",
    "Sys.PowerMgmt",
    "VM.Allocate",
    "VM.Audit",
    "VM.Backup",
    "VM.Clone",
    "VM.Config.CDROM",
    "VM.Config.CPU",
    "VM.Config.Cloudinit",
    "VM.Config.Disk",
    "VM.Config.HWType",
    "VM.Config.Memory",
    "VM.Config.Network",
    "VM.Config.Options",
    "VM.Console",
    "VM.Migrate",
    "VM.Monitor",
    "VM.PowerMgmt",
    "VM.Snapshot",
    "VM.Snapshot.Rollback",
];

const TOKEN_NAME: &str = r"(?^:[A-Za-z][A-Za-z0-9\.\-_]+)";

/// Registers the routes.
pub fn register(r: &mut Routes) {
    r.get("/access/ticket", vec![], |_, _| Ok(json!(null))).no_auth();
    r.post(
        "/access/ticket",
        vec![
            P::bool("new-format").opt(),
            P::str("otp").opt(),
            P::str("password"),
            P::str("path").opt().max_len(64).requires("privs"),
            P::str("privs").opt().fmt(f::PRIV_LIST).max_len(64).requires("path"),
            P::str("realm").opt().fmt(f::REALM).max_len(32),
            P::str("tfa-challenge").opt(),
            P::str("username").max_len(64),
        ],
        login,
    )
    .no_auth()
    .no_token();
    r.get(
        "/access/permissions",
        vec![
            P::str("path").opt(),
            P::str("userid")
                .opt()
                .pattern(r"(?^:^(?^:[^\s:/]+)\@(?^:[A-Za-z][A-Za-z0-9\.\-_]+)(?:!(?^:[A-Za-z][A-Za-z0-9\.\-_]+))?$)"),
        ],
        |_, p| {
            let privs: Map<String, Value> = PRIVILEGES.iter().map(|p| (p.to_string(), json!(1))).collect();
            let mut out = Map::new();
            out.insert(p.opt_str("path").unwrap_or("/").to_string(), Value::Object(privs));
            Ok(Value::Object(out))
        },
    );
    let token_params = || vec![P::str("userid").fmt(f::USERID).max_len(64), P::str("tokenid").pattern(TOKEN_NAME)];
    let with_info = || {
        let mut v = token_params();
        v.push(P::str("comment").opt());
        v.push(P::int("expire").opt().min(0));
        v.push(P::bool("privsep").opt());
        v
    };
    r.get("/access/users/{userid}/token/{tokenid}", token_params(), |cx, p| {
        let st = cx.read();
        let (full, _) = token_id(p)?;
        let t = st.tokens.get(&full).ok_or_else(|| no_token(p))?;
        Ok(token_info(t))
    });
    r.post("/access/users/{userid}/token/{tokenid}", with_info(), |cx, p| {
        let (full, userid) = token_id(p)?;
        let mut st = cx.write();
        if !st.users.contains_key(&userid) {
            return Err(PveError::handler(format!("no such user ('{userid}')")));
        }
        if st.tokens.contains_key(&full) {
            return Err(PveError::handler("Token already exists."));
        }
        let secret = secret_for(&full);
        let token = ApiToken {
            secret: secret.clone(),
            comment: p.opt_str("comment").map(str::to_string),
            expire: p.opt_i64("expire").unwrap_or(0),
            privsep: p.bool_or("privsep", true),
        };
        let info = token_info(&token);
        st.tokens.insert(full.clone(), token);
        Ok(json!({"full-tokenid": full, "info": info, "value": secret}))
    });
    r.put("/access/users/{userid}/token/{tokenid}", with_info(), |cx, p| {
        let (full, _) = token_id(p)?;
        let mut st = cx.write();
        let t = st.tokens.get_mut(&full).ok_or_else(|| no_token(p))?;
        if let Some(c) = p.opt_str("comment") {
            t.comment = Some(c.to_string());
        }
        if let Some(e) = p.opt_i64("expire") {
            t.expire = e;
        }
        if let Some(ps) = p.opt_bool("privsep") {
            t.privsep = ps;
        }
        Ok(token_info(t))
    });
    r.delete("/access/users/{userid}/token/{tokenid}", token_params(), |cx, p| {
        let (full, _) = token_id(p)?;
        let mut st = cx.write();
        st.tokens.remove(&full).ok_or_else(|| no_token(p))?;
        Ok(json!(null))
    });
}

fn token_id(p: &Params) -> PveResult<(String, String)> {
    let userid = p.str("userid")?;
    Ok((format!("{userid}!{}", p.str("tokenid")?), userid.to_string()))
}

fn no_token(p: &Params) -> PveError {
    PveError::handler(format!(
        "no such token '{}' for user '{}'",
        p.opt_str("tokenid").unwrap_or(""),
        p.opt_str("userid").unwrap_or("")
    ))
}

fn token_info(t: &ApiToken) -> Value {
    let mut v = json!({"privsep": u8::from(t.privsep), "expire": t.expire});
    if let Some(c) = &t.comment {
        v["comment"] = json!(c);
    }
    v
}

/// A fresh token secret (UUID-shaped, like PVE's).
fn secret_for(full: &str) -> String {
    let a = util::hash_parts(util::now_ms() as u64, &[full.as_bytes(), &rand::random::<u64>().to_be_bytes()]);
    let b = util::hash_parts(rand::random(), &[full.as_bytes()]);
    let h = format!("{a:016x}{b:016x}");
    format!("{}-{}-4{}-a{}-{}", &h[0..8], &h[8..12], &h[13..16], &h[17..20], &h[20..32])
}

fn login(cx: &Ctx, p: &Params) -> PveResult<Value> {
    let mut username = p.str("username")?.to_string();
    if !username.contains('@')
        && let Some(realm) = p.opt_str("realm")
    {
        username = format!("{username}@{realm}");
    }
    let password = p.str("password")?;
    let now = util::now();
    let st = cx.read();
    let valid = match st.users.get(&username) {
        Some(u) if u.enable && (u.expire == 0 || u.expire > now) => {
            // A valid ticket of the same user as password renews it.
            (!u.password.is_empty() && u.password == password)
                || auth::verify_ticket(&st.auth_key, password, now).as_deref() == Some(username.as_str())
        }
        _ => false,
    };
    if !valid {
        return Err(PveError::Status(401, "authentication failure".into()));
    }
    let cap_privs =
        |names: &[&str]| -> Value { Value::Object(names.iter().map(|n| (n.to_string(), json!(1))).collect()) };
    Ok(json!({
        "username": username,
        "ticket": auth::make_ticket(&st.auth_key, &username, now),
        "CSRFPreventionToken": auth::make_csrf(&st.auth_key, &username, now),
        "clustername": st.cluster_name,
        "cap": {
            "vms": cap_privs(&PRIVILEGES.iter().copied().filter(|p| p.starts_with("VM.")).collect::<Vec<_>>()),
            "storage": cap_privs(&["Datastore.Allocate", "Datastore.AllocateSpace", "Datastore.AllocateTemplate", "Datastore.Audit"]),
            "nodes": cap_privs(&["Sys.Audit", "Sys.Console", "Sys.Modify", "Sys.PowerMgmt"]),
            "dc": cap_privs(&["Sys.Audit", "Sys.Modify"]),
            "access": cap_privs(&["Permissions.Modify"]),
        },
    }))
}
