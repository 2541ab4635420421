//! Other local users get nothing from the hook, which runs as root: a compiled-policy cache or
//! a state directory that another user could change is refused, saying how to fix it (the
//! cache then goes unused and the build goes on), and nothing planted in the cache (a link, a
//! file of another user, one others may write) is followed or loaded. Another user is played
//! by uid 65534, `nobody`; giving files to it needs root, as CI runs these tests. Run as
//! another user, the tests that need root say so and stop.

use std::os::unix::fs::{lchown, symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix_wasm_hook::core::policy::cache::{self, Cache, Source};
use nix_wasm_hook::core::policy::{engine, Limits, Policies, DEFAULT_POLICY};
use nix_wasm_hook::transfer::ssh::{self, SshOptions};

use crate::support::target::serve_target;

const NOBODY: u32 = 65534;

fn root() -> bool {
    let root = rustix::process::geteuid().is_root();
    if !root {
        eprintln!("skipped: playing another user needs root");
    }
    root
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The cache's name for the default policy's image.
fn image_name() -> String {
    format!("{}.cwasm", cache::key(engine::shared().unwrap(), &cache::sha256_hex(DEFAULT_POLICY)))
}

fn load(cache: &Cache) -> Source {
    cache.load(engine::shared().unwrap(), DEFAULT_POLICY, &cache::sha256_hex(DEFAULT_POLICY)).unwrap().1
}

/// The warning of loading the policies with `cache`, which must still load them.
fn warning_of(cache: &Cache) -> String {
    let (_, warning) = Policies::load(None, Limits::default(), cache).expect("the build goes on");
    warning.expect("a warning about the cache")
}

#[test]
fn a_cache_directory_others_can_write_is_not_used_and_the_warning_says_how_to_fix_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cache");
    std::fs::create_dir(&dir).unwrap();
    chmod(&dir, 0o777);
    let warning = warning_of(&Cache::at(dir.clone()));
    assert!(warning.contains(&dir.display().to_string()) && warning.contains("mode 0777"), "{warning}");
    assert!(warning.contains(&format!("`chmod go-w {}`", dir.display())), "{warning}");
    assert_eq!(entries(&dir), Vec::<String>::new(), "nothing is written to it");
}

#[test]
#[cfg_attr(not(nwh_root), ignore = "needs root: playing another user")]
fn a_cache_directory_of_another_user_is_not_used() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cache");
    std::fs::create_dir(&dir).unwrap();
    chmod(&dir, 0o755);
    lchown(&dir, Some(NOBODY), Some(NOBODY)).unwrap();
    let warning = warning_of(&Cache::at(dir.clone()));
    assert!(
        warning.contains("belongs to uid 65534") && warning.contains(&format!("`chown 0 {}`", dir.display()))
    );
    assert_eq!(entries(&dir), Vec::<String>::new(), "nothing is written to it");
}

#[test]
#[cfg_attr(not(nwh_root), ignore = "needs root: playing another user")]
fn a_cache_file_of_another_user_or_that_others_can_write_is_compiled_again_not_loaded() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = Cache::at(tmp.path().join("cache"));
    let image = tmp.path().join("cache").join(image_name());
    assert_eq!(load(&cache), Source::Compiled);
    assert_eq!(load(&cache), Source::Cached, "an image of ours is used");
    assert_eq!(std::fs::metadata(&image).unwrap().mode() & 0o777, 0o600);

    lchown(&image, Some(NOBODY), Some(NOBODY)).unwrap();
    assert_eq!(load(&cache), Source::Compiled, "another user's image is not loaded");
    assert_eq!(std::fs::metadata(&image).unwrap().uid(), 0, "it was replaced by ours");
    assert_eq!(load(&cache), Source::Cached);

    chmod(&image, 0o666);
    assert_eq!(load(&cache), Source::Compiled, "an image others can write is not loaded");
    assert_eq!(std::fs::metadata(&image).unwrap().mode() & 0o777, 0o600, "it was replaced");
}

#[test]
fn a_link_planted_at_the_cache_file_is_not_followed_and_what_it_leads_to_is_not_loaded() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cache");
    // A valid image of the very component, elsewhere: loading it would run its code.
    let theirs = tmp.path().join("theirs.cwasm");
    let valid = engine::shared().unwrap().precompile_component(DEFAULT_POLICY).unwrap();
    std::fs::write(&theirs, &valid).unwrap();
    std::fs::create_dir(&dir).unwrap();
    chmod(&dir, 0o700);
    let planted = dir.join(image_name());
    symlink(&theirs, &planted).unwrap();
    if root() {
        lchown(&planted, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    assert_eq!(load(&Cache::at(dir.clone())), Source::Compiled, "the planted image was not loaded");
    assert_eq!(std::fs::read(&theirs).unwrap(), valid, "nothing was written through the link");
    assert!(!std::fs::symlink_metadata(&planted).unwrap().file_type().is_symlink(), "ours replaced it");
}

#[test]
fn a_link_planted_at_a_temporary_name_is_not_written_through() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cache");
    std::fs::create_dir(&dir).unwrap();
    chmod(&dir, 0o700);
    let precious = tmp.path().join("precious");
    std::fs::write(&precious, b"not the hook's").unwrap();
    // The names a cache writing this image could guess: this process's, as it once used.
    for name in [format!(".tmp-{}-{}", std::process::id(), image_name()), format!(".{}.tmp", image_name())] {
        symlink(&precious, dir.join(name)).unwrap();
    }
    assert_eq!(load(&Cache::at(dir.clone())), Source::Compiled);
    assert_eq!(std::fs::read(&precious).unwrap(), b"not the hook's");
    let image = std::fs::symlink_metadata(dir.join(image_name())).unwrap();
    assert!(image.file_type().is_file() && image.uid() == rustix::process::geteuid().as_raw());
}

fn ssh_options(state: &Path, runtime: &Path) -> SshOptions {
    SshOptions {
        state: state.to_path_buf(),
        runtime: runtime.to_path_buf(),
        connect_timeout: Duration::from_secs(1),
        persist: Duration::from_secs(1),
    }
}

fn master_error(state: &Path) -> String {
    let runtime = state.parent().unwrap().join("run");
    let e = ssh::connect(&serve_target("builder.invalid"), &ssh_options(state, &runtime))
        .expect_err("no master in a state directory others can change");
    format!("{e:#}")
}

/// The control sockets' directory of a state directory whose path is far longer than a Unix
/// socket's may be: short, and ssh is reached (it says the builder's name cannot be resolved,
/// not that the socket's path is too long).
#[test]
fn control_sockets_are_short_whatever_the_state_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("a-state-directory-with-a-long-name".repeat(4)).join("state");
    assert!(state.as_os_str().len() > 108);
    let runtime = tmp.path().join("run");
    let opts = ssh_options(&state, &runtime);
    let dir = ssh::control_dir(&opts).unwrap();
    assert_eq!(dir.path().parent(), Some(runtime.canonicalize().unwrap().as_path()));
    assert_eq!(dir.path().file_name().unwrap().len(), 16);
    assert_eq!(std::fs::metadata(dir.path()).unwrap().mode() & 0o777, 0o700);
    assert_eq!(std::fs::metadata(&runtime).unwrap().mode() & 0o777, 0o700);
    assert_eq!(std::fs::read_link(state.join(ssh::CONTROL_LINK)).unwrap(), dir.path());
    // Every hook of that state directory finds the same one; another state directory another.
    assert_eq!(ssh::control_dir(&opts).unwrap().path(), dir.path());
    let other = ssh::control_dir(&ssh_options(&tmp.path().join("other"), &runtime)).unwrap();
    assert_ne!(other.path(), dir.path());
    let e = ssh::connect(&serve_target("builder.invalid"), &opts).expect_err("no such builder");
    let e = format!("{e:#}");
    assert!(!e.contains("too long"), "{e}");
    assert!(e.contains("builder.invalid"), "{e}");
}

/// A directory for the control sockets that someone else made first (in `/tmp`, another user
/// can), or that others can open, or a link planted there, is refused with the reason, and
/// nothing is put in it.
#[test]
fn a_control_directory_someone_else_made_is_refused_not_used() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let runtime = tmp.path().join("run");
    let error = || {
        let e = ssh::connect(&serve_target("builder.invalid"), &ssh_options(&state, &runtime))
            .expect_err("refused");
        format!("{e:#}")
    };
    std::fs::create_dir(&runtime).unwrap();
    chmod(&runtime, 0o777);
    let e = error();
    assert!(e.contains("control sockets") && e.contains(&runtime.display().to_string()), "{e}");
    assert!(e.contains("mode 0777"), "{e}");
    assert_eq!(entries(&runtime), Vec::<String>::new());
    if root() {
        chmod(&runtime, 0o700);
        lchown(&runtime, Some(NOBODY), Some(NOBODY)).unwrap();
        let e = error();
        assert!(e.contains("belongs to uid 65534"), "{e}");
        assert_eq!(entries(&runtime), Vec::<String>::new());
    }
    // A link to a directory of ours, planted by another user, is not followed.
    std::fs::remove_dir(&runtime).unwrap();
    let ours = tmp.path().join("ours");
    std::fs::create_dir(&ours).unwrap();
    chmod(&ours, 0o700);
    symlink(&ours, &runtime).unwrap();
    if root() {
        lchown(&runtime, Some(NOBODY), Some(NOBODY)).unwrap();
        let e = error();
        assert!(e.contains(&runtime.display().to_string()), "{e}");
        assert_eq!(entries(&ours), Vec::<String>::new());
    }
    // The directory of one state directory, made by someone else inside ours, likewise.
    std::fs::remove_file(&runtime).unwrap();
    std::fs::create_dir(&runtime).unwrap();
    chmod(&runtime, 0o700);
    let name = ssh::control_dir(&ssh_options(&state, &runtime)).unwrap().path().to_path_buf();
    chmod(&name, 0o777);
    let e = error();
    assert!(e.contains(&name.display().to_string()) && e.contains("mode 0777"), "{e}");
    assert_eq!(entries(&name), Vec::<String>::new());
}

#[test]
fn a_state_directory_others_can_change_is_refused_before_anything_is_put_in_it() {
    let tmp = tempfile::tempdir().unwrap();
    let state: PathBuf = tmp.path().join("state");
    std::fs::create_dir(&state).unwrap();
    chmod(&state, 0o777);
    let e = master_error(&state);
    assert!(
        e.contains("state-dir") && e.contains(&state.display().to_string()) && e.contains("mode 0777"),
        "{e}"
    );
    assert!(e.contains(&format!("`chmod 700 {}`", state.display())), "{e}");
    assert_eq!(entries(&state), Vec::<String>::new());
    if root() {
        chmod(&state, 0o700);
        lchown(&state, Some(NOBODY), Some(NOBODY)).unwrap();
        let e = master_error(&state);
        assert!(
            e.contains("belongs to uid 65534") && e.contains(&format!("`chown 0 {}`", state.display())),
            "{e}"
        );
        assert_eq!(entries(&state), Vec::<String>::new());
    }
}

fn sample_record() -> nwh_trace::Record {
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/traces/prefer-last-differs.jsonl");
    nwh_trace::Reader::open(&fixture).unwrap().next().unwrap().unwrap().1
}

/// A file of another user's, and a link to it planted where the hook is told to write.
fn planted_link(tmp: &Path) -> (PathBuf, PathBuf) {
    let theirs = tmp.join("theirs");
    std::fs::write(&theirs, b"not the hook's").unwrap();
    chmod(&theirs, 0o666);
    let link = tmp.join("planted");
    symlink(&theirs, &link).unwrap();
    (link, theirs)
}

#[test]
fn a_trace_is_made_for_its_user_alone_and_never_written_through_a_link() {
    let tmp = tempfile::tempdir().unwrap();
    let trace = tmp.path().join("trace.jsonl");
    nwh_trace::append(&trace, 1 << 20, &sample_record()).unwrap();
    assert_eq!(std::fs::metadata(&trace).unwrap().mode() & 0o777, 0o600);
    let (link, theirs) = planted_link(tmp.path());
    let e = nwh_trace::append(&link, 1 << 20, &sample_record()).unwrap_err().to_string();
    assert!(e.contains("is a symbolic link"), "{e}");
    assert_eq!(std::fs::read(&theirs).unwrap(), b"not the hook's");
}

#[test]
fn a_timeline_is_made_for_its_user_alone_and_never_written_through_a_link() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |timeline: &Path| {
        // Hook mode with nothing on stdin: it marks its start, then ends at once.
        std::process::Command::new(env!("CARGO_BIN_EXE_nix-wasm-hook"))
            .env(nix_wasm_hook::core::timeline::VARIABLE, timeline)
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
    };
    let timeline = tmp.path().join("timeline.jsonl");
    run(&timeline);
    assert!(std::fs::read_to_string(&timeline).unwrap().contains(r#""phase":"start""#));
    assert_eq!(std::fs::metadata(&timeline).unwrap().mode() & 0o777, 0o600);
    let (link, theirs) = planted_link(tmp.path());
    run(&link);
    assert_eq!(std::fs::read(&theirs).unwrap(), b"not the hook's");
}
