//! Upload bodies: a `multipart/form-data` stream is parsed as it arrives; text fields become
//! parameters and the file part is counted (and hashed when a SHA-2 checksum algorithm was
//! given before it), never held in memory.

use std::collections::HashMap;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use sha2::Digest;

use crate::params::RawValue;
use crate::util;

/// What an upload's multipart body contained (the file itself is counted, not kept).
#[derive(Debug, Clone, Default)]
pub struct UploadInfo {
    /// Bytes of the file part.
    pub size: u64,
    /// The file part's file name.
    pub file_name: Option<String>,
    /// Hex digest of the file when `checksum-algorithm` (a SHA-2 one) came before the file.
    pub digest: Option<(String, String)>,
}

/// Streams a multipart body: text fields become parameters, the file part is counted (and
/// hashed when a SHA-2 `checksum-algorithm` was given first), never buffered.
pub(crate) async fn read_multipart(
    body: Incoming,
    ctype: &str,
    raw: &mut HashMap<String, RawValue>,
) -> Result<UploadInfo, String> {
    let boundary = multer::parse_boundary(ctype).map_err(|e| format!("upload: {e}"))?;
    let stream = body.into_data_stream();
    let mut mp = multer::Multipart::new(stream, boundary);
    let mut info = UploadInfo::default();
    let mut saw_file = false;
    while let Some(mut field) = mp.next_field().await.map_err(|e| format!("upload failed: {e}"))? {
        let name = field.name().unwrap_or("").to_string();
        if let Some(file_name) = field.file_name().map(str::to_string) {
            if saw_file {
                return Err("upload failed: more than one file".into());
            }
            saw_file = true;
            let algo = raw.get("checksum-algorithm").map(RawValue::as_string);
            let mut hasher = algo.as_deref().and_then(Hasher::new);
            while let Some(chunk) = field.chunk().await.map_err(|e| format!("upload failed: {e}"))? {
                info.size += chunk.len() as u64;
                if let Some(h) = hasher.as_mut() {
                    h.update(&chunk);
                }
            }
            if let (Some(a), Some(h)) = (algo, hasher) {
                info.digest = Some((a, h.finish()));
            }
            if !raw.contains_key("filename") {
                raw.insert("filename".into(), RawValue::Str(file_name.clone()));
            }
            info.file_name = Some(file_name);
            let tmp = format!("/var/tmp/pveupload-{:x}", util::hash_parts(util::now_ms() as u64, &[name.as_bytes()]));
            raw.insert("tmpfilename".into(), RawValue::Str(tmp));
        } else {
            let text = field.text().await.map_err(|e| format!("upload failed: {e}"))?;
            raw.insert(name, RawValue::Str(text));
        }
    }
    // Without a file part `filename` stays unset, and parameter verification refuses the request
    // ("property is missing and it is not optional"), as pveproxy does.
    Ok(info)
}

enum Hasher {
    S224(sha2::Sha224),
    S256(sha2::Sha256),
    S384(sha2::Sha384),
    S512(sha2::Sha512),
}

impl Hasher {
    fn new(algo: &str) -> Option<Hasher> {
        Some(match algo {
            "sha224" => Hasher::S224(sha2::Sha224::new()),
            "sha256" => Hasher::S256(sha2::Sha256::new()),
            "sha384" => Hasher::S384(sha2::Sha384::new()),
            "sha512" => Hasher::S512(sha2::Sha512::new()),
            _ => return None,
        })
    }
    fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::S224(h) => h.update(data),
            Hasher::S256(h) => h.update(data),
            Hasher::S384(h) => h.update(data),
            Hasher::S512(h) => h.update(data),
        }
    }
    fn finish(self) -> String {
        match self {
            Hasher::S224(h) => hex::encode(h.finalize()),
            Hasher::S256(h) => hex::encode(h.finalize()),
            Hasher::S384(h) => hex::encode(h.finalize()),
            Hasher::S512(h) => hex::encode(h.finalize()),
        }
    }
}
