//! The two freeze ioctls, the only unsafe code of this crate.
//!
//! No maintained crate exposes FIFREEZE/FITHAW safely (rustix only knows the opcode), so they are
//! declared here with nix's macros and wrapped in safe functions taking a borrowed descriptor.

#![allow(unsafe_code)]

use std::os::fd::{AsFd, AsRawFd};

use nix::errno::Errno;

// FIFREEZE = _IOWR('X', 119, int), FITHAW = _IOWR('X', 120, int) (linux/fs.h). The kernel
// ignores the int; the macros still want a pointer to one.
nix::ioctl_readwrite!(fifreeze, b'X', 119, nix::libc::c_int);
nix::ioctl_readwrite!(fithaw, b'X', 120, nix::libc::c_int);

/// Freezes the file system that `fd` is on (any file of it; relapse uses its root directory).
/// EBUSY: already frozen; EOPNOTSUPP: the file system cannot be frozen.
pub(crate) fn freeze(fd: impl AsFd) -> Result<(), Errno> {
    let mut unused: nix::libc::c_int = 0;
    // SAFETY: the descriptor is valid for the duration of the call (it is borrowed), and the
    // pointer is to a live, aligned c_int on this stack frame that the kernel does not keep.
    unsafe { fifreeze(fd.as_fd().as_raw_fd(), &mut unused) }.map(drop)
}

/// Thaws the file system that `fd` is on. EINVAL: it was not frozen.
pub(crate) fn thaw(fd: impl AsFd) -> Result<(), Errno> {
    let mut unused: nix::libc::c_int = 0;
    // SAFETY: as for `freeze`.
    unsafe { fithaw(fd.as_fd().as_raw_fd(), &mut unused) }.map(drop)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_request_codes_are_the_kernels() {
        // The values of linux/fs.h on every architecture with the generic ioctl layout.
        assert_eq!(nix::request_code_readwrite!(b'X', 119, 4), 0xC004_5877);
        assert_eq!(nix::request_code_readwrite!(b'X', 120, 4), 0xC004_5878);
    }
}
