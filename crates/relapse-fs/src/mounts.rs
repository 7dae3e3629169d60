//! What the kernel says about mounts and loop devices: `/proc/self/mountinfo`, `stat`, and
//! `/sys/block/loopN/loop/backing_file`. Read only; nothing here changes anything.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The device number of the file system `path` is on (`st_dev`), following symlinks.
pub(crate) fn dev_of(path: &Path) -> io::Result<u64> {
    std::fs::metadata(path).map(|m| m.dev())
}

/// The device number a block device node stands for (`st_rdev`): the `st_dev` of every file of
/// the file system mounted from it, known before it is mounted.
pub(crate) fn rdev_of(device: &Path) -> io::Result<u64> {
    std::fs::metadata(device).map(|m| m.rdev())
}

/// The nearest existing ancestor of `path` (itself if it exists): where a file that does not
/// exist yet would be created, unless a mount appears in between.
pub(crate) fn nearest_existing(path: &Path) -> &Path {
    let mut at = path;
    loop {
        if at.symlink_metadata().is_ok() {
            return at;
        }
        match at.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => at = parent,
            _ => return Path::new("/"),
        }
    }
}

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Mount {
    pub(crate) dev: u64,
    pub(crate) mountpoint: PathBuf,
    pub(crate) fstype: String,
    /// The mount source (a device, or a FUSE daemon's `fsname`).
    pub(crate) source: String,
}

/// Undoes mountinfo's octal escapes (`\040` for a space, `\011`, `\012`, `\134`).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (bytes[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let (major, minor) = fields.get(2)?.split_once(':')?;
            let dev = nix::sys::stat::makedev(major.parse().ok()?, minor.parse().ok()?);
            let mountpoint = PathBuf::from(unescape(fields.get(4)?));
            // Optional fields end at "-"; the file system type follows it.
            let dash = fields.iter().position(|f| *f == "-")?;
            let fstype = fields.get(dash + 1)?.to_string();
            let source = unescape(fields.get(dash + 2)?);
            Some(Mount {
                dev,
                mountpoint,
                fstype,
                source,
            })
        })
        .collect()
}

/// Every mount of this process's namespace, in mount order.
pub(crate) fn mounts() -> io::Result<Vec<Mount>> {
    Ok(parse_mountinfo(&std::fs::read_to_string(
        "/proc/self/mountinfo",
    )?))
}

/// The mount that `path` (canonical) is the root of, if it is one: the last mounted at that path,
/// which hides any below it.
pub(crate) fn mount_at(path: &Path) -> io::Result<Option<Mount>> {
    Ok(mounts()?.into_iter().rfind(|m| m.mountpoint == path))
}

/// The file a loop device (`/dev/loopN`) is attached to, or `None` if it is attached to
/// nothing (or is no loop device). A backing file deleted since shows as its old path.
pub(crate) fn loop_backing(device: &Path) -> Option<PathBuf> {
    let name = device.file_name()?.to_str()?;
    let text = std::fs::read_to_string(format!("/sys/block/{name}/loop/backing_file")).ok()?;
    let text = text.trim_end_matches('\n');
    Some(PathBuf::from(
        text.strip_suffix(" (deleted)").unwrap_or(text),
    ))
}

/// Every loop device attached to `image` (canonical), e.g. `/dev/loop3`.
pub(crate) fn loops_backing(image: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.starts_with("loop")
                .then(|| Path::new("/dev").join(name))
        })
        .filter(|device| loop_backing(device).as_deref() == Some(image))
        .collect();
    found.sort();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_mountinfo_with_escapes_and_optional_fields() {
        let text =
            "36 35 98:0 / /mnt/with\\040space rw,noatime master:1 shared:2 - ext4 /dev/loop3 rw\n\
                    37 1 0:22 / /proc rw - proc proc rw\n";
        let mounts = parse_mountinfo(text);
        assert_eq!(
            mounts,
            vec![
                Mount {
                    dev: nix::sys::stat::makedev(98, 0),
                    mountpoint: "/mnt/with space".into(),
                    fstype: "ext4".into(),
                    source: "/dev/loop3".into(),
                },
                Mount {
                    dev: nix::sys::stat::makedev(0, 22),
                    mountpoint: "/proc".into(),
                    fstype: "proc".into(),
                    source: "proc".into(),
                },
            ]
        );
    }

    #[test]
    fn the_root_is_a_mount_and_its_dev_is_stats() {
        let root = mount_at(Path::new("/")).unwrap().expect("/ is mounted");
        assert_eq!(root.mountpoint, Path::new("/"));
        assert_eq!(
            nearest_existing(Path::new("/no/such/dir/here")),
            Path::new("/")
        );
        assert_eq!(
            nearest_existing(Path::new("/proc/self")),
            Path::new("/proc/self")
        );
    }
}
