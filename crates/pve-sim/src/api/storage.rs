//! `/nodes/{node}/storage`: storage list and status, content list/allocate/get/copy/update/
//! delete, streamed multipart upload (task `imgcopy`) and download-url (task `download`).
//!
//! download-url cannot reach the internet: a URL whose host is clearly unreachable
//! (`localhost`, loopback addresses, `*.invalid`, `*.test`, or a host containing
//! `unreachable`) fails its task like PVE's wget would; any other URL "downloads" a file whose
//! size is derived from the URL (deterministic, 200 MiB – 1 GiB).

use std::sync::LazyLock;
use std::time::Duration;

use regex::Regex;
use serde_json::{Map, Value, json};

use super::resources::content_list;
use crate::error::{PveError, PveResult};
use crate::model::storage::{split_volid, volume_owner};
use crate::model::{Cluster, Storage, Volume};
use crate::params::{P, Params, f};
use crate::router::{Reply, Routes};
use crate::sim::Ctx;
use crate::util::{self, KIB, MIB};

/// Registers the routes.
pub fn register(r: &mut Routes) {
    r.get(
        "/nodes/{node}/storage",
        vec![
            P::node(),
            P::str("content").opt().fmt(f::STORAGE_CONTENT_LIST),
            P::bool("enabled").opt(),
            P::bool("format").opt(),
            P::storage().opt(),
            P::str("target").opt().fmt(f::NODE),
        ],
        list_storages,
    );
    r.get("/nodes/{node}/storage/{storage}/status", vec![P::node(), P::storage()], |cx, p| {
        let st = cx.read();
        let s = st.storage(p.node()?, p.str("storage")?)?;
        Ok(storage_json(s))
    });
    r.get(
        "/nodes/{node}/storage/{storage}/content",
        vec![P::node(), P::storage(), P::str("content").opt().fmt(f::STORAGE_CONTENT), P::vmid().opt()],
        list_content,
    );
    r.post(
        "/nodes/{node}/storage/{storage}/content",
        vec![
            P::node(),
            P::storage(),
            P::str("filename"),
            P::str("format").opt().en(&["raw", "qcow2", "subvol", "vmdk"]).requires("size"),
            P::str("size").pattern(r"\d+[MG]?"),
            P::vmid(),
        ],
        alloc,
    );
    let vol_params = || vec![P::node(), P::storage().opt(), P::str("volume")];
    r.get("/nodes/{node}/storage/{storage}/content/{+volume}", vol_params(), |cx, p| {
        let st = cx.read();
        let (node, volid) = (p.node()?, volid_param(p)?);
        let v = st.volume(node, &volid).ok_or_else(|| no_volume(&volid))?;
        let s = st.storage(node, split_volid(&volid).map(|(s, _)| s).unwrap_or(""))?;
        let mut m = Map::new();
        m.insert("path".into(), json!(volume_path(s, &volid)));
        m.insert("size".into(), json!(v.size));
        m.insert("used".into(), json!(v.used));
        m.insert("format".into(), json!(v.format));
        if let Some(n) = &v.notes {
            m.insert("notes".into(), json!(n));
        }
        if v.content == "backup" {
            m.insert("protected".into(), json!(u8::from(v.protected)));
        }
        Ok(Value::Object(m))
    });
    let mut copy = vol_params();
    copy.push(P::str("target"));
    copy.push(P::str("target_node").opt().fmt(f::NODE));
    r.post("/nodes/{node}/storage/{storage}/content/{+volume}", copy, copy_volume);
    let mut upd = vol_params();
    upd.push(P::str("notes").opt());
    upd.push(P::bool("protected").opt());
    r.put("/nodes/{node}/storage/{storage}/content/{+volume}", upd, update_volume);
    let mut del = vol_params();
    del.push(P::int("delay").opt().range(1, 30));
    r.add_async(http::Method::DELETE, "/nodes/{node}/storage/{storage}/content/{+volume}", del, delete_volume);
    r.post(
        "/nodes/{node}/storage/{storage}/upload",
        vec![
            P::node(),
            P::storage(),
            checksum(),
            checksum_algorithm(),
            P::str("content").en(&["iso", "vztmpl", "import"]).fmt(f::STORAGE_CONTENT),
            P::str("filename").max_len(255),
            P::str("tmpfilename").opt().pattern("/var/tmp/pveupload-[0-9a-f]+"),
        ],
        upload,
    )
    .upload()
    .local();
    r.post(
        "/nodes/{node}/storage/{storage}/download-url",
        vec![
            P::node(),
            P::storage(),
            checksum(),
            checksum_algorithm(),
            P::str("compression").opt(),
            P::str("content").en(&["iso", "vztmpl", "import"]).fmt(f::STORAGE_CONTENT),
            P::str("filename").max_len(255),
            P::str("url").pattern("https?://.*"),
            P::bool("verify-certificates").opt(),
        ],
        download_url,
    );
}

/// `checksum` of upload and download-url (given together with `checksum-algorithm`).
fn checksum() -> P {
    P::str("checksum").opt().requires("checksum-algorithm")
}

/// `checksum-algorithm` of upload and download-url.
fn checksum_algorithm() -> P {
    P::str("checksum-algorithm").opt().en(&["md5", "sha1", "sha224", "sha256", "sha384", "sha512"]).requires("checksum")
}

fn storage_json(s: &Storage) -> Value {
    let used = s.used();
    json!({
        "storage": s.id, "type": s.kind, "content": content_list(s), "active": 1, "enabled": u8::from(s.enabled),
        "shared": u8::from(s.shared), "total": s.total, "used": used, "avail": s.avail(),
        "used_fraction": if s.total > 0 { used as f64 / s.total as f64 } else { 0.0 },
    })
}

fn list_storages(cx: &Ctx, p: &Params) -> PveResult<Value> {
    let st = cx.read();
    let n = st.node(p.node()?)?;
    let wanted: Vec<&str> = p.list("content");
    let rows = n
        .storages
        .values()
        .filter(|s| p.opt_str("storage").is_none_or(|id| s.id == id))
        .filter(|s| !p.bool("enabled") || s.enabled)
        .filter(|s| wanted.is_empty() || wanted.iter().any(|c| s.supports(c)))
        .map(storage_json)
        .collect();
    Ok(Value::Array(rows))
}

/// One content row (`size` of files on dir storages is a string, as Perl prints it there).
fn content_json(s: &Storage, v: &Volume) -> Value {
    let mut m = Map::new();
    m.insert("volid".into(), json!(v.volid));
    m.insert("content".into(), json!(v.content));
    m.insert("format".into(), json!(v.format));
    let file = s.kind == "dir" && v.content != "images";
    m.insert("size".into(), if file { json!(v.size.to_string()) } else { json!(v.size) });
    m.insert("ctime".into(), json!(v.ctime));
    if let Some(id) = v.vmid {
        m.insert("vmid".into(), json!(id));
    }
    if v.content == "images" || v.content == "rootdir" {
        m.insert("used".into(), json!(v.used));
    }
    if let Some(parent) = &v.parent {
        m.insert("parent".into(), json!(split_volid(parent).map(|(_, n)| n).unwrap_or(parent)));
    }
    if let Some(n) = &v.notes {
        m.insert("notes".into(), json!(n));
    }
    if v.content == "backup" {
        if v.protected {
            m.insert("protected".into(), json!(1));
        }
        if let Some(b) = &v.backup {
            m.insert("subtype".into(), json!(b.kind.as_str()));
        }
    }
    Value::Object(m)
}

fn list_content(cx: &Ctx, p: &Params) -> PveResult<Value> {
    let st = cx.read();
    let s = st.storage(p.node()?, p.str("storage")?)?;
    let content = p.opt_str("content");
    let vmid = p.opt_u32("vmid");
    let rows = s
        .volumes
        .values()
        .filter(|v| content.is_none_or(|c| v.content == c))
        .filter(|v| vmid.is_none_or(|id| v.vmid == Some(id)))
        .map(|v| content_json(s, v))
        .collect();
    Ok(Value::Array(rows))
}

/// `volume` is a full volid or a name on the path's storage.
fn volid_param(p: &Params) -> PveResult<String> {
    let volume = p.str("volume")?;
    if volume.contains(':') {
        return Ok(volume.to_string());
    }
    match p.opt_str("storage") {
        Some(s) => Ok(format!("{s}:{volume}")),
        None => Err(PveError::handler(format!("unable to parse volume ID '{volume}'"))),
    }
}

fn no_volume(volid: &str) -> PveError {
    PveError::handler(format!("volume '{volid}' does not exist"))
}

/// The file or device path PVE reports for a volume.
pub fn volume_path(s: &Storage, volid: &str) -> String {
    let name = split_volid(volid).map(|(_, n)| n).unwrap_or(volid);
    match s.kind.as_str() {
        "lvmthin" | "lvm" => format!("/dev/pve/{}", name.rsplit('/').next().unwrap_or(name)),
        _ => {
            if let Some(rest) = name.strip_prefix("iso/") {
                format!("/var/lib/vz/template/iso/{rest}")
            } else if let Some(rest) = name.strip_prefix("vztmpl/") {
                format!("/var/lib/vz/template/cache/{rest}")
            } else if let Some(rest) = name.strip_prefix("backup/") {
                format!("/var/lib/vz/dump/{rest}")
            } else if let Some(rest) = name.strip_prefix("import/") {
                format!("/var/lib/vz/import/{rest}")
            } else {
                format!("/var/lib/vz/images/{name}")
            }
        }
    }
}

fn alloc(cx: &Ctx, p: &Params) -> PveResult<Value> {
    let (node, sid, vmid) = (p.node()?.to_string(), p.str("storage")?.to_string(), p.vmid()?);
    let name = p.str("filename")?;
    let size_txt = p.str("size")?;
    // `size` is in KiB unless suffixed with M or G.
    let size = match size_txt.strip_suffix('G') {
        Some(n) => n.parse::<u64>().unwrap_or(0) * 1024 * MIB,
        None => match size_txt.strip_suffix('M') {
            Some(n) => n.parse::<u64>().unwrap_or(0) * MIB,
            None => size_txt.parse::<u64>().unwrap_or(0) * KIB,
        },
    };
    let mut st = cx.write();
    let s = st.storage_mut(&node, &sid)?;
    if !s.supports("images") && !s.supports("rootdir") {
        return Err(PveError::handler(format!("storage '{sid}' does not support vm images")));
    }
    let format = p.opt_str("format").unwrap_or(if s.kind == "dir" { "qcow2" } else { "raw" });
    if s.kind != "dir" && format != "raw" {
        return Err(PveError::handler(format!("unsupported format '{format}'")));
    }
    let prefix = format!("vm-{vmid}-");
    if !name.starts_with(&prefix) && !name.starts_with(&format!("base-{vmid}-")) {
        return Err(PveError::handler(format!("illegal name '{name}' - should be 'vm-{vmid}-*'")));
    }
    let vol_name = if s.kind == "dir" { format!("{vmid}/{name}") } else { name.to_string() };
    let volid = s.add_volume(&vol_name, "images", format, size, size, Some(vmid), None).map_err(PveError::handler)?;
    Ok(json!(volid))
}

fn copy_volume(cx: &Ctx, p: &Params) -> PveResult<Value> {
    let node = p.node()?.to_string();
    let volid = volid_param(p)?;
    let target_node = p.opt_str("target_node").unwrap_or(&node).to_string();
    let target = p.str("target")?;
    let (src_sid, _) = split_volid(&volid).ok_or_else(|| no_volume(&volid))?;
    let target = if target.contains(':') { target.to_string() } else { format!("{src_sid}:{target}") };
    let mut st = cx.write();
    let v = st.volume(&node, &volid).cloned().ok_or_else(|| no_volume(&volid))?;
    st.node(&target_node)?;
    let id = v.vmid.map(|id| id.to_string()).unwrap_or_default();
    let spec = cx.task(&node, "imgcopy", id).log(format!("copy {volid} to {target}"));
    let upid = cx.spawn_task(&mut st, spec, move |st: &mut Cluster, _log| {
        let (tsid, tname) = split_volid(&target).ok_or_else(|| format!("unable to parse volume ID '{target}'"))?;
        let s = st.storage_mut(&target_node, tsid).map_err(|e| e.message())?;
        s.add_volume(tname, &v.content, &v.format, v.size, v.used, volume_owner(tname).or(v.vmid), None)?;
        Ok(())
    })?;
    Ok(json!(upid))
}

fn update_volume(cx: &Ctx, p: &Params) -> PveResult<Value> {
    let node = p.node()?.to_string();
    let volid = volid_param(p)?;
    let (sid, _) = split_volid(&volid).ok_or_else(|| no_volume(&volid))?;
    let mut st = cx.write();
    let s = st.storage_mut(&node, sid)?;
    let kind = s.kind.clone();
    let v = s.volumes.get_mut(&volid).ok_or_else(|| no_volume(&volid))?;
    for attr in ["notes", "protected"] {
        if p.has(attr) && v.content != "backup" {
            return Err(PveError::handler(format!("attribute '{attr}' is not supported for storage type '{kind}'")));
        }
    }
    if let Some(notes) = p.opt_str("notes") {
        v.notes = if notes.is_empty() { None } else { Some(notes.to_string()) };
    }
    if let Some(prot) = p.opt_bool("protected") {
        v.protected = prot;
    }
    Ok(json!(null))
}

async fn delete_volume(cx: Ctx, p: Params) -> PveResult<Reply> {
    let node = p.node()?.to_string();
    let volid = volid_param(&p)?;
    let (sid, name) = split_volid(&volid).ok_or_else(|| no_volume(&volid))?;
    let owner = volume_owner(name);
    let id = match owner {
        Some(vmid) => format!("{vmid}@{sid}"),
        None => sid.to_string(),
    };
    let upid = {
        let mut st = cx.write();
        st.storage(&node, sid)?;
        let spec = cx.task(&node, "imgdel", id);
        let (n, v) = (node.clone(), volid.clone());
        cx.spawn_task(&mut st, spec, move |st: &mut Cluster, log| {
            let vol = st.volume(&n, &v).ok_or_else(|| format!("volume '{v}' does not exist"))?;
            if vol.protected {
                return Err(format!("volume '{v}' is protected"));
            }
            if st.nodes[&n].storages.values().flat_map(|s| s.volumes.values()).any(|o| o.parent.as_deref() == Some(&v))
            {
                return Err(format!("base volume '{v}' is still in use by linked cloned"));
            }
            if let Some(g) =
                st.guests.values().find(|g| g.node == n && g.config.values().any(|val| references(val, &v)))
            {
                return Err(format!("volume '{v}' is still in use by {} {}", g.kind.label(), g.vmid));
            }
            st.remove_volume(&n, &v);
            log.line(format!("Removed volume '{v}'"));
            Ok(())
        })?
    };
    if let Some(delay) = p.opt_u64("delay") {
        // With `delay`, wait that long for the task to finish.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(delay);
        while tokio::time::Instant::now() < deadline {
            let finished = cx.read().tasks.get(&upid).filter(|t| !t.running).map(|t| t.exitstatus.clone());
            if let Some(status) = finished {
                // PVE: null when the task succeeded, its error as the call's error otherwise.
                return match status.as_deref() {
                    Some("OK") => Ok(Reply::from(json!(null))),
                    other => Err(PveError::handler(other.unwrap_or("unexpected status").to_string())),
                };
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(Reply::from(json!(upid)))
}

/// Whether a config value refers to the volume (`local-lvm:vm-100-disk-0,size=..`).
fn references(value: &str, volid: &str) -> bool {
    let first = value.split(',').next().unwrap_or("");
    let first = first.strip_prefix("file=").or_else(|| first.strip_prefix("volume=")).unwrap_or(first);
    first == volid
}

static ISO_EXT: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[^/]+\.(?:iso|img)$").expect("static regex"));
static VZTMPL_EXT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[^/]+\.tar\.(?:gz|xz|zst|bz2)$").expect("static regex"));
static IMPORT_EXT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[^/]+\.(?:ova|ovf|qcow2|raw|vmdk)$").expect("static regex"));

/// `normalize_content_filename` + the extension check of upload and download-url.
fn content_filename(content: &str, filename: &str) -> PveResult<String> {
    let name: String =
        filename.chars().map(|c| if c.is_ascii_alphanumeric() || "_.-".contains(c) { c } else { '_' }).collect();
    let ok = match content {
        "iso" => ISO_EXT.is_match(&name),
        "vztmpl" => VZTMPL_EXT.is_match(&name),
        _ => IMPORT_EXT.is_match(&name),
    };
    if !ok {
        return Err(PveError::param("filename", "wrong file extension"));
    }
    Ok(name)
}

fn file_format(content: &str, name: &str) -> String {
    match content {
        "iso" => "iso".into(),
        "vztmpl" => name.rsplit('.').next().map(|e| format!("t{e}")).unwrap_or_else(|| "tgz".into()),
        _ => name.rsplit('.').next().unwrap_or("raw").to_string(),
    }
}

fn check_content(s: &Storage, content: &str) -> PveResult<()> {
    if s.supports(content) {
        Ok(())
    } else {
        Err(PveError::handler(format!("storage '{}' does not support '{content}' content", s.id)))
    }
}

fn upload(cx: &Ctx, p: &Params) -> PveResult<Value> {
    let (node, sid) = (p.node()?.to_string(), p.str("storage")?.to_string());
    let content = p.str("content")?.to_string();
    let name = content_filename(&content, p.str("filename")?)?;
    let info = cx.upload.clone().unwrap_or_default();
    let expected = p
        .opt_str("checksum")
        .map(|c| (p.opt_str("checksum-algorithm").unwrap_or("").to_string(), c.to_ascii_lowercase()));
    let tmp = p.opt_str("tmpfilename").unwrap_or("/var/tmp/pveupload-0").to_string();
    let mut st = cx.write();
    let s = st.storage(&node, &sid)?;
    check_content(s, &content)?;
    let vol_name = format!("{content}/{name}");
    let path = volume_path(s, &format!("{sid}:{vol_name}"));
    let spec = cx
        .task(&node, "imgcopy", "")
        .log(format!("starting file import from: {tmp}"))
        .log(format!("target node: {node}"))
        .log(format!("target file: {path}"))
        .log(format!("file size is: {}", info.size));
    let upid = cx.spawn_task(&mut st, spec, move |st: &mut Cluster, log| {
        if let Some((algo, want)) = expected {
            match &info.digest {
                Some((a, got)) if *a == algo && *got != want => {
                    return Err(format!("checksum mismatch: got '{got}' != expect '{want}'"));
                }
                Some(_) => log.line(format!("calculating checksum of '{tmp}'...OK, checksum verified")),
                None => log.line(format!("checksum algorithm '{algo}' not verified")),
            }
        }
        let s = st.storage_mut(&node, &sid).map_err(|e| e.message())?;
        let volid = format!("{sid}:{vol_name}");
        let old = s.volumes.remove(&volid);
        if let Err(e) =
            s.add_volume(&vol_name, &content, &file_format(&content, &vol_name), info.size, info.size, None, None)
        {
            if let Some(o) = old {
                s.volumes.insert(volid, o);
            }
            return Err(format!("failed to copy '{tmp}' to '{path}': {e}"));
        }
        log.line(format!("command: cp -- {tmp} {path}"));
        log.line("finished file import successfully");
        Ok(())
    })?;
    Ok(json!(upid))
}

/// Whether the simulator treats a URL's host as unreachable.
fn unreachable_host(url: &str) -> Option<String> {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let hostport = rest.split(['/', '?', '#']).next().unwrap_or("");
    let hostport = hostport.rsplit_once('@').map(|(_, h)| h).unwrap_or(hostport);
    let host = if hostport.starts_with('[') {
        hostport.split(']').next().unwrap_or("").trim_start_matches('[').to_string()
    } else {
        hostport.split(':').next().unwrap_or("").to_string()
    };
    let h = host.to_ascii_lowercase();
    let bad = h.is_empty()
        || h == "localhost"
        || h.starts_with("127.")
        || h == "::1"
        || h.ends_with(".invalid")
        || h.ends_with(".test")
        || h.contains("unreachable");
    bad.then_some(hostport.to_string())
}

fn download_url(cx: &Ctx, p: &Params) -> PveResult<Value> {
    let (node, sid) = (p.node()?.to_string(), p.str("storage")?.to_string());
    let content = p.str("content")?.to_string();
    let name = content_filename(&content, p.str("filename")?)?;
    let url = p.str("url")?.to_string();
    let mut st = cx.write();
    let s = st.storage(&node, &sid)?;
    check_content(s, &content)?;
    let vol_name = format!("{content}/{name}");
    let volid = format!("{sid}:{vol_name}");
    let path = volume_path(s, &volid);
    if s.volumes.contains_key(&volid) {
        return Err(PveError::handler(format!("refusing to override existing file '{path}'")));
    }
    let spec = cx.task(&node, "download", &name).log(format!("downloading {url} to {path}"));
    let size = 200 * MIB + util::hash_parts(st.seed, &[url.as_bytes()]) % (824 * MIB);
    let upid = cx.spawn_task(&mut st, spec, move |st: &mut Cluster, log| {
        if let Some(host) = unreachable_host(&url) {
            let port = if host.contains(':') {
                String::new()
            } else if url.starts_with("https") {
                ":443".into()
            } else {
                ":80".into()
            };
            return Err(format!("download failed: 500 Can't connect to {host}{port} (Connection refused)"));
        }
        let s = st.storage_mut(&node, &sid).map_err(|e| e.message())?;
        s.add_volume(&vol_name, &content, &file_format(&content, &vol_name), size, size, None, None)
            .map_err(|e| format!("download failed: {e}"))?;
        log.line(format!("download of '{url}' to '{path}' finished"));
        Ok(())
    })?;
    Ok(json!(upid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreachable_hosts_are_recognised() {
        assert!(unreachable_host("https://localhost/x.iso").is_some());
        assert!(unreachable_host("http://127.0.0.1:8080/x.iso").is_some());
        assert!(unreachable_host("https://mirror.unreachable.example/x.iso").is_some());
        assert!(unreachable_host("https://cdimage.debian.org/x.iso").is_none());
    }

    #[test]
    fn filenames_are_normalised_and_checked() {
        assert_eq!(content_filename("iso", "my disk.iso").unwrap(), "my_disk.iso");
        assert!(content_filename("iso", "x.tar.zst").is_err());
        assert!(content_filename("vztmpl", "x.tar.zst").is_ok());
        assert!(references("local-lvm:vm-100-disk-0,size=8G", "local-lvm:vm-100-disk-0"));
        assert!(!references("local-lvm:vm-100-disk-01,size=8G", "local-lvm:vm-100-disk-0"));
    }
}
