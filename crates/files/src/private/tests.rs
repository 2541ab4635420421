//! Another user is played by uid 65534 (`nobody`): files and links are given to it with
//! `lchown`, which needs root. Run as another user, those tests say so and stop.

use std::os::unix::fs::{lchown, symlink, PermissionsExt};

use super::*;

const NOBODY: u32 = 65534;

fn root() -> bool {
    if euid() != 0 {
        eprintln!("skipped: giving a file to another user needs root");
    }
    euid() == 0
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn what_is_made_is_ours_and_closed() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("a/b/state");
    let dir = PrivateDir::create(&state, Access::Secret).unwrap();
    assert_eq!(dir.path(), std::fs::canonicalize(&state).unwrap());
    for p in [tmp.path().join("a"), tmp.path().join("a/b"), state.clone()] {
        assert_eq!(mode(&p), 0o700, "{}", p.display());
    }
    let sub = dir.subdir("ssh", Access::Secret).unwrap();
    assert_eq!(mode(sub.path()), 0o700);
    sub.write_atomically("f", b"x").unwrap();
    assert_eq!(mode(&sub.join("f")), 0o600);
    assert_eq!(std::fs::read_dir(sub.path()).unwrap().count(), 1, "no temporary file is left");
}

#[test]
fn a_directory_others_can_write_or_enter_is_refused_with_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("cache");
    std::fs::create_dir(&d).unwrap();
    chmod(&d, 0o777);
    let e = PrivateDir::open(&d, Access::Readable).unwrap_err().to_string();
    assert!(e.contains(&d.display().to_string()) && e.contains("mode 0777"), "{e}");
    assert!(e.contains(&format!("`chmod go-w {}`", d.display())), "{e}");
    chmod(&d, 0o755);
    PrivateDir::open(&d, Access::Readable).unwrap();
    // Others could read a secret one but never change it: closed, not refused (earlier
    // releases made the state directory so).
    PrivateDir::open(&d, Access::Secret).unwrap();
    assert_eq!(std::fs::metadata(&d).unwrap().permissions().mode() & 0o777, 0o700);
    // Others could change it: refused, and left as it is.
    chmod(&d, 0o775);
    let e = PrivateDir::open(&d, Access::Secret).unwrap_err().to_string();
    assert!(e.contains("mode 0775") && e.contains("`chmod "), "{e}");
    assert_eq!(std::fs::metadata(&d).unwrap().permissions().mode() & 0o777, 0o775);
}

#[test]
fn a_directory_of_another_user_is_refused_naming_the_owner() {
    if !root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("state");
    std::fs::create_dir(&d).unwrap();
    chmod(&d, 0o700);
    lchown(&d, Some(NOBODY), Some(NOBODY)).unwrap();
    let e = PrivateDir::create(&d, Access::Secret).unwrap_err().to_string();
    assert!(e.contains("belongs to uid 65534") && e.contains("not to uid 0"), "{e}");
    assert!(e.contains(&format!("`chown 0 {}`", d.display())), "{e}");
}

#[test]
fn a_parent_others_can_write_is_refused_unless_sticky() {
    let tmp = tempfile::tempdir().unwrap();
    let shared = tmp.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    chmod(&shared, 0o777);
    let e = PrivateDir::create(&shared.join("state"), Access::Secret).unwrap_err().to_string();
    assert!(e.contains(&format!("{} (owner uid", shared.display())) && e.contains("mode 0777"), "{e}");
    assert!(e.contains("on the way to") && e.contains("chmod +t"), "{e}");
    assert!(!shared.join("state").exists(), "nothing is made in it");
    chmod(&shared, 0o1777);
    PrivateDir::create(&shared.join("state"), Access::Secret).unwrap();
}

#[test]
fn a_link_another_user_planted_is_not_followed() {
    if !root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let real = tmp.path().join("real");
    std::fs::create_dir(&real).unwrap();
    chmod(&real, 0o700);
    let ours = tmp.path().join("ours");
    symlink(&real, &ours).unwrap();
    assert_eq!(PrivateDir::open(&ours, Access::Secret).unwrap().path(), real);
    let planted = tmp.path().join("planted");
    symlink(&real, &planted).unwrap();
    lchown(&planted, Some(NOBODY), Some(NOBODY)).unwrap();
    let e = PrivateDir::create(&planted.join("sub"), Access::Secret).unwrap_err().to_string();
    assert!(e.contains("is a symbolic link owned by uid 65534") && e.contains("not followed"), "{e}");
    assert!(!real.join("sub").exists());
}

#[test]
fn files_are_opened_only_when_ours_and_never_through_a_link() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = PrivateDir::create(&tmp.path().join("d"), Access::Readable).unwrap();
    let outside = tmp.path().join("outside");
    std::fs::write(&outside, b"precious").unwrap();
    symlink(&outside, dir.join("link")).unwrap();
    let e = dir.open_own("link").unwrap_err().to_string();
    assert!(e.contains("is a symbolic link"), "{e}");
    assert!(dir.open_own("absent").unwrap().is_none());
    std::fs::write(dir.join("loose"), b"x").unwrap();
    chmod(&dir.join("loose"), 0o666);
    let e = dir.open_own("loose").unwrap_err().to_string();
    assert!(e.contains("mode 0666") && e.contains("write to it"), "{e}");
    dir.write_atomically("link", b"new").unwrap();
    assert_eq!(std::fs::read(&outside).unwrap(), b"precious", "the link was replaced, not written through");
    assert!(!std::fs::symlink_metadata(dir.join("link")).unwrap().file_type().is_symlink());
    if root() {
        std::fs::write(dir.join("theirs"), b"x").unwrap();
        lchown(dir.join("theirs"), Some(NOBODY), Some(NOBODY)).unwrap();
        assert!(dir.open_own("theirs").unwrap_err().to_string().contains("belongs to uid 65534"));
    }
}

#[test]
fn appending_creates_a_closed_file_and_does_not_follow_a_link() {
    let tmp = tempfile::tempdir().unwrap();
    let trace = tmp.path().join("trace");
    open_append(&trace).unwrap().write_all(b"one\n").unwrap();
    open_append(&trace).unwrap().write_all(b"two\n").unwrap();
    assert_eq!(std::fs::read(&trace).unwrap(), b"one\ntwo\n", "appended, not overwritten");
    assert_eq!(mode(&trace), 0o600);
    let outside = tmp.path().join("outside");
    std::fs::write(&outside, b"precious").unwrap();
    chmod(&outside, 0o600);
    let planted = tmp.path().join("planted");
    symlink(&outside, &planted).unwrap();
    let e = open_append(&planted).unwrap_err().to_string();
    assert!(e.contains("is a symbolic link"), "{e}");
    assert_eq!(std::fs::read(&outside).unwrap(), b"precious");
    let shared = tmp.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    chmod(&shared, 0o777);
    assert!(open_append(&shared.join("t")).unwrap_err().to_string().contains("on the way to"));
}
