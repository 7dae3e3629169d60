//! The FUSE pass-through: each request is mirrored onto the source directory by path, through
//! the [`Switch`]. Node ids are the source's inode numbers (the root's swapped with 1, which
//! FUSE reserves for the root), so a renamed file keeps its id; each id maps to the last path it
//! was seen at. Nothing is cached in the kernel (zero TTLs, no keep_cache), so every access
//! reaches the switch: a stall of `all` stalls a `stat` too.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{
    DirBuilderExt, DirEntryExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt,
};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use nix::libc;

use super::mode::Class;
use super::switch::Switch;

/// Nothing is cached: the gate must see every access to be able to stall it.
const TTL: Duration = Duration::ZERO;

struct Node {
    /// Relative to the source; empty for the root.
    path: PathBuf,
    lookups: u64,
}

/// A directory listing taken at opendir: (node id, type, name).
type Listing = Arc<Vec<(u64, FileType, OsString)>>;

struct Core {
    source: PathBuf,
    root_ino: u64,
    nodes: Mutex<HashMap<u64, Node>>,
    files: Mutex<HashMap<u64, Arc<File>>>,
    dirs: Mutex<HashMap<u64, Listing>>,
    next_fh: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn errno(e: &io::Error) -> Errno {
    Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO))
}

fn time(secs: i64, nsecs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs as u64, nsecs as u32)
    } else {
        UNIX_EPOCH
    }
}

fn kind_of(mode: u32) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFSOCK => FileType::Socket,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        _ => FileType::RegularFile,
    }
}

impl Core {
    /// The FUSE id of a source inode: 1 is the root's, so the root and inode 1 swap.
    fn ino_of(&self, st_ino: u64) -> u64 {
        if st_ino == self.root_ino {
            1
        } else if st_ino == 1 {
            self.root_ino
        } else {
            st_ino
        }
    }

    fn attr(&self, md: &std::fs::Metadata) -> FileAttr {
        FileAttr {
            ino: INodeNo(self.ino_of(md.ino())),
            size: md.size(),
            blocks: md.blocks(),
            atime: time(md.atime(), md.atime_nsec()),
            mtime: time(md.mtime(), md.mtime_nsec()),
            ctime: time(md.ctime(), md.ctime_nsec()),
            crtime: time(md.ctime(), md.ctime_nsec()),
            kind: kind_of(md.mode()),
            perm: (md.mode() & 0o7777) as u16,
            nlink: md.nlink() as u32,
            uid: md.uid(),
            gid: md.gid(),
            rdev: md.rdev() as u32,
            blksize: md.blksize() as u32,
            flags: 0,
        }
    }

    fn rel(&self, ino: INodeNo) -> Result<PathBuf, Errno> {
        lock(&self.nodes)
            .get(&ino.0)
            .map(|n| n.path.clone())
            .ok_or(Errno::ESTALE)
    }

    fn full(&self, rel: &Path) -> PathBuf {
        if rel.as_os_str().is_empty() {
            self.source.clone()
        } else {
            self.source.join(rel)
        }
    }

    fn child(&self, parent: INodeNo, name: &OsStr) -> Result<PathBuf, Errno> {
        Ok(self.rel(parent)?.join(name))
    }

    /// Counts a lookup of `rel`, whose metadata is `md`, and answers its attributes: every
    /// reply that gives the kernel an entry is one lookup it will `forget`.
    fn remember(&self, rel: PathBuf, md: &std::fs::Metadata) -> FileAttr {
        let attr = self.attr(md);
        let mut nodes = lock(&self.nodes);
        let node = nodes.entry(attr.ino.0).or_insert(Node {
            path: rel.clone(),
            lookups: 0,
        });
        node.path = rel;
        node.lookups += 1;
        attr
    }

    fn entry(&self, rel: PathBuf, reply: ReplyEntry) {
        match std::fs::symlink_metadata(self.full(&rel)) {
            Ok(md) => reply.entry(&TTL, &self.remember(rel, &md), Generation(0)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    /// A file made by the caller is the caller's: the daemon runs as root.
    fn chown_to(&self, path: &Path, req: (u32, u32)) -> io::Result<()> {
        std::os::unix::fs::lchown(path, Some(req.0), Some(req.1))
    }

    fn file(&self, fh: FileHandle) -> Result<Arc<File>, Errno> {
        lock(&self.files).get(&fh.0).cloned().ok_or(Errno::EBADF)
    }

    fn add_file(&self, file: File) -> FileHandle {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.files).insert(fh, Arc::new(file));
        FileHandle(fh)
    }

    /// After a rename, the node and (for a directory) everything under it live at the new path.
    fn moved(&self, from: &Path, to: &Path) {
        let mut nodes = lock(&self.nodes);
        for node in nodes.values_mut() {
            if let Ok(rest) = node.path.strip_prefix(from) {
                node.path = if rest.as_os_str().is_empty() {
                    to.to_path_buf()
                } else {
                    to.join(rest)
                };
            }
        }
    }
}

fn open_options(flags: i32) -> OpenOptions {
    let mut options = OpenOptions::new();
    match flags & libc::O_ACCMODE {
        libc::O_WRONLY => options.write(true),
        libc::O_RDWR => options.read(true).write(true),
        _ => options.read(true),
    };
    if flags & libc::O_APPEND != 0 {
        options.append(true);
    }
    if flags & libc::O_TRUNC != 0 {
        options.truncate(true);
    }
    options.custom_flags(
        flags
            & !(libc::O_ACCMODE
                | libc::O_CREAT
                | libc::O_EXCL
                | libc::O_TRUNC
                | libc::O_APPEND
                | libc::O_NOCTTY),
    );
    options
}

/// The FUSE file system of one gate.
pub(crate) struct GateFs {
    core: Arc<Core>,
    switch: Arc<Switch>,
}

impl GateFs {
    pub(crate) fn new(source: PathBuf, switch: Arc<Switch>) -> io::Result<GateFs> {
        let root_ino = std::fs::metadata(&source)?.ino();
        let mut nodes = HashMap::new();
        nodes.insert(
            1,
            Node {
                path: PathBuf::new(),
                lookups: u64::MAX / 2,
            },
        );
        Ok(GateFs {
            core: Arc::new(Core {
                source,
                root_ino,
                nodes: Mutex::new(nodes),
                files: Mutex::new(HashMap::new()),
                dirs: Mutex::new(HashMap::new()),
                next_fh: AtomicU64::new(1),
            }),
            switch,
        })
    }

    fn admit(
        &self,
        class: Class,
        req: &Request,
        what: impl FnOnce() -> String,
        job: impl FnOnce(&Core, Option<i32>) + Send + 'static,
    ) {
        let core = self.core.clone();
        self.switch
            .admit(class, req.pid(), what, move |fail| job(&core, fail));
    }
}

/// Answers the injected error, if any; true when the request is done.
macro_rules! failed {
    ($fail:expr, $reply:expr) => {
        if let Some(e) = $fail {
            $reply.error(Errno::from_i32(e));
            return;
        }
    };
}

/// The request's path or its error.
macro_rules! path {
    ($e:expr, $reply:expr) => {
        match $e {
            Ok(p) => p,
            Err(e) => {
                $reply.error(e);
                return;
            }
        }
    };
}

impl Filesystem for GateFs {
    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let name = name.to_os_string();
        let shown = name.clone();
        self.admit(
            Class::Read,
            req,
            || format!("lookup {}", shown.to_string_lossy()),
            move |core, fail| {
                failed!(fail, reply);
                let rel = path!(core.child(parent, &name), reply);
                core.entry(rel, reply);
            },
        );
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        let mut nodes = lock(&self.core.nodes);
        if let Some(node) = nodes.get_mut(&ino.0) {
            node.lookups = node.lookups.saturating_sub(nlookup);
            if node.lookups == 0 && ino.0 != 1 {
                nodes.remove(&ino.0);
            }
        }
    }

    fn getattr(&self, req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        self.admit(
            Class::Read,
            req,
            || "getattr".into(),
            move |core, fail| {
                failed!(fail, reply);
                // Through the open file when there is one: it may be unlinked already.
                let md = match fh.map(|fh| core.file(fh)) {
                    Some(Ok(file)) => file.metadata(),
                    _ => match core.rel(ino) {
                        Ok(rel) => std::fs::symlink_metadata(core.full(&rel)),
                        Err(e) => return reply.error(e),
                    },
                };
                match md {
                    Ok(md) => reply.attr(&TTL, &core.attr(&md)),
                    Err(e) => reply.error(errno(&e)),
                }
            },
        );
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        self.admit(
            Class::Write,
            req,
            || "setattr".into(),
            move |core, fail| {
                failed!(fail, reply);
                let path = core.full(&path!(core.rel(ino), reply));
                let result = (|| -> io::Result<std::fs::Metadata> {
                    if let Some(mode) = mode {
                        std::fs::set_permissions(
                            &path,
                            std::fs::Permissions::from_mode(mode & 0o7777),
                        )?;
                    }
                    if uid.is_some() || gid.is_some() {
                        std::os::unix::fs::lchown(&path, uid, gid)?;
                    }
                    if let Some(size) = size {
                        match fh.and_then(|fh| core.file(fh).ok()) {
                            Some(file) => file.set_len(size)?,
                            None => OpenOptions::new().write(true).open(&path)?.set_len(size)?,
                        }
                    }
                    if atime.is_some() || mtime.is_some() {
                        let spec = |t: Option<TimeOrNow>| match t {
                            None => nix::sys::time::TimeSpec::UTIME_OMIT,
                            Some(TimeOrNow::Now) => nix::sys::time::TimeSpec::UTIME_NOW,
                            Some(TimeOrNow::SpecificTime(t)) => {
                                let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
                                nix::sys::time::TimeSpec::from_duration(d)
                            }
                        };
                        nix::sys::stat::utimensat(
                            nix::fcntl::AT_FDCWD,
                            &path,
                            &spec(atime),
                            &spec(mtime),
                            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
                        )
                        .map_err(io::Error::from)?;
                    }
                    std::fs::symlink_metadata(&path)
                })();
                match result {
                    Ok(md) => reply.attr(&TTL, &core.attr(&md)),
                    Err(e) => reply.error(errno(&e)),
                }
            },
        );
    }

    fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData) {
        self.admit(
            Class::Read,
            req,
            || "readlink".into(),
            move |core, fail| {
                failed!(fail, reply);
                let path = core.full(&path!(core.rel(ino), reply));
                match std::fs::read_link(path) {
                    Ok(target) => {
                        use std::os::unix::ffi::OsStrExt;
                        reply.data(target.as_os_str().as_bytes())
                    }
                    Err(e) => reply.error(errno(&e)),
                }
            },
        );
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let name = name.to_os_string();
        let shown = name.clone();
        let owner = (req.uid(), req.gid());
        self.admit(
            Class::Write,
            req,
            || format!("mkdir {}", shown.to_string_lossy()),
            move |core, fail| {
                failed!(fail, reply);
                let rel = path!(core.child(parent, &name), reply);
                let path = core.full(&rel);
                let made = std::fs::DirBuilder::new()
                    .mode(mode & !umask & 0o7777)
                    .create(&path)
                    .and_then(|()| core.chown_to(&path, owner));
                match made {
                    Ok(()) => core.entry(rel, reply),
                    Err(e) => reply.error(errno(&e)),
                }
            },
        );
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name.to_os_string();
        let shown = name.clone();
        self.admit(
            Class::Write,
            req,
            || format!("unlink {}", shown.to_string_lossy()),
            move |core, fail| {
                failed!(fail, reply);
                let rel = path!(core.child(parent, &name), reply);
                match std::fs::remove_file(core.full(&rel)) {
                    Ok(()) => reply.ok(),
                    Err(e) => reply.error(errno(&e)),
                }
            },
        );
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name.to_os_string();
        let shown = name.clone();
        self.admit(
            Class::Write,
            req,
            || format!("rmdir {}", shown.to_string_lossy()),
            move |core, fail| {
                failed!(fail, reply);
                let rel = path!(core.child(parent, &name), reply);
                match std::fs::remove_dir(core.full(&rel)) {
                    Ok(()) => reply.ok(),
                    Err(e) => reply.error(errno(&e)),
                }
            },
        );
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let name = link_name.to_os_string();
        let shown = name.clone();
        let target = target.to_path_buf();
        let owner = (req.uid(), req.gid());
        self.admit(
            Class::Write,
            req,
            || format!("symlink {}", shown.to_string_lossy()),
            move |core, fail| {
                failed!(fail, reply);
                let rel = path!(core.child(parent, &name), reply);
                let path = core.full(&rel);
                match std::os::unix::fs::symlink(&target, &path)
                    .and_then(|()| core.chown_to(&path, owner))
                {
                    Ok(()) => core.entry(rel, reply),
                    Err(e) => reply.error(errno(&e)),
                }
            },
        );
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let (name, newname) = (name.to_os_string(), newname.to_os_string());
        let shown = format!(
            "rename {} {}",
            name.to_string_lossy(),
            newname.to_string_lossy()
        );
        self.admit(
            Class::Write,
            req,
            || shown,
            move |core, fail| {
                failed!(fail, reply);
                let from = path!(core.child(parent, &name), reply);
                let to = path!(core.child(newparent, &newname), reply);
                let result = if flags.is_empty() {
                    std::fs::rename(core.full(&from), core.full(&to))
                } else {
                    nix::fcntl::renameat2(
                        nix::fcntl::AT_FDCWD,
                        &core.full(&from),
                        nix::fcntl::AT_FDCWD,
                        &core.full(&to),
                        nix::fcntl::RenameFlags::from_bits_truncate(flags.bits()),
                    )
                    .map_err(io::Error::from)
                };
                match result {
                    Ok(()) => {
                        core.moved(&from, &to);
                        reply.ok()
                    }
                    Err(e) => reply.error(errno(&e)),
                }
            },
        );
    }

    fn link(
        &self,
        req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let newname = newname.to_os_string();
        let shown = newname.clone();
        self.admit(
            Class::Write,
            req,
            || format!("link {}", shown.to_string_lossy()),
            move |core, fail| {
                failed!(fail, reply);
                let from = path!(core.rel(ino), reply);
                let to = path!(core.child(newparent, &newname), reply);
                match std::fs::hard_link(core.full(&from), core.full(&to)) {
                    Ok(()) => core.entry(to, reply),
                    Err(e) => reply.error(errno(&e)),
                }
            },
        );
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        self.admit(
            Class::Read,
            req,
            || "open".into(),
            move |core, fail| {
                failed!(fail, reply);
                let path = core.full(&path!(core.rel(ino), reply));
                match open_options(flags.0).open(path) {
                    // No keep_cache: each open drops the kernel's cached pages, so a fresh
                    // reader reaches the gate.
                    Ok(file) => reply.opened(core.add_file(file), FopenFlags::empty()),
                    Err(e) => reply.error(errno(&e)),
                }
            },
        );
    }

    fn read(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.admit(
            Class::Read,
            req,
            || format!("read {size} at {offset}"),
            move |core, fail| {
                failed!(fail, reply);
                let file = path!(core.file(fh), reply);
                let mut buf = vec![0; size as usize];
                let mut got = 0;
                while got < buf.len() {
                    match file.read_at(&mut buf[got..], offset + got as u64) {
                        Ok(0) => break,
                        Ok(n) => got += n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return reply.error(errno(&e)),
                    }
                }
                reply.data(&buf[..got]);
            },
        );
    }

    fn write(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let data = data.to_vec();
        let len = data.len();
        self.admit(
            Class::Write,
            req,
            || format!("write {len} at {offset}"),
            move |core, fail| {
                failed!(fail, reply);
                let file = path!(core.file(fh), reply);
                match file.write_all_at(&data, offset) {
                    Ok(()) => reply.written(data.len() as u32),
                    Err(e) => reply.error(errno(&e)),
                }
            },
        );
    }

    fn flush(
        &self,
        req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Writes go straight to the source file: there is nothing to flush, but a close is an
        // access a stall of `all` holds.
        self.admit(
            Class::Read,
            req,
            || "flush".into(),
            move |_, fail| {
                failed!(fail, reply);
                reply.ok()
            },
        );
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        // Never gated: nobody waits for it, and holding it would only hold the descriptor.
        lock(&self.core.files).remove(&fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.admit(
            Class::Fsync,
            req,
            || "fsync".into(),
            move |core, fail| {
                failed!(fail, reply);
                let file = path!(core.file(fh), reply);
                let synced = if datasync {
                    file.sync_data()
                } else {
                    file.sync_all()
                };
                match synced {
                    Ok(()) => reply.ok(),
                    Err(e) => reply.error(errno(&e)),
                }
            },
        );
    }

    fn opendir(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.admit(
            Class::Read,
            req,
            || "opendir".into(),
            move |core, fail| {
                failed!(fail, reply);
                let rel = path!(core.rel(ino), reply);
                // A snapshot at open: readdir's offsets index into it, stable while it is read.
                let listed = (|| -> io::Result<Vec<(u64, FileType, OsString)>> {
                    let mut entries = vec![
                        (ino.0, FileType::Directory, OsString::from(".")),
                        (1, FileType::Directory, OsString::from("..")),
                    ];
                    for entry in std::fs::read_dir(core.full(&rel))? {
                        let entry = entry?;
                        let kind = entry
                            .file_type()
                            .ok()
                            .and_then(FileType::from_std)
                            .unwrap_or(FileType::RegularFile);
                        entries.push((core.ino_of(entry.ino()), kind, entry.file_name()));
                    }
                    Ok(entries)
                })();
                match listed {
                    Ok(entries) => {
                        let fh = core.next_fh.fetch_add(1, Ordering::Relaxed);
                        lock(&core.dirs).insert(fh, Arc::new(entries));
                        reply.opened(FileHandle(fh), FopenFlags::empty())
                    }
                    Err(e) => reply.error(errno(&e)),
                }
            },
        );
    }

    fn readdir(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        self.admit(
            Class::Read,
            req,
            || "readdir".into(),
            move |core, fail| {
                failed!(fail, reply);
                let Some(entries) = lock(&core.dirs).get(&fh.0).cloned() else {
                    return reply.error(Errno::EBADF);
                };
                for (i, (ino, kind, name)) in entries.iter().enumerate().skip(offset as usize) {
                    if reply.add(INodeNo(*ino), i as u64 + 1, *kind, name) {
                        break;
                    }
                }
                reply.ok()
            },
        );
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        lock(&self.core.dirs).remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.admit(
            Class::Fsync,
            req,
            || "fsyncdir".into(),
            move |core, fail| {
                failed!(fail, reply);
                let path = core.full(&path!(core.rel(ino), reply));
                match File::open(path).and_then(|d| d.sync_all()) {
                    Ok(()) => reply.ok(),
                    Err(e) => reply.error(errno(&e)),
                }
            },
        );
    }

    fn statfs(&self, req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        self.admit(
            Class::Read,
            req,
            || "statfs".into(),
            move |core, fail| {
                failed!(fail, reply);
                match nix::sys::statvfs::statvfs(&core.source) {
                    Ok(s) => reply.statfs(
                        s.blocks(),
                        s.blocks_free(),
                        s.blocks_available(),
                        s.files(),
                        s.files_free(),
                        s.block_size() as u32,
                        s.name_max() as u32,
                        s.fragment_size() as u32,
                    ),
                    Err(e) => reply.error(Errno::from_i32(e as i32)),
                }
            },
        );
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        // Mounted with default_permissions: the kernel checks the mode bits itself.
        reply.ok();
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let name = name.to_os_string();
        let shown = name.clone();
        let owner = (req.uid(), req.gid());
        self.admit(
            Class::Write,
            req,
            || format!("create {}", shown.to_string_lossy()),
            move |core, fail| {
                failed!(fail, reply);
                let rel = path!(core.child(parent, &name), reply);
                let path = core.full(&rel);
                let mode = mode & !umask & 0o7777;
                // Chowned only if this call made it: O_CREAT without O_EXCL may open an
                // existing file, which stays its owner's.
                let made = open_options(flags).create_new(true).mode(mode).open(&path);
                let opened = match made {
                    Ok(file) => core.chown_to(&path, owner).map(|()| file),
                    Err(e)
                        if e.kind() == io::ErrorKind::AlreadyExists
                            && flags & libc::O_EXCL == 0 =>
                    {
                        open_options(flags).open(&path)
                    }
                    Err(e) => Err(e),
                };
                let file = match opened {
                    Ok(file) => file,
                    Err(e) => return reply.error(errno(&e)),
                };
                match file.metadata() {
                    Ok(md) => {
                        let attr = core.remember(rel, &md);
                        let fh = core.add_file(file);
                        reply.created(&TTL, &attr, Generation(0), fh, FopenFlags::empty())
                    }
                    Err(e) => reply.error(errno(&e)),
                }
            },
        );
    }
}
