//! The client against a real `nix-store --serve --write` (the machine's Nix, 2.8 on Debian 12)
//! over pipes. Everything lives under one temporary directory: a "local" chroot store where
//! the inputs are built with `nix-build`, and the served chroot store (`--store DIR`), which
//! starts empty. Nix builds in a chroot store only inside its sandbox, so the sandbox gets
//! `/bin`, `/lib*` and `/usr` for the `/bin/sh` builders.
//!
//! Skipped (with a printed reason) when `nix-store` is missing, except in CI (`CI=true`),
//! where it must run.

use std::collections::BTreeSet;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nwh_drv::Derivation;
use nwh_nar::copy_export;
use nwh_serve::{BuildOptions, BuildStatus, PathInfo, ServeClient, ServeError};

fn in_ci() -> bool {
    matches!(std::env::var("CI").as_deref(), Ok("true") | Ok("1"))
}

fn skip_reason() -> Option<String> {
    let found =
        Command::new("nix-store").arg("--version").output().map(|o| o.status.success()).unwrap_or(false);
    if found {
        return None;
    }
    if in_ci() {
        panic!("nix-store is not installed, and CI=true: the real-Nix tests must run in CI");
    }
    Some("nix-store is not installed".into())
}

/// A temporary directory holding both stores. Nix makes store directories read-only, so
/// `Drop` makes them writable again before removing the tree.
struct Sandbox {
    dir: PathBuf,
}

impl Sandbox {
    fn new() -> Sandbox {
        let dir = tempfile::Builder::new().prefix("nwh-serve-e2e-").tempdir_in("/tmp").unwrap().keep();
        let conf = dir.join("conf");
        std::fs::create_dir_all(&conf).unwrap();
        std::fs::create_dir_all(dir.join("home")).unwrap();
        std::fs::create_dir_all(dir.join("state")).unwrap();
        let sandbox_paths: Vec<&str> =
            ["/bin", "/lib", "/lib64", "/usr"].into_iter().filter(|p| Path::new(p).exists()).collect();
        std::fs::write(
            conf.join("nix.conf"),
            format!(
                "build-users-group =\nsubstituters =\nsandbox = true\nsandbox-paths = {}\n",
                sandbox_paths.join(" ")
            ),
        )
        .unwrap();
        Sandbox { dir }
    }

    fn local(&self) -> PathBuf {
        self.dir.join("local")
    }

    fn remote(&self) -> PathBuf {
        self.dir.join("remote")
    }

    /// A Nix command that sees only our configuration.
    fn nix(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("NIX_CONF_DIR", self.dir.join("conf"))
            .env("NIX_USER_CONF_FILES", self.dir.join("conf/nix.conf"))
            .env("NIX_STATE_DIR", self.dir.join("state"))
            .env("HOME", self.dir.join("home"))
            .env("XDG_CACHE_HOME", self.dir.join("home/.cache"))
            .env_remove("NIX_CONFIG")
            .env_remove("NIX_REMOTE")
            .current_dir(&self.dir);
        cmd
    }

    fn run(&self, program: &str, args: &[&str]) -> Output {
        let out = self.nix(program).args(args).stdin(Stdio::null()).output().unwrap();
        assert!(
            out.status.success(),
            "{program} {args:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn run_text(&self, program: &str, args: &[&str]) -> String {
        String::from_utf8(self.run(program, args).stdout).unwrap().trim().to_string()
    }

    /// Where a store path of a chroot store is on disk.
    fn real(store: &Path, path: &str) -> PathBuf {
        store.join(path.trim_start_matches('/'))
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        fn writable(p: &Path) {
            let Ok(meta) = std::fs::symlink_metadata(p) else { return };
            if meta.is_dir() {
                use std::os::unix::fs::PermissionsExt;
                let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755));
                if let Ok(entries) = std::fs::read_dir(p) {
                    for e in entries.flatten() {
                        writable(&e.path());
                    }
                }
            }
        }
        writable(&self.dir);
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("could not remove {}: {e}", self.dir.display());
        }
    }
}

const EXPRS: &str = r#"
let
  mk = name: script: extra: builtins.derivation ({
    inherit name;
    system = builtins.currentSystem;
    builder = "/bin/sh";
    PATH = "/bin:/usr/bin";
    args = [ "-c" script ];
  } // extra);
in rec {
  dep = mk "nwh-serve-e2e-dep" ''
    mkdir -p $out/bin $out/share/deep/er
    printf 'hello\n' > $out/share/hello
    : > $out/share/empty
    printf '#!/bin/sh\necho hi\n' > $out/bin/hi
    chmod +x $out/bin/hi
    ln -s ../share/hello $out/bin/link
    echo deep > $out/share/deep/er/file
  '' {};
  ref = mk "nwh-serve-e2e-ref" "echo ${dep} > $out" {};
  top = mk "nwh-serve-e2e-top" "cat ${ref} > $out; cat ${dep}/share/hello >> $out; echo log > $log"
    { outputs = [ "out" "log" ]; };
  fail = mk "nwh-serve-e2e-fail" "echo failing on purpose >&2; exit 3" {};
}
"#;

/// `nix-store --serve --write` on the remote store, with its stderr collected.
struct Server {
    child: Child,
    stderr: Arc<Mutex<Vec<u8>>>,
    stop_watchdog: mpsc::Sender<()>,
}

impl Server {
    fn start(sb: &Sandbox) -> (Server, ChildStdout, ChildStdin) {
        let remote = sb.remote();
        let mut child = sb
            .nix("nix-store")
            .args(["--serve", "--write", "--store"])
            .arg(&remote)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut err_pipe = child.stderr.take().unwrap();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err_pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        // A hung conversation must fail the test, not hang it: kill our own child by pid.
        let (stop_watchdog, stopped) = mpsc::channel::<()>();
        let pid = child.id().to_string();
        std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(Duration::from_secs(300)) {
                eprintln!("nix-store --serve (pid {pid}) still running after 300 s: killing it");
                let _ = Command::new("kill").args(["-9", &pid]).status();
            }
        });
        (Server { child, stderr, stop_watchdog }, stdout, stdin)
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    fn wait(mut self) -> (std::process::ExitStatus, String) {
        let status = self.child.wait().unwrap();
        let _ = self.stop_watchdog.send(());
        // The stderr thread ends with the pipe; give it a moment to drain.
        std::thread::sleep(Duration::from_millis(100));
        (status, self.stderr())
    }
}

/// `ref` and `dep` (which `ref` refers to), built in the sandbox's local store.
fn inputs(sb: &Sandbox) -> (String, String) {
    std::fs::write(sb.dir.join("exprs.nix"), EXPRS).unwrap();
    let local = sb.local();
    let built = sb.run_text(
        "nix-build",
        &["--store", local.to_str().unwrap(), "--no-out-link", "exprs.nix", "-A", "ref", "-A", "dep"],
    );
    let built: Vec<&str> = built.lines().collect();
    (built[0].to_string(), built[1].to_string())
}

fn local_info(sb: &Sandbox, path: &str) -> PathInfo {
    let local = sb.local();
    let store = local.to_str().unwrap();
    let q = |flag: &str| sb.run_text("nix-store", &["--store", store, "-q", flag, path]);
    let deriver = q("--deriver");
    PathInfo {
        deriver: (deriver != "unknown-deriver").then_some(deriver),
        references: q("--references").lines().map(str::to_string).collect(),
        download_size: 0,
        nar_size: q("--size").parse().unwrap(),
        nar_hash: q("--hash"),
        ca: None,
        sigs: BTreeSet::new(),
    }
}

/// `dep` and `ref` in the local store, as the client uploads them and as the remote must
/// give them back.
struct Local {
    store: PathBuf,
    /// `store` as a command-line argument.
    store_arg: String,
    ref_path: String,
    dep_path: String,
    export_dep: Vec<u8>,
    export_both: Vec<u8>,
    ref_nar: Vec<u8>,
    dep_nar: Vec<u8>,
    dep_info: PathInfo,
    ref_info: PathInfo,
}

impl Local {
    fn new(sb: &Sandbox) -> Local {
        let (ref_path, dep_path) = inputs(sb);
        let local = sb.local();
        let local_s = local.to_str().unwrap().to_string();
        let export_dep = sb.run("nix-store", &["--store", &local_s, "--export", &dep_path]).stdout;
        let export_both =
            sb.run("nix-store", &["--store", &local_s, "--export", &dep_path, &ref_path]).stdout;
        let ref_nar =
            sb.run("nix-store", &["--dump", Sandbox::real(&local, &ref_path).to_str().unwrap()]).stdout;
        let dep_nar =
            sb.run("nix-store", &["--dump", Sandbox::real(&local, &dep_path).to_str().unwrap()]).stdout;
        let dep_info = local_info(sb, &dep_path);
        let ref_info = local_info(sb, &ref_path);
        assert_eq!(ref_info.references, BTreeSet::from([dep_path.clone()]));
        Local {
            store: local,
            store_arg: local_s,
            ref_path,
            dep_path,
            export_dep,
            export_both,
            ref_nar,
            dep_nar,
            dep_info,
            ref_info,
        }
    }

    /// The info of `dep` or `ref`.
    fn info(&self, path: &str) -> &PathInfo {
        if *path == self.dep_path {
            &self.dep_info
        } else {
            &self.ref_info
        }
    }

    fn both(&self) -> [&str; 2] {
        [self.dep_path.as_str(), self.ref_path.as_str()]
    }
}

type Client = ServeClient<ChildStdout, ChildStdin>;

#[test]
fn against_nix_store_serve() {
    if let Some(reason) = skip_reason() {
        eprintln!("skipping the real-Nix test: {reason}");
        return;
    }
    let sb = Sandbox::new();
    let l = Local::new(&sb);

    let (server, stdout, stdin) = Server::start(&sb);
    let mut c = ServeClient::handshake("local nix-store --serve", stdout, stdin)
        .unwrap_or_else(|e| panic!("{e}; server stderr: {}", server.stderr()));
    assert_eq!(c.remote_version(), 0x207, "Nix 2.4 and later speak 2.7");
    assert_eq!(c.version(), 0x207);

    let missing = "/nix/store/00000000000000000000000000000000-nwh-missing";
    upload_both(&mut c, &l);
    check_remote_infos(&mut c, &l, missing);
    download_both(&mut c, &sb, &l);
    build_on_the_remote(&mut c, &sb, &l, &server);

    // An error on the server ends the session; the message is on its stderr.
    let err = c.dump_store_path(missing, &mut Vec::new()).unwrap_err();
    assert!(matches!(err, ServeError::Eof { during: "DumpStorePath", .. }), "{err:?}");
    assert!(err.is_disconnect());
    drop(c);
    let (status, stderr) = server.wait();
    assert!(!status.success());
    assert!(stderr.contains(missing) && stderr.contains("is not valid"), "{stderr}");
}

/// Into an empty store: `dep` with ImportPaths, then `ref` (which refers to it) with
/// AddToStoreNar.
fn upload_both(c: &mut Client, l: &Local) {
    let both = l.both();
    assert!(c.query_valid_paths(both, false, false).unwrap().is_empty());
    assert!(c.query_path_infos(both).unwrap().is_empty());

    let entries = c.import_paths(&mut &l.export_dep[..]).unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].nar.nar_hash(), l.dep_info.nar_hash);
    assert_eq!(c.query_valid_paths(both, false, false).unwrap(), BTreeSet::from([l.dep_path.clone()]));
    c.add_to_store_nar(&l.ref_path, &l.ref_info, &mut BufReader::new(&l.ref_nar[..])).unwrap();
    assert_eq!(c.query_valid_paths(both, true, false).unwrap(), BTreeSet::from(both.map(String::from)));
}

/// Path infos as the remote sees them: what we sent, hashed by the server itself.
fn check_remote_infos(c: &mut Client, l: &Local, missing: &str) {
    let infos = c.query_path_infos([l.dep_path.as_str(), l.ref_path.as_str(), missing]).unwrap();
    assert_eq!(infos.len(), 2);
    for (path, info) in &infos {
        let expect = l.info(path);
        assert_eq!(info.nar_hash, expect.nar_hash, "{path}");
        assert_eq!(info.nar_size, expect.nar_size, "{path}");
        assert_eq!(info.references, expect.references, "{path}");
        assert_eq!(info.deriver, expect.deriver, "{path}");
        assert!(info.deriver.is_some(), "{path}: the deriver travels with both upload commands");
        assert_eq!(info.ca, None);
    }
}

fn download_both(c: &mut Client, sb: &Sandbox, l: &Local) {
    // DumpStorePath gives what `nix-store --dump` gives.
    let remote = sb.remote();
    for (path, nar) in [(&l.dep_path, &l.dep_nar), (&l.ref_path, &l.ref_nar)] {
        let mut got = Vec::new();
        let summary = c.dump_store_path(path, &mut got).unwrap();
        assert_eq!(&got, nar, "{path}");
        assert_eq!(summary.nar_hash(), l.info(path).nar_hash);
        let remote_dump =
            sb.run("nix-store", &["--dump", Sandbox::real(&remote, path).to_str().unwrap()]).stdout;
        assert_eq!(&remote_dump, nar, "{path} on the remote");
    }

    // ExportPaths gives what `nix-store --export` of the local store gave, dependencies first.
    let mut exported = Vec::new();
    let entries = c.export_paths([l.ref_path.as_str(), l.dep_path.as_str()], &mut exported).unwrap();
    assert_eq!(
        entries.iter().map(|e| e.path.clone()).collect::<Vec<_>>(),
        [l.dep_path.clone(), l.ref_path.clone()]
    );
    assert_eq!(exported, l.export_both);
    assert_eq!(copy_export(&mut &exported[..], &mut std::io::sink()).unwrap(), entries);
}

fn build_on_the_remote(c: &mut Client, sb: &Sandbox, l: &Local, server: &Server) {
    // BuildDerivation of a derivation with an input derivation: its inputs are the closure.
    let remote = sb.remote();
    let top_drv_path = sb.run_text("nix-instantiate", &["--store", &l.store_arg, "exprs.nix", "-A", "top"]);
    let top = Derivation::read(Sandbox::real(&l.store, &top_drv_path)).unwrap();
    assert_eq!(top.input_drvs.len(), 2);
    let closure: BTreeSet<String> = l.both().iter().map(|s| s.to_string()).collect();
    let basic = top.to_basic(&closure);
    let options =
        BuildOptions { max_silent_time: 60, build_timeout: 120, max_log_size: 1 << 20, keep_failed: false };
    let result = c.build_derivation(&top_drv_path, &basic, &options).unwrap();
    assert_eq!(result.status, BuildStatus::Built, "{}; server stderr: {}", result.error_msg, server.stderr());
    assert_eq!(result.times_built, 1);
    assert!(result.stop_time >= result.start_time && result.start_time > 0);
    assert_eq!(result.built_output_paths("/nix/store").unwrap(), top.output_paths());
    let out = &top.output_paths()["out"];
    let content = std::fs::read_to_string(Sandbox::real(&remote, out)).unwrap();
    assert_eq!(content, format!("{}\nhello\n", l.dep_path));
    assert!(c.query_valid_paths(top.output_paths().values(), false, false).unwrap().len() == 2);

    // Building it again: nothing to do.
    let again = c.build_derivation(&top_drv_path, &basic, &options).unwrap();
    assert_eq!(again.status, BuildStatus::AlreadyValid);
    assert!(again.is_success());

    // A failing builder is a result, not a broken connection.
    let fail_drv_path = sb.run_text("nix-instantiate", &["--store", &l.store_arg, "exprs.nix", "-A", "fail"]);
    let fail = Derivation::read(Sandbox::real(&l.store, &fail_drv_path)).unwrap();
    let result = c.build_derivation(&fail_drv_path, &fail.to_basic(&BTreeSet::new()), &options).unwrap();
    assert_eq!(result.status, BuildStatus::PermanentFailure);
    assert!(result.error_msg.contains("exit code 3"), "{}", result.error_msg);
    assert!(server.stderr().contains("failing on purpose"), "the build log goes to stderr");
    assert!(c.query_valid_paths([out.as_str()], false, false).unwrap().len() == 1);
}

#[test]
fn without_write_mutating_commands_end_the_session() {
    if let Some(reason) = skip_reason() {
        eprintln!("skipping the real-Nix test: {reason}");
        return;
    }
    let sb = Sandbox::new();
    let mut child = sb
        .nix("nix-store")
        .args(["--serve", "--store"])
        .arg(sb.remote())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let stdin = child.stdin.take().unwrap();
    let mut c = ServeClient::handshake("read-only", stdout, stdin).unwrap();
    assert!(c
        .query_valid_paths(["/nix/store/00000000000000000000000000000000-x"], false, false)
        .unwrap()
        .is_empty());
    let err = c.import_paths(&mut &0u64.to_le_bytes()[..]).unwrap_err();
    assert!(err.is_disconnect(), "{err:?}");
    drop(c);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("importing paths is not allowed"), "{stderr}");
}

/// Uploads sent back to back, the replies read at the end (or by the next command): the
/// server stores each as it comes, references first.
#[test]
fn uploads_sent_without_waiting_are_all_stored() {
    if let Some(reason) = skip_reason() {
        eprintln!("skipping the real-Nix test: {reason}");
        return;
    }
    let sb = Sandbox::new();
    let (ref_path, dep_path) = inputs(&sb);
    let local = sb.local();
    let nar = |p: &str| sb.run("nix-store", &["--dump", Sandbox::real(&local, p).to_str().unwrap()]).stdout;
    let (server, stdout, stdin) = Server::start(&sb);
    let mut c = ServeClient::handshake("local nix-store --serve", stdout, stdin)
        .unwrap_or_else(|e| panic!("{e}; server stderr: {}", server.stderr()));
    c.send_nar(&dep_path, &local_info(&sb, &dep_path), &mut &nar(&dep_path)[..]).unwrap();
    c.send_nar(&ref_path, &local_info(&sb, &ref_path), &mut &nar(&ref_path)[..]).unwrap();
    assert!(!c.is_clean(), "two replies are still to be read");
    // The next command reads them first.
    let both = [dep_path.as_str(), ref_path.as_str()];
    assert_eq!(c.query_valid_paths(both, false, false).unwrap(), BTreeSet::from(both.map(String::from)));
    assert!(c.is_clean());
    c.wait_for_uploads().unwrap();
}
