//! Storage calls: list, content (list, delete), streamed uploads and download-url.
//!
//! Uploads are `multipart/form-data` with the form fields first and the file last in a
//! field called `filename` (pveproxy's parser requires that name). pveproxy refuses
//! chunked bodies, so the body carries a Content-Length: the file is streamed from disk
//! or from any `AsyncRead` of known length, never buffered.

use std::path::Path;

use reqwest::Method;
use reqwest::multipart::{Form, Part};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::AsyncRead;
use tokio_util::io::ReaderStream;

use crate::client::{ProxmoxClient, path_segment};
use crate::de;
use crate::error::{PveError, Result};
use crate::params::Params;
use crate::upid::Upid;

/// Calls on one storage of one node.
#[derive(Debug, Clone)]
pub struct StorageApi {
    pub(crate) client: ProxmoxClient,
    pub(crate) node: String,
    pub(crate) storage: String,
}

/// Filters of `GET /nodes/{node}/storage`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StorageListQuery {
    /// Only storages offering these content types (`iso,images`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Only enabled storages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Include format information.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<bool>,
    /// Only this storage.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage: Option<String>,
    /// Only storages also usable on this node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// An item of `GET /nodes/{node}/storage`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct StorageStatus {
    /// Storage id.
    pub storage: String,
    /// Plugin type (`dir`, `lvmthin`, `zfspool`, `nfs`, ...).
    #[serde(rename = "type")]
    pub storage_type: String,
    /// Content types, comma-separated.
    #[serde(default)]
    pub content: String,
    /// Active.
    #[serde(default, deserialize_with = "de::opt_bool")]
    pub active: Option<bool>,
    /// Enabled.
    #[serde(default, deserialize_with = "de::opt_bool")]
    pub enabled: Option<bool>,
    /// Shared between nodes.
    #[serde(default, deserialize_with = "de::opt_bool")]
    pub shared: Option<bool>,
    /// Size, bytes.
    #[serde(default, deserialize_with = "de::opt_int")]
    pub total: Option<u64>,
    /// Used, bytes.
    #[serde(default, deserialize_with = "de::opt_int")]
    pub used: Option<u64>,
    /// Available, bytes.
    #[serde(default, deserialize_with = "de::opt_int")]
    pub avail: Option<u64>,
    /// `used / total`.
    #[serde(default, deserialize_with = "de::opt_float")]
    pub used_fraction: Option<f64>,
}

/// Filters of `GET .../content`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ContentQuery {
    /// Only this content type (`iso`, `vztmpl`, `backup`, `images`, `rootdir`, `import`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Only volumes of this guest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vmid: Option<u32>,
}

impl ContentQuery {
    /// Only `content` volumes.
    pub fn content(content: impl Into<String>) -> Self {
        Self { content: Some(content.into()), vmid: None }
    }
    /// Backups of guest `vmid`.
    pub fn backups_of(vmid: u32) -> Self {
        Self { content: Some("backup".into()), vmid: Some(vmid) }
    }
}

/// The body of `PUT .../content/{volume}`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VolumeUpdate {
    /// A backup's notes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
    /// Protect a backup from removal (and pruning).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protected: Option<bool>,
}

/// An item of `GET .../content`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct StorageContent {
    /// Volume id, e.g. `local:iso/debian-12.iso`.
    pub volid: String,
    /// Format (`iso`, `raw`, `qcow2`, `vma.zst`, `tzst`, ...).
    #[serde(default)]
    pub format: String,
    /// Content type.
    #[serde(default)]
    pub content: Option<String>,
    /// Size, bytes (a string on some storages).
    #[serde(default, deserialize_with = "de::opt_int")]
    pub size: Option<u64>,
    /// Used bytes (thin volumes).
    #[serde(default, deserialize_with = "de::opt_int")]
    pub used: Option<u64>,
    /// Creation time, epoch seconds.
    #[serde(default, deserialize_with = "de::opt_int")]
    pub ctime: Option<i64>,
    /// Owning guest.
    #[serde(default, deserialize_with = "de::opt_int")]
    pub vmid: Option<u32>,
    /// Backup notes.
    #[serde(default)]
    pub notes: Option<String>,
    /// Protected backup.
    #[serde(default, deserialize_with = "de::opt_bool")]
    pub protected: Option<bool>,
    /// Base volume of a linked clone.
    #[serde(default)]
    pub parent: Option<String>,
    /// Backup verification state.
    #[serde(default)]
    pub verification: Option<Value>,
}

/// The `content` of an upload or download.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UploadContent {
    /// ISO image.
    Iso,
    /// Container template.
    Vztmpl,
    /// Disk image to import.
    Import,
}

impl UploadContent {
    fn as_str(self) -> &'static str {
        match self {
            UploadContent::Iso => "iso",
            UploadContent::Vztmpl => "vztmpl",
            UploadContent::Import => "import",
        }
    }
}

/// Optional checksum verified by PVE after an upload or download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checksum {
    /// `md5`, `sha1`, `sha224`, `sha256`, `sha384` or `sha512`.
    pub algorithm: String,
    /// Hex digest.
    pub value: String,
}

/// Parameters of `POST .../download-url`.
#[derive(Debug, Clone, Serialize)]
pub struct DownloadUrl {
    /// Content type.
    pub content: UploadContent,
    /// Target file name.
    pub filename: String,
    /// Source URL (`http(s)://...`).
    pub url: String,
    /// Expected checksum.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
    /// Checksum algorithm.
    #[serde(rename = "checksum-algorithm", skip_serializing_if = "Option::is_none")]
    pub checksum_algorithm: Option<String>,
    /// Decompress with this algorithm (`zst`, `gz`, `lzo`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compression: Option<String>,
    /// Verify the source's TLS certificate (PVE default 1).
    #[serde(rename = "verify-certificates", skip_serializing_if = "Option::is_none")]
    pub verify_certificates: Option<bool>,
}

impl DownloadUrl {
    /// Download `url` as `filename`.
    pub fn new(content: UploadContent, filename: impl Into<String>, url: impl Into<String>) -> Self {
        Self {
            content,
            filename: filename.into(),
            url: url.into(),
            checksum: None,
            checksum_algorithm: None,
            compression: None,
            verify_certificates: None,
        }
    }
}

/// Which backups a retention run looks at (`GET`/`DELETE .../prunebackups`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct PruneQuery {
    /// The retention (`keep-last=3,keep-daily=7`); the storage's own when absent.
    #[serde(rename = "prune-backups", skip_serializing_if = "Option::is_none")]
    pub prune_backups: Option<String>,
    /// Only this guest type (`qemu` or `lxc`).
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub guest_type: Option<String>,
    /// Only this guest's backups.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vmid: Option<u32>,
}

/// A backup as the retention dry run marks it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PruneMark {
    /// The backup's volume id.
    pub volid: String,
    /// Creation time, Unix seconds.
    pub ctime: i64,
    /// `keep`, `remove`, `protected` or `renamed`.
    pub mark: String,
    /// The guest's VMID.
    #[serde(default)]
    pub vmid: Option<u32>,
    /// The guest's type.
    #[serde(rename = "type", default)]
    pub guest_type: Option<String>,
}

impl StorageApi {
    /// Storage id.
    pub fn name(&self) -> &str {
        &self.storage
    }

    fn path(&self, rest: &str) -> String {
        format!("/nodes/{}/storage/{}{}", path_segment(&self.node), path_segment(&self.storage), rest)
    }

    /// `GET .../content`.
    pub async fn content(&self, query: &ContentQuery) -> Result<Vec<StorageContent>> {
        self.client.call_with(Method::GET, &self.path("/content"), query).await
    }

    /// `PUT .../content/{volume}`: sets a volume's attributes (a backup's `protected`, `notes`).
    pub async fn update_volume(&self, volid: &str, update: &VolumeUpdate) -> Result<()> {
        let _: Value = self
            .client
            .call_with(Method::PUT, &self.path(&format!("/content/{}", path_segment(volid))), update)
            .await?;
        Ok(())
    }

    /// `DELETE .../content/{volume}`: deletes a volume (e.g. a backup); task `imgdel`.
    pub async fn delete_volume(&self, volid: &str) -> Result<Upid> {
        self.client.call(Method::DELETE, &self.path(&format!("/content/{}", path_segment(volid))), &Params::new()).await
    }

    /// `GET .../prunebackups`: what a retention run would keep and remove (a dry run).
    pub async fn prune_preview(&self, query: &PruneQuery) -> Result<Vec<PruneMark>> {
        self.client.call_with(Method::GET, &self.path("/prunebackups"), query).await
    }

    /// `DELETE .../prunebackups`: removes what the dry run marks `remove`; task `prunebackups`.
    pub async fn prune(&self, query: &PruneQuery) -> Result<Upid> {
        self.client.call_with(Method::DELETE, &self.path("/prunebackups"), query).await
    }

    /// `GET .../status`.
    pub async fn status(&self) -> Result<Value> {
        self.client.call(Method::GET, &self.path("/status"), &Params::new()).await
    }

    /// `POST .../download-url`: the node fetches a URL into the storage; task `download`.
    pub async fn download_url(&self, params: &DownloadUrl) -> Result<Upid> {
        self.client.call_with(Method::POST, &self.path("/download-url"), params).await
    }

    /// `POST .../upload` of a local file, streamed from disk; task `imgcopy`.
    pub async fn upload_file(&self, content: UploadContent, file: &Path, checksum: Option<&Checksum>) -> Result<Upid> {
        let io_err = |context: String| move |source| PveError::Io { context, source };
        let f = tokio::fs::File::open(file).await.map_err(io_err(format!("opening {}", file.display())))?;
        let len = f.metadata().await.map_err(io_err(format!("reading size of {}", file.display())))?.len();
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| PveError::InvalidRequest(format!("{} has no UTF-8 file name", file.display())))?
            .to_string();
        self.upload_reader(content, &name, f, len, checksum).await
    }

    /// `POST .../upload` of `len` bytes read from `reader` and stored as `filename`;
    /// task `imgcopy`. The reader is streamed; `len` must be exact.
    pub async fn upload_reader<R>(
        &self,
        content: UploadContent,
        filename: &str,
        reader: R,
        len: u64,
        checksum: Option<&Checksum>,
    ) -> Result<Upid>
    where
        R: AsyncRead + Send + Sync + 'static,
    {
        let body = reqwest::Body::wrap_stream(ReaderStream::new(reader));
        let file_part = Part::stream_with_length(body, len)
            .file_name(filename.to_string())
            .mime_str("application/octet-stream")
            .map_err(|e| PveError::InvalidRequest(format!("upload part: {e}")))?;
        let mut form = Form::new().text("content", content.as_str());
        if let Some(c) = checksum {
            form = form.text("checksum", c.value.clone()).text("checksum-algorithm", c.algorithm.clone());
        }
        let form = form.part("filename", file_part);
        let path = self.path("/upload");
        let inner = &self.client.inner;
        let mut req = inner.http.post(self.client.url(&path)).multipart(form);
        if let Some(t) = inner.upload_timeout {
            req = req.timeout(t);
        }
        tracing::debug!(path, filename, len, "uploading to proxmox storage");
        self.client.send_prepared(Method::POST, &path, req, inner.upload_timeout).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Reads one HTTP request (head and `Content-Length` body) from a raw socket.
    async fn read_request(sock: &mut tokio::net::TcpStream) -> (String, Vec<u8>) {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        let head_end = loop {
            let n = sock.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed before the request head ended");
            buf.extend_from_slice(&chunk[..n]);
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        let head = String::from_utf8(buf[..head_end].to_vec()).unwrap().to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .expect("pveproxy refuses uploads without Content-Length")
            .trim()
            .parse()
            .unwrap();
        let mut body = buf[head_end..].to_vec();
        while body.len() < len {
            let n = sock.read(&mut chunk).await.unwrap();
            assert!(n > 0);
            body.extend_from_slice(&chunk[..n]);
        }
        (head, body)
    }

    #[tokio::test]
    async fn upload_is_a_sized_multipart_with_fields_before_the_file() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let (head, body) = read_request(&mut sock).await;
            let reply = r#"{"data":"UPID:pve1:00001234:00ABCDEF:65000000:imgcopy::root@pam!ci:"}"#;
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json;charset=UTF-8\r\nContent-Length: {}\r\n\r\n{reply}",
                reply.len()
            );
            sock.write_all(resp.as_bytes()).await.unwrap();
            (head, body)
        });

        let token = crate::ApiToken::parse("root@pam!ci=secret-value").unwrap();
        let config = crate::ClientConfig::new(format!("http://{addr}"), token, crate::TlsMode::System).allow_http(true);
        let client = ProxmoxClient::new(config).unwrap();
        let payload = vec![7u8; 100_000];
        let upid = client
            .node("pve1")
            .storage("local")
            .upload_reader(
                UploadContent::Iso,
                "disk.iso",
                std::io::Cursor::new(payload.clone()),
                payload.len() as u64,
                Some(&Checksum { algorithm: "sha256".into(), value: "ab".repeat(32) }),
            )
            .await
            .unwrap();
        assert_eq!(upid.task_type(), "imgcopy");

        let (head, body) = server.await.unwrap();
        assert!(head.starts_with("post /api2/json/nodes/pve1/storage/local/upload "), "{head}");
        assert!(!head.contains("transfer-encoding"), "{head}");
        assert!(head.contains("content-type: multipart/form-data; boundary="), "{head}");
        assert!(head.contains("authorization: pveapitoken=root@pam!ci=secret-value"));
        let text = String::from_utf8_lossy(&body);
        let content = text.find("name=\"content\"").unwrap();
        let checksum = text.find("name=\"checksum\"").unwrap();
        let algo = text.find("name=\"checksum-algorithm\"").unwrap();
        let file = text.find("name=\"filename\"; filename=\"disk.iso\"").unwrap();
        assert!(content < file && checksum < file && algo < file, "form fields precede the file");
        // The whole payload is in the body, once.
        assert!(body.windows(payload.len()).any(|w| w == payload.as_slice()));
    }

    #[test]
    fn content_items_decode() {
        let items: Vec<StorageContent> = serde_json::from_str(
            r#"[{"volid":"local:backup/vzdump-qemu-100-2024_01_01-00_00_00.vma.zst","format":"vma.zst","size":"123456","ctime":1704067200,"vmid":"100","content":"backup","protected":0,"notes":"web1"},
                {"volid":"local:iso/debian-12.iso","format":"iso","size":658505728,"content":"iso"}]"#,
        )
        .unwrap();
        assert_eq!(items[0].size, Some(123_456));
        assert_eq!(items[0].vmid, Some(100));
        assert_eq!(items[0].protected, Some(false));
        assert_eq!(items[1].vmid, None);
    }

    #[test]
    fn queries_encode() {
        let p = Params::from_serialize(&ContentQuery::backups_of(100)).unwrap();
        assert_eq!(p.to_form(), "content=backup&vmid=100");
        let d = Params::from_serialize(&DownloadUrl {
            verify_certificates: Some(false),
            ..DownloadUrl::new(UploadContent::Iso, "x.iso", "https://example.com/x.iso")
        })
        .unwrap();
        assert_eq!(d.get("content"), Some("iso"));
        assert_eq!(d.get("verify-certificates"), Some("0"));
        let s: StorageStatus = serde_json::from_str(
            r#"{"storage":"local-lvm","type":"lvmthin","content":"images,rootdir","active":1,"enabled":1,"shared":0,"total":100,"used":"50","avail":50,"used_fraction":0.5}"#,
        )
        .unwrap();
        assert_eq!(s.used, Some(50));
        assert_eq!(s.shared, Some(false));
    }
}
