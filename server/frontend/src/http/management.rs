//! The registry over HTTP: `/v2/admin/models...` (management routes, so the
//! management token applies by path; see [`crate::auth`]).
//!
//! - `GET /v2/admin/models`: every model (`models list --json`), or with
//!   `?tag=k=v&name=GLOB&alias=A` the matching versions (`models search`).
//! - `GET /v2/admin/models/{name}`, `{name}@{alias}`, `{name}/versions/{v}`:
//!   one version (`models show --json`).
//! - `POST /v2/admin/models/{name}/versions`: a bundle as tar.gz; 201 with
//!   the new version. Query: `message=`, `user=` (default `http`), `tag=k=v`.
//! - `PUT /v2/admin/models/{name}/aliases/{alias}` `{"version": N}`.
//! - `DELETE /v2/admin/models/{name}/versions/{v}`: 204; 409 while an alias
//!   points at it or this server serves it.
//!
//! SQLite and file work runs on `spawn_blocking`. Uploads are written and
//! extracted only inside `REPO/.upload-*` (skipped by the server, the
//! importer and `repo check`), removed however the request ends.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;

use super::reply::{self, Body};
use crate::state::AppState;
use ferroserve_registry::lifecycle as types;
use ferroserve_registry::models::{self, SearchFilter, VersionRef};
use ferroserve_registry::{self as reg, RegistryError};

/// The user recorded for changes made over HTTP without `user=`.
pub const DEFAULT_USER: &str = "http";

/// Why a management request failed: a status and a message.
pub(super) struct Failure(pub(super) StatusCode, pub(super) String);

impl From<RegistryError> for Failure {
    fn from(e: RegistryError) -> Self {
        let status = match &e {
            RegistryError::Invalid { .. }
            | RegistryError::Bundle { .. }
            | RegistryError::Manifest(_)
            | RegistryError::Load { .. } => StatusCode::BAD_REQUEST,
            RegistryError::NotFound { .. } => StatusCode::NOT_FOUND,
            RegistryError::Conflict { .. } => StatusCode::CONFLICT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Failure(status, e.to_string())
    }
}

pub(super) fn bad(msg: impl Into<String>) -> Failure {
    Failure(StatusCode::BAD_REQUEST, msg.into())
}

/// Routes `rest`, the path after `/v2/admin/models`.
pub async fn handle(state: &AppState, rest: &[&str], req: Request<Incoming>) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = parse_query(req.uri().query().unwrap_or(""));
    let result = match (rest, &method) {
        ([], &Method::GET) => list(state, &query).await,
        ([r], &Method::GET) => show(state, r).await,
        ([name, "versions", v], &Method::GET) => match version_ref(name, v) {
            Ok(r) => show_ref(state, r).await,
            Err(e) => Err(e),
        },
        ([name, "versions", v], &Method::DELETE) => delete(state, name, v).await,
        ([name, "versions"], &Method::POST) => upload(state, name, &query, req).await,
        ([name, "aliases", alias], &Method::PUT) => set_alias(state, name, alias, req).await,
        ([] | [_] | [_, "versions"] | [_, "versions", _] | [_, "aliases", _], _) => Err(Failure(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not allowed on {path}"),
        )),
        _ => Err(Failure(
            StatusCode::NOT_FOUND,
            format!("no route for {path}"),
        )),
    };
    result.unwrap_or_else(|Failure(status, msg)| reply::error(status, &msg))
}

pub(super) type Reply = Result<Response<Body>, Failure>;

/// Reads a small JSON body (at most 64 KiB); `what` says what was expected.
pub(super) async fn read_json<T: for<'de> serde::Deserialize<'de>>(
    req: Request<Incoming>,
    what: &str,
) -> Result<T, Failure> {
    const MAX: usize = 64 << 10;
    let body = match http_body_util::Limited::new(req.into_body(), MAX)
        .collect()
        .await
    {
        Ok(c) => c.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(Failure(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body: expected at most {MAX} bytes of JSON"),
            ))
        }
        Err(e) => return Err(bad(format!("could not read the request body: {e}"))),
    };
    serde_json::from_slice(&body).map_err(|e| bad(format!("body: expected {what}: {e}")))
}

pub(super) fn repo(state: &AppState) -> Result<PathBuf, Failure> {
    state.repo.clone().ok_or_else(|| {
        Failure(
            StatusCode::SERVICE_UNAVAILABLE,
            "this server has no model repository to manage".into(),
        )
    })
}

/// Runs registry work off the tokio workers.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Failure> + Send + 'static,
) -> Result<T, Failure> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(Failure(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("registry task failed: {e}"),
        ))
    })
}

fn version_ref(name: &str, v: &str) -> Result<VersionRef, Failure> {
    reg::check_model_name(name)?;
    let n = v.parse::<u64>().ok().filter(|&n| n > 0).ok_or_else(|| {
        bad(format!(
            "version: expected a positive integer, received {v:?}"
        ))
    })?;
    Ok(VersionRef::Number(name.to_string(), n))
}

async fn list(state: &AppState, query: &[(String, String)]) -> Reply {
    let repo = repo(state)?;
    let mut filter = SearchFilter::default();
    let mut searching = false;
    for (k, v) in query {
        match k.as_str() {
            "tag" => {
                filter
                    .tags
                    .push(reg::register::parse_tag(v).map_err(|e| bad(format!("tag: {e}")))?);
            }
            "name" => filter.name = Some(v.clone()),
            "alias" => filter.alias = Some(v.clone()),
            other => {
                return Err(bad(format!(
                    "query parameter {other:?}: expected tag, name or alias"
                )))
            }
        }
        searching = true;
    }
    blocking(move || {
        Ok(if searching {
            reply::json(StatusCode::OK, &models::search(&repo, &filter)?)
        } else {
            reply::json(StatusCode::OK, &models::list(&repo)?)
        })
    })
    .await
}

async fn show(state: &AppState, r: &str) -> Reply {
    let r = models::parse_ref(r).map_err(|e| bad(format!("model reference: {e}")))?;
    show_ref(state, r).await
}

async fn show_ref(state: &AppState, r: VersionRef) -> Reply {
    let repo = repo(state)?;
    blocking(move || Ok(reply::json(StatusCode::OK, &models::show(&repo, &r)?))).await
}

async fn delete(state: &AppState, name: &str, v: &str) -> Reply {
    let repo = repo(state)?;
    let r = version_ref(name, v)?;
    let VersionRef::Number(_, version) = r else {
        unreachable!("version_ref gives a number")
    };
    let serving = state.routes.serves(name, version);
    if !serving.is_empty() {
        return Err(Failure(
            StatusCode::CONFLICT,
            format!(
                "cannot delete version {name}:{version}: this server serves it in deployment {} \
                 (an active deployment); point the deployment at another version first",
                serving.join(", ")
            ),
        ));
    }
    let deleted = blocking(move || Ok(models::delete(&repo, &r, false, DEFAULT_USER)?)).await?;
    state.events.emit(state.events.event(
        types::VERSION_DELETED,
        &format!("{}:{}", deleted.model, deleted.version),
        json!({
            "model": deleted.model,
            "version": deleted.version,
            "files": deleted.files,
            "folder_removed": deleted.folder_removed,
        }),
    ));
    Ok(reply::empty(StatusCode::NO_CONTENT))
}

async fn set_alias(state: &AppState, name: &str, alias: &str, req: Request<Incoming>) -> Reply {
    let repo = repo(state)?;
    let v: serde_json::Value = read_json(req, "JSON {\"version\": N}").await?;
    let version = match v.get("version") {
        Some(n) => n.as_u64().filter(|&n| n > 0).ok_or_else(|| {
            bad(format!(
                "version: expected a positive integer, received {n}"
            ))
        })?,
        None => {
            return Err(bad(
                "version: expected a positive integer, received nothing",
            ))
        }
    };
    let (name, alias) = (name.to_string(), alias.to_string());
    let moved = blocking(move || {
        Ok(models::set_alias(
            &repo,
            &name,
            &alias,
            version,
            DEFAULT_USER,
        )?)
    })
    .await?;
    state.events.emit(state.events.event(
        types::ALIAS_MOVED,
        &format!("{}@{}", moved.model, moved.alias),
        json!({
            "model": moved.model,
            "version": moved.to,
            "alias": moved.alias,
            "from": moved.from,
            "to": moved.to,
        }),
    ));
    super::endpoints_api::reconcile(state, "alias moved").await;
    Ok(reply::json(StatusCode::OK, &moved))
}

async fn upload(
    state: &AppState,
    name: &str,
    query: &[(String, String)],
    req: Request<Incoming>,
) -> Reply {
    let repo = repo(state)?;
    reg::check_model_name(name)?;
    let mut message = None;
    let mut user = None;
    let mut tags = BTreeMap::new();
    for (k, v) in query {
        match k.as_str() {
            "message" => message = Some(v.clone()),
            "user" => user = Some(v.clone()),
            "tag" => {
                let (k, v) = reg::register::parse_tag(v).map_err(|e| bad(format!("tag: {e}")))?;
                tags.insert(k, v);
            }
            other => {
                return Err(bad(format!(
                    "query parameter {other:?}: expected message, user or tag"
                )))
            }
        }
    }
    let ctype = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let essence = ctype.split(';').next().unwrap_or("").trim();
    if !matches!(
        essence,
        "application/gzip" | "application/x-gzip" | "application/x-tar+gzip"
    ) {
        return Err(Failure(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "content-type: expected application/gzip (a tar.gz bundle), received {ctype:?}"
            ),
        ));
    }
    let limit = state.max_upload_bytes;
    let too_large = |what: String| {
        Failure(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("upload {what} exceeds the limit of {limit} bytes (--max-upload-bytes)"),
        )
    };
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse::<u64>().ok());
    if let Some(len) = declared {
        if len > limit as u64 {
            return Err(too_large(format!("of {len} bytes (Content-Length)")));
        }
    }
    let canon = {
        let repo = repo.clone();
        blocking(move || {
            std::fs::canonicalize(&repo).map_err(|e| {
                Failure(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("repository {}: {e}", repo.display()),
                )
            })
        })
        .await?
    };
    let tmp = {
        let canon = canon.clone();
        blocking(move || {
            tempfile::Builder::new()
                .prefix(".upload-")
                .tempdir_in(&canon)
                .map(|d| UploadDir(Some(d)))
                .map_err(|e| {
                    Failure(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("cannot create an upload folder in {}: {e}", canon.display()),
                    )
                })
        })
        .await?
    };
    // From here on `tmp` is removed when dropped, whatever happens.
    let archive = tmp.path().join("bundle.tar.gz");
    let io_err = |e: std::io::Error| {
        Failure(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot write the upload: {e}"),
        )
    };
    let mut file = tokio::fs::File::create(&archive).await.map_err(io_err)?;
    let mut body = req.into_body();
    let mut received: usize = 0;
    let idle = state.limits.body_read_timeout;
    loop {
        let frame = match tokio::time::timeout(idle, body.frame()).await {
            Err(_) => {
                return Err(Failure(
                    StatusCode::REQUEST_TIMEOUT,
                    format!("the upload stalled: no data for {} s", idle.as_secs()),
                ))
            }
            Ok(None) => break,
            Ok(Some(f)) => f.map_err(|e| bad(format!("could not read the upload: {e}")))?,
        };
        if let Ok(data) = frame.into_data() {
            received += data.len();
            if received > limit {
                return Err(too_large("(chunked)".into()));
            }
            tokio::io::AsyncWriteExt::write_all(&mut file, &data)
                .await
                .map_err(io_err)?;
        }
    }
    tokio::io::AsyncWriteExt::flush(&mut file)
        .await
        .map_err(io_err)?;
    drop(file);

    let name = name.to_string();
    let user = user.unwrap_or_else(|| DEFAULT_USER.to_string());
    let tmp = tmp.into_inner();
    let info = blocking(move || {
        let out = tmp.path().join("bundle");
        std::fs::create_dir(&out).map_err(io_err)?;
        extract(&archive, &out, limit as u64)?;
        let _ = std::fs::remove_file(&archive);
        let source = bundle_root(&out)?;
        let registered = reg::register(&reg::RegisterRequest {
            source,
            repo: canon.clone(),
            name: name.clone(),
            tags,
            description: None,
            message,
            user: Some(user),
            check_loads: true,
            record_git: false,
        })?;
        let info = models::show(&canon, &VersionRef::Number(name, registered.version))?;
        drop(tmp);
        Ok(info)
    })
    .await?;
    state.events.emit(state.events.event(
        types::MODEL_REGISTERED,
        &format!("{}:{}", info.model, info.version),
        json!({
            "model": info.model,
            "version": info.version,
            "registered_by": info.registered_by,
        }),
    ));
    // Deployments that track the newest version move to it now (loaded
    // and warmed up before the answer), not at the next registry poll.
    super::endpoints_api::reconcile(state, "model registered").await;
    Ok(reply::json(StatusCode::CREATED, &info))
}

/// Extracts the tar.gz `archive` into `out`, refusing entries that could
/// write anywhere else and archives larger than `limit` once extracted.
fn extract(archive: &Path, out: &Path, limit: u64) -> Result<(), Failure> {
    let f = std::fs::File::open(archive)
        .map_err(|e| Failure(StatusCode::INTERNAL_SERVER_ERROR, format!("upload: {e}")))?;
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(std::io::BufReader::new(f)));
    let entries = ar
        .entries()
        .map_err(|e| bad(format!("body: expected a tar.gz archive: {e}")))?;
    /// More entries than any bundle needs: an archive of empty files
    /// would otherwise fill the disk's inodes without tripping the size cap.
    const MAX_ENTRIES: usize = 100_000;
    let mut total: u64 = 0;
    for (n, entry) in entries.enumerate() {
        if n >= MAX_ENTRIES {
            return Err(bad(format!(
                "archive: expected at most {MAX_ENTRIES} entries, received more"
            )));
        }
        let mut entry = entry.map_err(|e| bad(format!("body: expected a tar.gz archive: {e}")))?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let kind = entry.header().entry_type();
        if kind == tar::EntryType::XGlobalHeader {
            continue;
        }
        let rel = safe_path(&raw)?;
        let is_dir = kind == tar::EntryType::Directory;
        if !is_dir && !kind.is_file() {
            return Err(bad(format!(
                "archive entry {raw:?}: expected a regular file or folder, received a {}",
                kind_name(kind)
            )));
        }
        let Some(rel) = rel else { continue };
        let dest = out.join(&rel);
        let io = |e: std::io::Error| {
            Failure(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot extract {raw:?}: {e}"),
            )
        };
        if is_dir {
            std::fs::create_dir_all(&dest).map_err(io)?;
            continue;
        }
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&dest)
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    bad(format!("archive entry {raw:?}: appears twice"))
                } else {
                    io(e)
                }
            })?;
        let remaining = limit - total;
        let copied = std::io::copy(&mut (&mut entry).take(remaining + 1), &mut file)
            .map_err(|e| bad(format!("archive entry {raw:?}: cannot read: {e}")))?;
        total += copied;
        if total > limit {
            return Err(Failure(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "archive entry {raw:?}: the archive's uncompressed size exceeds the limit \
                     of {limit} bytes (--max-upload-bytes)"
                ),
            ));
        }
        file.flush().map_err(io)?;
    }
    Ok(())
}

/// A relative path of plain components; `None` for the archive's root.
fn safe_path(raw: &str) -> Result<Option<PathBuf>, Failure> {
    let p = Path::new(raw);
    let mut rel = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => rel.push(n),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(bad(format!(
                    "archive entry {raw:?}: expected a path inside the bundle, received one containing '..'"
                )))
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(bad(format!(
                    "archive entry {raw:?}: expected a relative path, received an absolute one"
                )))
            }
        }
    }
    Ok((!rel.as_os_str().is_empty()).then_some(rel))
}

fn kind_name(k: tar::EntryType) -> &'static str {
    match k {
        tar::EntryType::Symlink => "symlink",
        tar::EntryType::Link => "hardlink",
        tar::EntryType::Char => "character device",
        tar::EntryType::Block => "block device",
        tar::EntryType::Fifo => "fifo",
        _ => "special entry",
    }
}

/// The bundle folder: the archive's root, or its one top-level folder.
fn bundle_root(out: &Path) -> Result<PathBuf, Failure> {
    let manifest = ferroserve_runtime::manifest::MANIFEST_FILE;
    if out.join(manifest).is_file() {
        return Ok(out.to_path_buf());
    }
    let top: Vec<PathBuf> = std::fs::read_dir(out)
        .map_err(|e| Failure(StatusCode::INTERNAL_SERVER_ERROR, format!("upload: {e}")))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    if let [only] = top.as_slice() {
        if only.is_dir() && only.join(manifest).is_file() {
            return Ok(only.clone());
        }
    }
    Err(bad(format!(
        "archive: expected {manifest} at its root or in its one top-level folder, received neither"
    )))
}

/// `a=1&b=x%20y` as pairs, percent- and `+`-decoded.
fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(b[i + 1]), hex(b[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The upload's temporary folder. Dropped on an async worker (a request that
/// fails while its body is read), it is removed on the blocking pool, so
/// deleting a partial archive never stalls other connections.
struct UploadDir(Option<tempfile::TempDir>);

impl UploadDir {
    fn path(&self) -> &std::path::Path {
        self.0.as_ref().expect("present until dropped").path()
    }

    /// For code already on the blocking pool, which removes it itself.
    fn into_inner(mut self) -> tempfile::TempDir {
        self.0.take().expect("present until dropped")
    }
}

impl Drop for UploadDir {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => drop(rt.spawn_blocking(move || drop(dir))),
                Err(_) => drop(dir),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_decode() {
        assert_eq!(
            parse_query("tag=k%3Dv&message=a+b&x"),
            vec![
                ("tag".into(), "k=v".into()),
                ("message".into(), "a b".into()),
                ("x".into(), "".into())
            ]
        );
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%zz"), "%zz");
    }

    #[test]
    fn unsafe_paths_are_refused() {
        assert!(safe_path("../evil").is_err());
        assert!(safe_path("/abs/evil").is_err());
        assert!(safe_path("a/../../b").is_err());
        assert_eq!(safe_path("./").ok().unwrap(), None);
        assert_eq!(safe_path("./b/c").ok().unwrap(), Some(PathBuf::from("b/c")));
    }
}
