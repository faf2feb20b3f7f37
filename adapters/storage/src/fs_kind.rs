//! Which filesystem a store's root is on, by `statfs`: network and FUSE filesystems, whose
//! calls can hang as long as their server does, are named (see `fs_calls.rs`).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// `f_type` values of network, cluster and FUSE filesystems (`linux/magic.h`, and the
/// filesystems' own sources for those it leaves out), with a name for the log.
const REMOTE: &[(u32, &str)] = &[
    (0x6969, "nfs"),
    (0x517b, "smb"),
    (0xff53_4d42, "cifs"),
    (0xfe53_4d42, "smb2"),
    (0x6573_5546, "fuse"),
    (0x00c3_6400, "ceph"),
    (0x0102_1997, "9p"),
    (0x5346_414f, "afs"),
    (0x6b41_4653, "afs"),
    (0x7375_7245, "coda"),
    (0x564c, "ncp"),
    (0x0bd0_0bd0, "lustre"),
    (0x4750_4653, "gpfs"),
    (0x0116_1970, "gfs2"),
    (0x7461_636f, "ocfs2"),
    (0x2003_0528, "orangefs"),
];

/// The kind of network or FUSE filesystem `f_type` names, or `None` for any other.
pub(crate) fn remote_kind(f_type: u32) -> Option<&'static str> {
    REMOTE
        .iter()
        .find(|(magic, _)| *magic == f_type)
        .map(|(_, kind)| *kind)
}

/// `statfs`'s `f_type` for `path`.
fn filesystem_type(path: &Path) -> std::io::Result<u32> {
    let path = CString::new(path.as_os_str().as_bytes())?;
    let mut stat = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: `path` is NUL-terminated and `stat` is a `statfs` for the call to fill.
    if unsafe { libc::statfs(path.as_ptr(), stat.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `statfs` succeeded, so it filled `stat`.
    let stat = unsafe { stat.assume_init() };
    // Its width differs between platforms; the magic numbers fit 32 bits.
    Ok(stat.f_type as u32)
}

/// The kind of network or FUSE filesystem `root` is on, if it is on one. A root not created
/// yet will be on its nearest existing ancestor's filesystem; one that cannot be examined
/// counts as local (calls then move to blocking threads only once they are slow).
pub(crate) fn remote_kind_at(root: &Path) -> Option<&'static str> {
    let f_type = root.ancestors().find_map(|dir| filesystem_type(dir).ok());
    if f_type.is_none() {
        tracing::warn!(root = %root.display(), "cannot tell which filesystem the store is on");
    }
    f_type.and_then(remote_kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_and_fuse_filesystems_are_told_from_local_ones() {
        assert_eq!(remote_kind(0x6969), Some("nfs"));
        assert_eq!(remote_kind(0xff53_4d42), Some("cifs"));
        assert_eq!(remote_kind(0x6573_5546), Some("fuse"));
        assert_eq!(remote_kind(0x00c3_6400), Some("ceph"));
        assert_eq!(remote_kind(0x0102_1997), Some("9p"));
        // ext4, xfs, btrfs, tmpfs.
        for local in [0xef53, 0x5846_5342, 0x9123_683e, 0x0102_1994] {
            assert_eq!(remote_kind(local), None);
        }
    }

    #[test]
    fn a_root_not_created_yet_is_on_its_parents_filesystem() {
        let missing = std::env::temp_dir().join("stowage-no-such-dir/below");
        let parent = filesystem_type(&std::env::temp_dir()).expect("statfs of the temp dir");
        assert_eq!(remote_kind_at(&missing), remote_kind(parent));
    }
}
