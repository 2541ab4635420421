//! `dump` writes the bytes Nix's own `nix-store --dump` writes for the same tree: the NAR hash
//! of an uploaded path depends on every one of them.

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::Command;

fn nix_dump(path: &Path) -> Option<Vec<u8>> {
    let out = Command::new("nix-store").arg("--dump").arg(path).output().ok()?;
    assert!(out.status.success(), "nix-store --dump: {}", String::from_utf8_lossy(&out.stderr));
    Some(out.stdout)
}

fn ours(path: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    let size = nwh_nar::dump::dump(path, &mut out).unwrap();
    assert_eq!(size, out.len() as u64);
    out
}

#[test]
fn a_tree_is_dumped_as_nix_dumps_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("tree");
    std::fs::create_dir_all(root.join("sub/deeper")).unwrap();
    std::fs::create_dir(root.join("empty")).unwrap();
    // Names whose byte order differs from a case-insensitive or locale order.
    for (name, body) in [("b", "bee\n"), ("B", "Bee"), ("a.txt", ""), ("é", "e acute"), ("sub/x", "1234567")]
    {
        std::fs::write(root.join(name), body).unwrap();
    }
    std::fs::write(root.join("sub/deeper/run"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(root.join("sub/deeper/run"), std::fs::Permissions::from_mode(0o755)).unwrap();
    // Executable for its owner only: still executable in a NAR.
    std::fs::write(root.join("owner-x"), vec![7u8; 70_000]).unwrap();
    std::fs::set_permissions(root.join("owner-x"), std::fs::Permissions::from_mode(0o700)).unwrap();
    symlink("sub/x", root.join("link")).unwrap();
    symlink("/nowhere/at/all", root.join("dangling")).unwrap();

    let Some(theirs) = nix_dump(&root) else {
        eprintln!("SKIPPED: no nix-store here to compare with");
        return;
    };
    assert_eq!(ours(&root), theirs);
    for single in ["b", "link", "empty", "owner-x"] {
        assert_eq!(ours(&root.join(single)), nix_dump(&root.join(single)).unwrap(), "{single}");
    }
}

#[test]
fn what_a_nar_cannot_hold_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let err = nwh_nar::dump::dump(&fifo, &mut Vec::new()).unwrap_err();
    assert!(err.to_string().contains("not a regular file, directory or symlink"), "{err}");
    assert!(err.to_string().contains("fifo"), "{err}");
}

/// What `restore` unpacks, Nix dumps back to the same bytes, and the hash `restore` returns is
/// the hash of those bytes.
#[test]
fn a_restored_nar_dumps_back_to_itself() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("tree");
    std::fs::create_dir_all(root.join("sub/empty")).unwrap();
    std::fs::write(root.join("sub/big"), (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect::<Vec<u8>>())
        .unwrap();
    std::fs::write(root.join("run"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(root.join("run"), std::fs::Permissions::from_mode(0o555)).unwrap();
    std::fs::write(root.join("odd"), "123").unwrap();
    symlink("../run", root.join("sub/link")).unwrap();
    let nar = ours(&root);
    for (name, bytes) in
        [("copy", nar.clone()), ("file", ours(&root.join("sub/big"))), ("link", ours(&root.join("sub/link")))]
    {
        let dest = dir.path().join(name);
        let summary = nwh_nar::restore(&mut &bytes[..], &dest).unwrap();
        assert_eq!(summary.size, bytes.len() as u64);
        assert_eq!(ours(&dest), bytes, "{name}");
        if let Some(theirs) = nix_dump(&dest) {
            assert_eq!(theirs, bytes, "{name}");
        }
        let mut copied = Vec::new();
        assert_eq!(nwh_nar::copy_nar(&mut &bytes[..], &mut copied).unwrap(), summary);
    }
}

#[test]
fn restore_never_writes_over_what_exists() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f");
    std::fs::write(&file, "x").unwrap();
    let nar = ours(&file);
    let err = nwh_nar::restore(&mut &nar[..], &file).unwrap_err();
    assert!(matches!(err, nwh_nar::NarError::Restore(_)), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), b"x");
}
