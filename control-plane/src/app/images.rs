//! Images: the base images instances boot from, their registration from files on the control
//! plane host, and the content-addressed blob store those files are copied into.
//!
//! Registration reads files the control plane's own user can read, so it is for operators
//! only: a project admin (any user can create a project) could otherwise copy the control
//! plane's secrets (its admin token, the fleet CA key) into a disk image and boot it. Project
//! admins will upload images by streaming instead (`PUT …/images/{image}/{part}`, to come).
//!
//! ## Registration
//! ```text
//!  check the body (names, paths absolute, mode-specific fields) ──▶ 422 naming the field
//!  name already taken by the owner ──────────────────────────────▶ 409 (before any copying)
//!  for kernel, initrd, disk (blocking thread):
//!     open, must be a regular file ≤ 20 GiB ─────────────────────▶ 422 naming the field
//!     copy into <blob_dir>/.tmpXXXX while hashing (SHA-256)
//!     <blob_dir>/<sha256> exists? drop the copy : fsync, rename, fsync the directory
//!  insert the image as `available` (a concurrent twin is a 409)
//! ```
//! Blobs are content-addressed, so registering the same file twice stores it once, and a
//! crash leaves at most a temporary file (never served: agents fetch blobs by hash). Blobs
//! outlive the images that use them; collecting unused blobs is future work.
//!
//! ## From a snapshot
//! `image create NAME --from-snapshot S` makes an image of a snapshot's root disk, booting like
//! the image the snapshotted instance had (same kernel, initrd and command line, or firmware):
//! the disk's chunks come from the store (checked), are laid over the source image's disk in a
//! scratch overlay, and the whole is flattened into one qcow2 blob. Members may do it: the
//! content is the project's own.

use std::io::{Read, Write};
use std::path::{Path as FsPath, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use super::{App, AppError, Window, projects, validate};
use crate::auth::{Caller, Role};
use crate::db::images::{self as db, ImageRow, ImageStoreError, NewImage};
use crate::error_chain::ErrorChain;
use crate::ids::{ImageId, ProjectId};
pub use crate::states::{BootMode, Firmware, ImageState};

/// The largest file an image may consist of: 20 GiB.
pub const MAX_IMAGE_FILE_BYTES: u64 = 20 << 30;
/// The longest kernel command line, in bytes.
pub const MAX_KERNEL_CMDLINE_BYTES: usize = 4096;
/// Read and write size when importing files.
const COPY_CHUNK: usize = 1 << 20;

/// `POST /v1/projects/{project}/images`: files on the control plane host. Its schema is
/// written out (`register_schema`): which fields a boot mode requires and refuses is a
/// `oneOf` the derive cannot state.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageRegisterParams {
    /// A DNS label, unique among the project's images (or the public ones).
    pub name: String,
    pub boot_mode: BootMode,
    /// Absolute path of the kernel: required for `direct_kernel`, refused for `firmware`.
    #[serde(default)]
    pub kernel_path: Option<PathBuf>,
    /// Absolute path of the initramfs: optional for `direct_kernel`, refused for `firmware`.
    #[serde(default)]
    pub initrd_path: Option<PathBuf>,
    /// Absolute path of the disk image (raw or qcow2): required for `firmware`.
    #[serde(default)]
    pub disk_path: Option<PathBuf>,
    /// Kernel command line for `direct_kernel`: printable ASCII, at most 4096 bytes.
    #[serde(default)]
    pub kernel_cmdline: String,
    /// The firmware of a `firmware` image (default `uefi`); refused for `direct_kernel`.
    #[serde(default)]
    pub firmware: Option<Firmware>,
    /// A public image belongs to no project and every project sees it.
    #[serde(default)]
    pub public: bool,
}

impl utoipa::ToSchema for ImageRegisterParams {}

impl utoipa::PartialSchema for ImageRegisterParams {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        register_schema()
    }
}

/// The schema of [`ImageRegisterParams`], with what [`check_register_params`] requires of
/// each boot mode.
fn register_schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    use utoipa::openapi::Ref;
    use utoipa::openapi::schema::{AdditionalProperties, AllOfBuilder, ObjectBuilder, OneOfBuilder, SchemaType, Type};
    let string = || ObjectBuilder::new().schema_type(Type::String);
    let null = || ObjectBuilder::new().schema_type(Type::Null);
    let path = |what: &str| {
        ObjectBuilder::new()
            .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
            .pattern(Some("^/"))
            .description(Some(format!("Absolute path of {what} on the control plane's host")))
    };
    let all = ObjectBuilder::new()
        .property("name", validate::schema::dns_label())
        .required("name")
        .property("boot_mode", Ref::from_schema_name("BootMode"))
        .required("boot_mode")
        .property("kernel_path", path("the kernel: required for `direct_kernel`"))
        .property("initrd_path", path("the initramfs: optional for `direct_kernel`"))
        .property("disk_path", path("the disk image (raw or qcow2): required for `firmware`"))
        .property(
            "kernel_cmdline",
            string()
                .pattern(Some("^[ -~]*$"))
                .max_length(Some(MAX_KERNEL_CMDLINE_BYTES))
                .description(Some("Kernel command line for `direct_kernel`: printable ASCII")),
        )
        .property(
            "firmware",
            OneOfBuilder::new()
                .item(null())
                .item(Ref::from_schema_name("Firmware"))
                .description(Some("The firmware of a `firmware` image (default `uefi`)")),
        )
        .property(
            "public",
            ObjectBuilder::new()
                .schema_type(Type::Boolean)
                .description(Some("A public image belongs to no project and every project sees it")),
        )
        .additional_properties(Some(AdditionalProperties::FreeForm(false)));
    let direct_kernel = ObjectBuilder::new()
        .property("boot_mode", string().enum_values(Some([BootMode::DirectKernel.as_str()])))
        .property("kernel_path", string())
        .required("kernel_path")
        .property("firmware", null());
    let firmware = ObjectBuilder::new()
        .property("boot_mode", string().enum_values(Some([BootMode::Firmware.as_str()])))
        .property("disk_path", string())
        .required("disk_path")
        .property("kernel_path", null())
        .property("initrd_path", null())
        .property("kernel_cmdline", string().max_length(Some(0)));
    AllOfBuilder::new().item(all).item(OneOfBuilder::new().item(direct_kernel).item(firmware)).into()
}

/// An image, as a project sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ImageView {
    pub id: ImageId,
    /// The owning project; `null` for a public image.
    pub project_id: Option<ProjectId>,
    pub name: String,
    pub public: bool,
    pub state: ImageState,
    pub boot_mode: BootMode,
    pub kernel_sha256: Option<String>,
    pub initrd_sha256: Option<String>,
    pub disk_sha256: Option<String>,
    pub disk_size_bytes: Option<i64>,
    /// The size of the disk it describes: an instance's disk is at least this (its default).
    pub disk_virtual_bytes: Option<i64>,
    pub kernel_cmdline: String,
    /// uefi | bios: the firmware that boots a `firmware` image; null for `direct_kernel`.
    pub firmware: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl From<ImageRow> for ImageView {
    fn from(row: ImageRow) -> Self {
        Self {
            id: row.id,
            public: row.project_id.is_none(),
            project_id: row.project_id,
            name: row.name,
            state: row.state,
            boot_mode: row.boot_mode,
            kernel_sha256: row.kernel_sha256,
            initrd_sha256: row.initrd_sha256,
            disk_sha256: row.disk_sha256,
            disk_size_bytes: row.disk_size_bytes,
            disk_virtual_bytes: row.disk_virtual_bytes,
            kernel_cmdline: row.kernel_cmdline,
            firmware: row.firmware,
            created_at: row.created_at,
        }
    }
}

/// Not found, in the words of a project that sees its own and the public images.
fn not_found(image: &str) -> AppError {
    AppError::NotFound(format!("no image {image:?} in this project or among the public images"))
}

/// A taken name or an image in use is a conflict; anything else is internal.
impl From<ImageStoreError> for AppError {
    fn from(err: ImageStoreError) -> Self {
        match &err {
            ImageStoreError::NameTaken { .. } => Self::Conflict(err.to_string()),
            ImageStoreError::InUse { name, instances } if instances.is_empty() => {
                Self::Conflict(format!("image {name:?} is used by an instance"))
            }
            ImageStoreError::InUse { name, instances } => Self::Conflict(format!(
                "image {name:?} is used by instance(s) {}; delete them first",
                instances.join(", ")
            )),
            ImageStoreError::Query(_) => Self::internal(err),
        }
    }
}

/// The images the project can boot from in `window`: its own and the public
/// ones.
pub async fn list(app: &App, caller: &Caller, project: &str, window: Window) -> Result<Vec<ImageView>, AppError> {
    let project = projects::resolve(app, caller, project, Role::Viewer).await?;
    let mut conn = app.pool.acquire().await?;
    Ok(db::image_list_visible(&mut conn, project, window.after, window.fetch)
        .await?
        .into_iter()
        .map(ImageView::from)
        .collect())
}

/// Registers an image from files on the control plane host, copied into the blob store
/// (operators who are members of the project; `public` images belong to no project).
pub async fn register(
    app: &App,
    caller: &Caller,
    project: &str,
    params: ImageRegisterParams,
) -> Result<ImageView, AppError> {
    let project = projects::resolve(app, caller, project, Role::Member).await?;
    if !caller.is_operator {
        return Err(AppError::Forbidden(
            "registering an image from files on the control plane host is for operators; upload it instead".to_owned(),
        ));
    }
    let files = check_register_params(&params)?;
    let owner = (!params.public).then_some(project);
    let mut conn = app.pool.acquire().await?;
    if db::image_name_taken(&mut conn, owner, &params.name).await? {
        return Err(ImageStoreError::NameTaken { name: params.name, owner: db::owner_text(owner) }.into());
    }
    drop(conn);
    let blob_dir = app.blob_dir.clone();
    let blobs: Vec<(Part, Blob)> = tokio::task::spawn_blocking(move || {
        let import = |(part, path): (Part, PathBuf)| import_blob(&blob_dir, part, &path).map(|b| (part, b));
        files.into_iter().map(import).collect::<Result<_, ImportError>>()
    })
    .await
    .map_err(AppError::internal)??;
    for (_, b) in &blobs {
        store_blob(app, &b.sha256).await;
    }
    let blob = |part| blobs.iter().find(|(p, _)| *p == part).map(|(_, b)| b);
    let disk_size_bytes = match blob(Part::Disk) {
        Some(b) => Some(i64::try_from(b.size).map_err(AppError::internal)?),
        None => None,
    };
    let disk_virtual_bytes = match blob(Part::Disk) {
        Some(b) => Some(disk_virtual_bytes(app, &b.sha256).await?),
        None => None,
    };
    let new = NewImage {
        id: ImageId::new(),
        project_id: owner,
        name: &params.name,
        state: ImageState::Available,
        boot_mode: params.boot_mode,
        disk_sha256: blob(Part::Disk).map(|b| b.sha256.as_str()),
        disk_size_bytes,
        disk_virtual_bytes,
        kernel_sha256: blob(Part::Kernel).map(|b| b.sha256.as_str()),
        initrd_sha256: blob(Part::Initrd).map(|b| b.sha256.as_str()),
        kernel_cmdline: &params.kernel_cmdline,
        firmware: match params.boot_mode {
            BootMode::Firmware => Some(params.firmware.unwrap_or_default().as_str()),
            BootMode::DirectKernel => None,
        },
    };
    let mut conn = app.pool.acquire().await?;
    let row = db::image_create(&mut conn, &new).await?;
    tracing::info!(image_id = %row.id, name = %row.name, project_id = ?owner, "image registered");
    Ok(row.into())
}

/// `POST /v1/projects/{project}/snapshots/{snapshot}/image`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageFromSnapshotParams {
    /// A DNS label, unique among the project's images.
    #[schema(schema_with = crate::app::validate::schema::dns_label)]
    pub name: String,
}

/// Makes a project image of snapshot `snapshot`'s root disk (see the module docs).
pub async fn from_snapshot(
    app: &App,
    caller: &Caller,
    project: &str,
    snapshot: &str,
    params: ImageFromSnapshotParams,
) -> Result<ImageView, AppError> {
    let project = projects::resolve(app, caller, project, Role::Member).await?;
    validate::require_dns_label("name", &params.name)?;
    let mut conn = app.pool.acquire().await?;
    let snap = crate::db::snapshots::snapshot_get(&mut conn, project, snapshot)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("no snapshot {snapshot:?} in this project")))?;
    if snap.state != crate::states::SnapshotState::Available {
        return Err(AppError::Conflict(format!(
            "snapshot {} is {}; only an available one can become an image",
            snap.name, snap.state
        )));
    }
    let source = crate::db::snapshots::snapshot_source(&mut conn, snap.id).await?.and_then(|s| s.image_id);
    let source = match source {
        Some(id) => db::image_get_unchecked(&mut conn, id).await?,
        None => None,
    };
    let source = source.ok_or_else(|| {
        AppError::Unprocessable(format!("snapshot {}: the image it was taken from was deleted", snap.name))
    })?;
    if db::image_name_taken(&mut conn, Some(project), &params.name).await? {
        return Err(ImageStoreError::NameTaken { name: params.name, owner: db::owner_text(Some(project)) }.into());
    }
    drop(conn);
    let blob = snapshot_disk_blob(app, snap.id, source.disk_sha256.as_deref()).await?;
    let new = NewImage {
        id: ImageId::new(),
        project_id: Some(project),
        name: &params.name,
        state: ImageState::Available,
        boot_mode: source.boot_mode,
        disk_sha256: Some(&blob.sha256),
        disk_size_bytes: Some(i64::try_from(blob.size).map_err(AppError::internal)?),
        disk_virtual_bytes: Some(disk_virtual_bytes(app, &blob.sha256).await?),
        kernel_sha256: source.kernel_sha256.as_deref(),
        initrd_sha256: source.initrd_sha256.as_deref(),
        kernel_cmdline: &source.kernel_cmdline,
        firmware: source.firmware.as_deref(),
    };
    let row = db::image_create(&mut *app.pool.acquire().await?, &new).await?;
    tracing::info!(image_id = %row.id, name = %row.name, snapshot = %snap.id, "image made from a snapshot");
    Ok(row.into())
}

/// The root disk of snapshot `id`, flattened over its base blob `base`, in the blob store.
async fn snapshot_disk_blob(app: &App, id: crate::ids::SnapshotId, base: Option<&str>) -> Result<Blob, AppError> {
    let name = cloud_store::snapshot_name(id);
    let manifest = app.store.manifest(&name).await.map_err(AppError::internal)?;
    let disk = manifest
        .files
        .get("disk-0.qcow2")
        .ok_or_else(|| AppError::Unprocessable(format!("snapshot {id} has no disk to make an image of")))?;
    if disk.base.as_deref() != base {
        let reason = format!("snapshot {id}'s disk lies over another base than its image's");
        return Err(AppError::internal(std::io::Error::other(reason)));
    }
    let (extents, _) = app.store.fetch(disk).await.map_err(|e| match e {
        cloud_store::StoreError::Corrupt { .. } => AppError::Unprocessable(ErrorChain(&e).to_string()),
        e => AppError::internal(e),
    })?;
    std::fs::create_dir_all(&app.blob_dir).map_err(AppError::internal)?;
    let scratch =
        tempfile::Builder::new().prefix(".from-snapshot-").tempdir_in(&app.blob_dir).map_err(AppError::internal)?;
    let opts = vmm::LaunchOptions::default();
    let backing = match base {
        Some(sha) => {
            let path = app.blob_dir.join(sha);
            let format = vmm::layers::image_format(&path).map_err(AppError::internal)?;
            Some((path, format))
        }
        None => None,
    };
    let writes: Vec<_> = extents
        .into_iter()
        .map(|e| vmm::layers::LayerWrite { offset: e.offset, len: u64::from(e.len), data: e.chunk })
        .collect();
    let (overlay, flat) = (scratch.path().join("overlay.qcow2"), scratch.path().join("disk.qcow2"));
    let backing_ref = backing.as_ref().map(|(p, f)| (p.as_path(), *f));
    vmm::layers::write_overlay(&opts, &overlay, backing_ref, disk.size, app.store.cache_dir(), &writes)
        .await
        .map_err(AppError::internal)?;
    vmm::layers::flatten(&opts, &overlay, &flat).await.map_err(AppError::internal)?;
    let blob_dir = app.blob_dir.clone();
    let blob = tokio::task::spawn_blocking(move || import_blob(&blob_dir, Part::Disk, &flat))
        .await
        .map_err(AppError::internal)??;
    drop(scratch);
    store_blob(app, &blob.sha256).await;
    Ok(blob)
}

/// The size of the disk that blob `sha256` describes (`qemu-img info`; a file it cannot read as
/// an image is refused).
async fn disk_virtual_bytes(app: &App, sha256: &str) -> Result<i64, AppError> {
    let path = app.blob_dir.join(sha256);
    match vmm::layers::virtual_size(&vmm::LaunchOptions::default(), &path).await {
        Ok(size) => i64::try_from(size).map_err(AppError::internal),
        Err(e @ vmm::snapshot::SnapshotError::QemuImg { .. }) => {
            Err(AppError::Unprocessable(format!("disk_path: not a disk image qemu-img can read: {}", ErrorChain(&e))))
        }
        Err(e) => Err(AppError::internal(e)),
    }
}

/// Puts the blob `sha256` into the shared store, where hosts fetch it in chunks (only those
/// they lack). A failure is logged, not fatal: hosts then stream it from the control plane.
async fn store_blob(app: &App, sha256: &str) {
    let path = app.blob_dir.join(sha256);
    let source = match cloud_store::Source::plain(cloud_store::IMAGE_FILE, &path) {
        Ok(source) => source,
        Err(e) => return tracing::warn!(%sha256, error = %e, "cannot read a blob to store it"),
    };
    match app.store.put(&cloud_store::image_name(sha256), vec![source]).await {
        Ok((_, stats)) => {
            tracing::info!(%sha256, bytes_uploaded = stats.bytes_uploaded, "blob stored in the snapshot store")
        }
        Err(e) => {
            tracing::warn!(%sha256, error = %ErrorChain(&e), "cannot put a blob into the store: hosts will stream it from the control plane")
        }
    }
}

/// One image the project sees, by name or id (its own first, then a public one).
pub async fn get(app: &App, caller: &Caller, project: &str, image: &str) -> Result<ImageView, AppError> {
    let project = projects::resolve(app, caller, project, Role::Viewer).await?;
    let mut conn = app.pool.acquire().await?;
    Ok(db::image_by_name_or_id(&mut conn, project, image).await?.ok_or_else(|| not_found(image))?.into())
}

/// Deletes an image: the project's own (members) or a public one (operators). Not found when
/// there is none (a retry after a success too); a conflict while an instance uses it. Its blobs
/// stay in the store.
pub async fn delete(app: &App, caller: &Caller, project: &str, image: &str) -> Result<(), AppError> {
    let project = projects::resolve(app, caller, project, Role::Member).await?;
    let mut conn = app.pool.acquire().await?;
    let row = db::image_by_name_or_id(&mut conn, project, image).await?.ok_or_else(|| not_found(image))?;
    if row.project_id.is_none() && !caller.is_operator {
        return Err(AppError::Forbidden("public images are deleted by operators".to_owned()));
    }
    drop(conn);
    let mut tx = app.pool.begin().await?;
    if !db::image_delete_unchecked(&mut tx, row.id).await? {
        return Err(not_found(image));
    }
    tx.commit().await?;
    tracing::info!(image_id = %row.id, name = %row.name, "image deleted");
    Ok(())
}

/// A file of an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Kernel,
    Initrd,
    Disk,
}

impl Part {
    /// The request field naming this part's file.
    fn field(self) -> &'static str {
        match self {
            Self::Kernel => "kernel_path",
            Self::Initrd => "initrd_path",
            Self::Disk => "disk_path",
        }
    }
}

/// Checks the fields of a registration (422 naming the field) and returns the files to import.
fn check_register_params(params: &ImageRegisterParams) -> Result<Vec<(Part, PathBuf)>, AppError> {
    validate::require_dns_label("name", &params.name)?;
    let refuse = |field: &str, why: &str| Err(AppError::Unprocessable(format!("{field}: {why}")));
    match params.boot_mode {
        BootMode::DirectKernel if params.kernel_path.is_none() => {
            return refuse("kernel_path", "required when boot_mode is direct_kernel");
        }
        BootMode::Firmware if params.disk_path.is_none() => {
            return refuse("disk_path", "required when boot_mode is firmware");
        }
        BootMode::Firmware if params.kernel_path.is_some() || params.initrd_path.is_some() => {
            let field = if params.kernel_path.is_some() { "kernel_path" } else { "initrd_path" };
            return refuse(field, "not used when boot_mode is firmware; leave it out");
        }
        BootMode::Firmware if !params.kernel_cmdline.is_empty() => {
            return refuse("kernel_cmdline", "not used when boot_mode is firmware; leave it out");
        }
        BootMode::DirectKernel if params.firmware.is_some() => {
            return refuse("firmware", "not used when boot_mode is direct_kernel; leave it out");
        }
        _ => {}
    }
    if params.kernel_cmdline.len() > MAX_KERNEL_CMDLINE_BYTES {
        return refuse("kernel_cmdline", "longer than 4096 bytes");
    }
    if !params.kernel_cmdline.bytes().all(|b| (b' '..=b'~').contains(&b)) {
        return refuse("kernel_cmdline", "must be printable ASCII (no control characters)");
    }
    let files =
        [(Part::Kernel, &params.kernel_path), (Part::Initrd, &params.initrd_path), (Part::Disk, &params.disk_path)];
    let mut out = Vec::new();
    for (part, path) in files {
        let Some(path) = path else { continue };
        if !path.is_absolute() {
            return refuse(part.field(), &format!("{} is not an absolute path", path.display()));
        }
        out.push((part, path.clone()));
    }
    Ok(out)
}

/// A file in the blob store.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Blob {
    /// Lowercase hex; also the file's name in the store.
    sha256: String,
    size: u64,
}

/// Why a file could not be imported into the blob store.
#[derive(Debug, thiserror::Error)]
enum ImportError {
    #[error("{field}: cannot open {path}")]
    Open {
        field: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{field}: {path} is not a regular file")]
    NotRegularFile { field: &'static str, path: PathBuf },
    #[error("{field}: {path} is larger than {MAX_IMAGE_FILE_BYTES} bytes")]
    TooLarge { field: &'static str, path: PathBuf },
    #[error("{field}: cannot read {path}")]
    Read {
        field: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the blob store at {path}")]
    Store {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// No file at the path is 404; the caller's other mistakes are unprocessable, with the reason;
/// the store's failures internal.
impl From<ImportError> for AppError {
    fn from(err: ImportError) -> Self {
        match &err {
            ImportError::Store { .. } => Self::internal(err),
            ImportError::NotRegularFile { .. } => Self::NotFound(err.to_string()),
            ImportError::Open { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                Self::NotFound(ErrorChain(&err).to_string())
            }
            _ => Self::Unprocessable(ErrorChain(&err).to_string()),
        }
    }
}

/// Copies `path` into `<blob_dir>/<sha256>` (see the module docs). Blocking.
fn import_blob(blob_dir: &FsPath, part: Part, path: &FsPath) -> Result<Blob, ImportError> {
    let field = part.field();
    let open_error = |source| ImportError::Open { field, path: path.to_owned(), source };
    // Checked before opening: opening a FIFO would block.
    let meta = std::fs::metadata(path).map_err(open_error)?;
    if !meta.is_file() {
        return Err(ImportError::NotRegularFile { field, path: path.to_owned() });
    }
    if meta.len() > MAX_IMAGE_FILE_BYTES {
        return Err(ImportError::TooLarge { field, path: path.to_owned() });
    }
    let mut file = std::fs::File::open(path).map_err(open_error)?;
    let read_error = |source| ImportError::Read { field, path: path.to_owned(), source };
    let store_error = |source| ImportError::Store { path: blob_dir.to_owned(), source };
    std::fs::create_dir_all(blob_dir).map_err(store_error)?;
    let mut temp = tempfile::Builder::new().prefix(".import-").tempfile_in(blob_dir).map_err(store_error)?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; COPY_CHUNK];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_error(e)),
        };
        size += n as u64;
        // The file may grow while it is copied.
        if size > MAX_IMAGE_FILE_BYTES {
            return Err(ImportError::TooLarge { field, path: path.to_owned() });
        }
        hasher.update(&buf[..n]);
        temp.write_all(&buf[..n]).map_err(store_error)?;
    }
    let sha256 = hex::encode(hasher.finalize());
    let target = blob_dir.join(&sha256);
    if target.exists() {
        // Already stored (content-addressed): the copy is dropped, which deletes it.
        return Ok(Blob { sha256, size });
    }
    temp.as_file().sync_all().map_err(store_error)?;
    temp.persist(&target).map_err(|e| store_error(e.error))?;
    std::fs::File::open(blob_dir).and_then(|dir| dir.sync_all()).map_err(store_error)?;
    tracing::info!(%sha256, size, source = %path.display(), "blob stored");
    Ok(Blob { sha256, size })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn import_stores_by_sha256_once_and_names_the_field_on_errors() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("blobs");
        let file = dir.path().join("disk.img");
        std::fs::write(&file, b"hello").unwrap();
        let sha = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
        for _ in 0..2 {
            let blob = import_blob(&store, Part::Disk, &file).unwrap();
            assert_eq!(blob, Blob { sha256: sha.to_owned(), size: 5 });
        }
        let names: Vec<_> = std::fs::read_dir(&store).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, [sha]);
        assert_eq!(std::fs::read(store.join(sha)).unwrap(), b"hello");

        let missing = import_blob(&store, Part::Kernel, &dir.path().join("nope")).unwrap_err();
        assert!(matches!(missing, ImportError::Open { field: "kernel_path", .. }));
        assert!(matches!(AppError::from(missing), AppError::NotFound(m) if m.starts_with("kernel_path: ")));
        let not_file = import_blob(&store, Part::Initrd, dir.path()).unwrap_err();
        assert!(matches!(not_file, ImportError::NotRegularFile { field: "initrd_path", .. }));
        assert!(matches!(AppError::from(not_file), AppError::NotFound(m) if m.starts_with("initrd_path: ")));
        let too_large = ImportError::TooLarge { field: "disk_path", path: file };
        assert!(matches!(AppError::from(too_large), AppError::Unprocessable(m) if m.starts_with("disk_path: ")));
    }
}
