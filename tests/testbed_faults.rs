//! Faults on the test bed, each at a known phase of a build: the hook killed (SIGKILL to its
//! process group) while it waits for a slot, uploads, waits for the build, downloads or
//! registers; the same stopped as Nix stops it (SIGTERM to the group, SIGKILL 500 ms later),
//! where it must exit before the SIGKILL and leave no invalid output on disk; and the builder stopped mid-build, frozen mid-upload, cut off
//! mid-download; behind the builder front-end, Nix's own hook killed by its process group with
//! our builder in it. The phase is read from the timeline the hook writes (`NWH_TIMELINE`), so a
//! fault lands where it is meant to, and the same timeline shows afterwards that it did (the
//! process was still in that phase when the fault came): a fault that came too late fails the
//! test instead of testing another phase. Afterwards, whatever happened: `nix-store --verify
//! --check-contents` is clean on the master and the builder, a path valid on the master is
//! complete, no slot is held, and the next build of the same derivation works. On the oldest
//! and the newest Nix of the test bed, for the hook front-end and the builder front-end.

use std::path::PathBuf;
use std::process::{Child, Output};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::support::hook::OurHook;
use crate::support::procs;
use crate::support::testbed::{describe, out_paths, sh_derivation, unique_nonce, Nix, Opts, Testbed};
use crate::support::tool::stderr;

macro_rules! on_oldest_and_newest_nix {
    ($($test:ident),* $(,)?) => {
        mod nix_2_8 { $( #[test] #[cfg_attr(not(nwh_testbed), ignore = "needs root and the test bed (nix-build, sshd, ip, unshare): cargo xtask test sets it up")] fn $test() { super::$test($crate::support::testbed::Nix::V2_8) } )* }
        mod nix_2_34 { $( #[test] #[cfg_attr(not(all(nwh_testbed, nwh_nix_roots)), ignore = "needs root, the test bed and the root file systems of Nix 2.26 and 2.34: cargo xtask test makes them")] fn $test() { super::$test($crate::support::testbed::Nix::V2_34) } )* }
    };
}

on_oldest_and_newest_nix!(
    the_hook_killed_waiting_for_a_slot,
    the_hook_killed_uploading,
    the_hook_killed_while_the_builder_builds,
    the_hook_killed_downloading,
    the_hook_killed_registering,
    the_builder_stopped_mid_build,
    the_builder_frozen_mid_upload,
    the_builder_cut_off_mid_download,
    the_builder_front_end_killed_uploading,
    the_builder_front_end_killed_while_the_builder_builds,
    the_builder_front_end_killed_downloading,
    nixs_hook_killed_uploading_to_the_builder_front_end,
    nixs_hook_killed_while_the_builder_front_end_builds,
    nixs_hook_killed_downloading_from_the_builder_front_end,
    the_builder_stopped_mid_build_behind_the_builder_front_end,
    the_builder_frozen_mid_upload_behind_the_builder_front_end,
    the_builder_cut_off_mid_download_behind_the_builder_front_end,
    the_hook_terminated_waiting_for_a_slot,
    the_hook_terminated_uploading,
    the_hook_terminated_while_the_builder_builds,
    the_hook_terminated_downloading,
    the_hook_terminated_registering,
    the_hook_terminated_right_after_unpacking,
    the_builder_front_end_terminated_uploading,
    the_builder_front_end_terminated_downloading,
);

/// How the build reaches the builder.
#[derive(Clone, Copy, PartialEq)]
enum Front {
    Hook,
    Builder,
}

/// The size of a scene's input, fresh random bytes: its upload lasts long enough for a fault
/// to land in it (each test checks that it did), and no longer.
const INPUT_MIB: u32 = 16;
/// The size of a scene's output: likewise for the download.
const OUTPUT_MIB: u32 = 16;
/// Seconds the build sleeps on the builder in a scene whose fault comes while it builds: the
/// fault lands within milliseconds of the build's start (each test checks that it did).
const BUILDING: &str = "1";
/// Seconds the build holding the slot sleeps while another nix-build starts, decides and is
/// seen waiting for 300 ms: a new nix-build takes a second or more to get there.
const HOLDING: &str = "3";

/// One builder of one slot, a build with an [`INPUT_MIB`] input and an [`OUTPUT_MIB`] output,
/// sleeping `seconds` on the builder.
struct Scene {
    tb: Testbed,
    hook: OurHook,
    front: Front,
    expr: String,
    output: String,
    /// The derivation and its input, added to the master's store for this scene.
    made: Vec<String>,
    timeline: tempfile::TempDir,
    /// Programs our hook finds first in its `PATH`, if any.
    programs: Option<tempfile::TempDir>,
}

impl Scene {
    fn new(nix: Nix, front: Front, seconds: &str) -> Option<Scene> {
        Scene::with_hook(nix, front, seconds, |tb| match front {
            Front::Hook => OurHook::new(&[]),
            Front::Builder => OurHook::as_builder(&tb.machine(1), &[]),
        })
    }

    /// Our hook registering outputs through a `nix-store` that waits `seconds` before it
    /// registers, and is Nix's own otherwise: a fault after "unpacked" lands while it runs.
    fn registering_slowly(nix: Nix, seconds: u32) -> Option<Scene> {
        let programs = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let shim = programs.path().join("nix-store");
        let script = format!(
            "#!/bin/sh\nif [ \"$1\" = --register-validity ]; then /bin/sleep {seconds}; fi\n\
             PATH=${{PATH#*:}} exec nix-store \"$@\"\n"
        );
        std::fs::write(&shim, script).unwrap();
        std::fs::set_permissions(&shim, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let mut scene =
            Scene::with_hook(nix, Front::Hook, "0", |_| OurHook::with_programs_from(programs.path()))?;
        scene.programs = Some(programs);
        Some(scene)
    }

    fn with_hook(
        nix: Nix,
        front: Front,
        seconds: &str,
        hook: impl FnOnce(&Testbed) -> OurHook,
    ) -> Option<Scene> {
        let tb = Testbed::up_or_skip_as(nix, 1, Opts::default())?;
        let hook = hook(&tb);
        let nonce = unique_nonce();
        let timeline = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let input = timeline.path().join(format!("nwh-fault-input-{nonce}"));
        let mut random = std::fs::File::open("/dev/urandom").unwrap();
        let mut file = std::fs::File::create(&input).unwrap();
        std::io::copy(&mut std::io::Read::take(&mut random, u64::from(INPUT_MIB) << 20), &mut file).unwrap();
        let added = tb.master_store(&["--add", &input.display().to_string()]);
        assert!(added.status.success(), "{}", describe(&added));
        let input = String::from_utf8_lossy(&added.stdout).trim().to_string();
        let expr = format!(
            r#"builtins.derivation {{ name = "nwh-fault"; nonce = "{nonce}"; system = builtins.currentSystem;
  builder = "/bin/sh"; input = builtins.storePath "{input}";
  args = [ "-c" "/bin/sleep {seconds}; /bin/mkdir $out; /bin/dd if=/dev/zero of=$out/zeros bs=1M count={OUTPUT_MIB} 2>/dev/null; echo done > $out/end" ]; }}"#
        );
        let drv = tb.master_cmd(&["nix-instantiate", "-E", &expr]).output().unwrap();
        assert!(drv.status.success(), "{}", describe(&drv));
        let drv = String::from_utf8_lossy(&drv.stdout).trim().to_string();
        let output = tb.master_store(&["--query", "--outputs", &drv]);
        let output = String::from_utf8_lossy(&output.stdout).trim().to_string();
        let made = vec![drv, input];
        Some(Scene { tb, hook, front, expr, output, made, timeline, programs: None })
    }

    fn timeline_file(&self) -> PathBuf {
        self.timeline.path().join("timeline.jsonl")
    }

    fn args(&self) -> Vec<String> {
        let line = match self.front {
            Front::Hook => self.tb.machine(1),
            Front::Builder => self.hook.builder_line(4, "-"),
        };
        let mut args: Vec<String> =
            ["--max-jobs", "0", "--option", "builders", &line].map(String::from).into();
        if self.front == Front::Hook {
            args.extend(["--option".into(), "build-hook".into(), self.hook.path.clone()]);
        }
        args
    }

    /// `nix-build` of the scene's derivation, started; our processes write the timeline.
    fn start(&self, expr: &str) -> Child {
        let args = self.args();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut cmd = self.tb.nix_build_cmd(expr, &args);
        cmd.env(nix_wasm_hook::core::timeline::VARIABLE, self.timeline_file());
        cmd.spawn().unwrap()
    }

    /// Waits until one of our processes working on a derivation named `name` reaches `phase`;
    /// returns its PID.
    fn reached(&self, child: &mut Child, name: &str, phase: &str) -> u32 {
        let suffix = format!("-{name}.drv");
        let what = format!("{name} reached {phase}");
        self.reached_where(child, &what, |m| {
            m["phase"] == phase && m["drv"].as_str().is_some_and(|d| d.ends_with(&suffix))
        })
    }

    /// Waits for a timeline mark that `wanted` picks; returns the PID that wrote it.
    fn reached_where(
        &self,
        child: &mut Child,
        what: &str,
        wanted: impl Fn(&serde_json::Value) -> bool,
    ) -> u32 {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let text = std::fs::read_to_string(self.timeline_file()).unwrap_or_default();
            let found = text
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find(|m| wanted(m));
            if let Some(m) = found {
                return m["pid"].as_u64().unwrap() as u32;
            }
            assert!(child.try_wait().unwrap().is_none(), "nix-build ended before {what}");
            assert!(Instant::now() < deadline, "never {what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// The marks `pid` wrote, as (phase, unix microseconds), in order.
    fn marks_of(&self, pid: u32) -> Vec<(String, u64)> {
        let text = std::fs::read_to_string(self.timeline_file()).unwrap_or_default();
        let mut marks: Vec<(String, u64)> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|m| m["pid"] == pid)
            .filter_map(|m| Some((m["phase"].as_str()?.to_string(), m["us"].as_u64()?)))
            .collect();
        marks.sort_by_key(|(_, us)| *us);
        marks
    }

    /// `pid` was still in `phase` (had reached it and not the next) at `at`: the fault sent
    /// then landed where the test means it to. Says how far into the phase that was and how
    /// much of it was left, the margin of the scene's sizes and sleeps.
    fn was_in(&self, pid: u32, phase: &str, at: SystemTime) {
        let at = at.duration_since(UNIX_EPOCH).unwrap().as_micros() as u64;
        let marks = self.marks_of(pid);
        let before = marks.iter().rfind(|(_, us)| *us <= at);
        let text = std::fs::read_to_string(self.timeline_file()).unwrap_or_default();
        assert_eq!(
            before.map(|(p, _)| p.as_str()),
            Some(phase),
            "the fault came too late for its phase; the timeline:\n{text}"
        );
        let into = at - before.unwrap().1;
        let left =
            marks.iter().find(|(_, us)| *us > at).map(|(p, us)| format!("{p} {} ms later", (us - at) / 1000));
        eprintln!(
            "testbed: the fault came {} ms into {phase}; then {}",
            into / 1000,
            left.as_deref().unwrap_or("no mark")
        );
    }

    /// An output that is not valid on the master is not on its disk either: what our hook
    /// unpacked and did not register was removed, not left for the next attempt. Behind the
    /// builder front-end it is Nix's own hook that unpacks, and stopped mid-import it leaves its
    /// remains for its next attempt: not ours to assert on.
    fn no_invalid_remains(&self) {
        if self.front == Front::Hook
            && !self.tb.master_store(&["--check-validity", &self.output]).status.success()
        {
            let remains = self.tb.master_path(&self.output).symlink_metadata().is_ok();
            assert!(!remains, "invalid remains of {} are left on the master's disk", self.output);
        }
    }

    /// What must hold after any fault: both stores verify, the output is valid on the master
    /// only if complete, no slot is held, and the same derivation builds again.
    fn afterwards(&self) {
        let master = self.tb.master_store(&["--verify", "--check-contents"]);
        assert!(master.status.success() && !stderr(&master).contains("modified"), "{}", describe(&master));
        let builder = self.tb.exec(1, &["nix-store", "--verify", "--check-contents"]);
        assert!(builder.status.success() && !stderr(&builder).contains("modified"), "{}", describe(&builder));
        if self.tb.master_store(&["--check-validity", &self.output]).status.success() {
            let end = std::fs::read_to_string(self.tb.master_path(&format!("{}/end", self.output))).unwrap();
            assert_eq!(end, "done\n", "a valid output is complete");
        }
        let load = nwh_slots::LoadDir::open(self.tb.master_path("/nix/var/nix/current-load"));
        let main = load.lock_main().unwrap();
        assert_eq!(load.scan(&main, &self.tb.uri(1), 1).unwrap().in_use, 0, "no slot is held");
        drop(main);
        let args = self.args();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let again = self.tb.nix_build(&self.expr, &args);
        assert!(again.status.success(), "the next build of the same derivation works: {}", describe(&again));
        assert_eq!(out_paths(&again), [self.output.as_str()]);
        let end = std::fs::read_to_string(self.tb.master_path(&format!("{}/end", self.output))).unwrap();
        assert_eq!(end, "done\n");
    }
}

impl Drop for Scene {
    fn drop(&mut self) {
        // The master's store outlives the test bed: a hundred megabytes a test, and the input
        // another 64 MiB. The output first and alone: its derivation may still be in use.
        let _ = self.tb.master_store(&["--delete", &self.output]);
        let made: Vec<&str> = self.made.iter().map(String::as_str).collect();
        let _ = self.tb.master_store(&[&["--delete"][..], &made].concat());
    }
}

/// SIGKILL to the process group of `pid`, as Nix ends its hook.
fn kill_group(pid: u32) {
    let group = rustix::process::Pid::from_raw(pid as i32).unwrap();
    rustix::process::kill_process_group(group, rustix::process::Signal::KILL).unwrap();
}

/// How long Nix waits after its SIGTERM before it sends SIGKILL.
const NIX_GRACE: Duration = Duration::from_millis(500);

/// SIGTERM to the process group `group`, and SIGKILL after [`NIX_GRACE`], as Nix stops its
/// hook; returns how long `ours` (in that group) took to exit, if it did before the SIGKILL.
fn terminate_group(group: u32, ours: u32) -> Option<Duration> {
    let group = rustix::process::Pid::from_raw(group as i32).unwrap();
    let sent = Instant::now();
    if let Err(e) = rustix::process::kill_process_group(group, rustix::process::Signal::TERM) {
        // Only where the phase is the last one: ours was done before the signal.
        assert_eq!(e, rustix::io::Errno::SRCH, "SIGTERM to the group");
        assert!(ended(ours));
        eprintln!("testbed: ours had exited before SIGTERM");
        return Some(Duration::ZERO);
    }
    while sent.elapsed() < NIX_GRACE {
        if ended(ours) {
            eprintln!("testbed: ours exited {:?} after SIGTERM", sent.elapsed());
            return Some(sent.elapsed());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
    None
}

/// True once `pid` has exited: gone, or a zombie its parent has not reaped yet.
fn ended(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat.rsplit_once(") ").is_none_or(|(_, rest)| rest.starts_with(['Z', 'X'])),
    }
}

fn finish(child: Child) -> Output {
    child.wait_with_output().unwrap()
}

/// What is killed.
#[derive(Clone, Copy, PartialEq)]
enum Victim {
    /// Our process (the hook, or the builder front-end) and its process group, as Nix ends
    /// its hook.
    OurGroup,
    /// Our builder front-end alone: Nix's own hook sees its builder die.
    OurBuilder,
    /// Nix's own hook, by its process group as Nix ends it, with our builder front-end in it:
    /// `ssh://localhost` runs the remote program as the hook's child, without ssh.
    NixsHookGroup,
}

/// The process group of `pid` when it is that of Nix's own hook (`nix __build-remote` or
/// `build-remote`), which leads its group.
fn nixs_hook_group(pid: u32) -> u32 {
    let pid = rustix::process::Pid::from_raw(pid as i32).unwrap();
    let group = rustix::process::getpgid(Some(pid)).unwrap().as_raw_nonzero().get() as u32;
    let ours = rustix::process::getpgrp().as_raw_nonzero().get() as u32;
    assert_ne!(group, ours, "our builder front-end is in the test's own process group");
    let cmdline = std::fs::read(format!("/proc/{group}/cmdline")).unwrap();
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    assert!(
        cmdline.contains("build-remote"),
        "the group of our builder is led by {cmdline:?}, not Nix's hook"
    );
    group
}

/// The hook killed at `phase` (the next phase mark not yet written): the build fails, and all
/// of [`Scene::afterwards`] holds.
fn hook_killed_after(nix: Nix, front: Front, phase: &str, seconds: &str) {
    let victim = if front == Front::Hook { Victim::OurGroup } else { Victim::OurBuilder };
    killed_after(nix, front, victim, phase, seconds)
}

fn killed_after(nix: Nix, front: Front, victim: Victim, phase: &str, seconds: &str) {
    let Some(scene) = Scene::new(nix, front, seconds) else { return };
    let mut child = scene.start(&scene.expr);
    let pid = scene.reached(&mut child, "nwh-fault", phase);
    let at = SystemTime::now();
    match victim {
        Victim::OurGroup => kill_group(pid),
        Victim::OurBuilder => crate::support::procs::kill(pid),
        Victim::NixsHookGroup => kill_group(nixs_hook_group(pid)),
    }
    let first = finish(child);
    // Killed while registering, the outputs may already be valid: then the build succeeded.
    if phase != "unpacked" {
        assert!(!first.status.success(), "the interrupted build fails: {}", describe(&first));
        scene.was_in(pid, phase, at);
    }
    scene.afterwards();
}

fn the_hook_killed_uploading(nix: Nix) {
    hook_killed_after(nix, Front::Hook, "session", "0");
}

fn the_hook_killed_while_the_builder_builds(nix: Nix) {
    hook_killed_after(nix, Front::Hook, "uploaded", BUILDING);
}

fn the_hook_killed_downloading(nix: Nix) {
    hook_killed_after(nix, Front::Hook, "built", "0");
}

fn the_hook_killed_registering(nix: Nix) {
    hook_killed_after(nix, Front::Hook, "unpacked", "0");
}

fn the_builder_front_end_killed_uploading(nix: Nix) {
    hook_killed_after(nix, Front::Builder, "session", "0");
}

fn the_builder_front_end_killed_while_the_builder_builds(nix: Nix) {
    hook_killed_after(nix, Front::Builder, "uploaded", BUILDING);
}

fn the_builder_front_end_killed_downloading(nix: Nix) {
    hook_killed_after(nix, Front::Builder, "built", "0");
}

fn nixs_hook_killed_uploading_to_the_builder_front_end(nix: Nix) {
    killed_after(nix, Front::Builder, Victim::NixsHookGroup, "session", "0");
}

fn nixs_hook_killed_while_the_builder_front_end_builds(nix: Nix) {
    killed_after(nix, Front::Builder, Victim::NixsHookGroup, "uploaded", BUILDING);
}

fn nixs_hook_killed_downloading_from_the_builder_front_end(nix: Nix) {
    killed_after(nix, Front::Builder, Victim::NixsHookGroup, "built", "0");
}

/// Our process stopped at `phase` as Nix stops its hook: SIGTERM to the process group (our
/// hook's, or that of Nix's own hook with our builder front-end in it), SIGKILL 500 ms later.
/// Ours exits before the SIGKILL, the build fails, no invalid remains of the output are left on
/// the master's disk, and all of [`Scene::afterwards`] holds.
fn terminated_after(scene: Scene, phase: &str) {
    terminated_once(scene, phase, |_| true, |_| ())
}

/// [`terminated_after`], once `ready` holds too; `check` looks at the scene after the stopped
/// build, before [`Scene::afterwards`].
fn terminated_once(scene: Scene, phase: &str, ready: impl Fn(&Scene) -> bool, check: impl FnOnce(&Scene)) {
    let mut child = scene.start(&scene.expr);
    let ours = scene.reached(&mut child, "nwh-fault", phase);
    let deadline = Instant::now() + Duration::from_secs(120);
    while !ready(&scene) {
        assert!(child.try_wait().unwrap().is_none(), "nix-build ended before the fault");
        assert!(Instant::now() < deadline, "the moment for the fault never came");
        std::thread::sleep(Duration::from_millis(1));
    }
    let group = match scene.front {
        Front::Hook => ours,
        Front::Builder => nixs_hook_group(ours),
    };
    let at = SystemTime::now();
    let took = terminate_group(group, ours);
    let first = finish(child);
    assert!(took.is_some(), "ours was still running {NIX_GRACE:?} after SIGTERM, and got SIGKILL");
    assert!(!first.status.success(), "the stopped build fails: {}", describe(&first));
    scene.was_in(ours, phase, at);
    scene.no_invalid_remains();
    check(&scene);
    scene.afterwards();
}

fn the_hook_terminated_uploading(nix: Nix) {
    let Some(scene) = Scene::new(nix, Front::Hook, "0") else { return };
    terminated_after(scene, "session");
}

fn the_hook_terminated_while_the_builder_builds(nix: Nix) {
    let Some(scene) = Scene::new(nix, Front::Hook, BUILDING) else { return };
    terminated_after(scene, "uploaded");
}

/// Once the output has begun to be unpacked on the master's disk.
fn the_hook_terminated_downloading(nix: Nix) {
    let Some(scene) = Scene::new(nix, Front::Hook, "0") else { return };
    terminated_once(
        scene,
        "built",
        |scene| scene.tb.master_path(&scene.output).symlink_metadata().is_ok(),
        |_| (),
    );
}

/// After "unpacked", while `nix-store --register-validity` runs (held up for 2 s by a stand-in
/// that then runs Nix's): the output on disk is not valid yet, and must not stay there.
fn the_hook_terminated_registering(nix: Nix) {
    let Some(scene) = Scene::registering_slowly(nix, 2) else { return };
    terminated_after(scene, "unpacked");
}

/// Right after "unpacked", with Nix's own `nix-store`: the signal lands as the registration
/// starts or runs (and ends it), or after it. The output is then valid and complete, or gone
/// from the disk; the build fails unless the registration was done before the signal.
fn the_hook_terminated_right_after_unpacking(nix: Nix) {
    let Some(scene) = Scene::new(nix, Front::Hook, "0") else { return };
    let mut child = scene.start(&scene.expr);
    let ours = scene.reached(&mut child, "nwh-fault", "unpacked");
    let took = terminate_group(ours, ours);
    let first = finish(child);
    assert!(took.is_some(), "ours was still running {NIX_GRACE:?} after SIGTERM, and got SIGKILL");
    let valid = scene.tb.master_store(&["--check-validity", &scene.output]).status.success();
    eprintln!(
        "testbed: the build {}; the output is {}",
        first.status,
        if valid { "valid" } else { "not valid" }
    );
    if !valid {
        assert!(!first.status.success(), "{}", describe(&first));
    }
    scene.no_invalid_remains();
    scene.afterwards();
}

fn the_builder_front_end_terminated_uploading(nix: Nix) {
    let Some(scene) = Scene::new(nix, Front::Builder, "0") else { return };
    terminated_after(scene, "session");
}

/// With a session lent by the keeper of warm sessions (two builds before leave it one): the
/// stopped front-end does not give it back, and the keeper ends it.
fn the_builder_front_end_terminated_downloading(nix: Nix) {
    let Some(scene) = Scene::new(nix, Front::Builder, "0") else { return };
    let args = scene.args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    for name in ["nwh-warm-a", "nwh-warm-b"] {
        let expr = sh_derivation(name, None, &[], "echo > $out");
        let out = scene.tb.nix_build(&expr, &args);
        assert!(out.status.success(), "{}", describe(&out));
    }
    let kept = procs::serve_programs();
    assert_eq!(kept.len(), 1, "one session kept between builds: {kept:?}");
    let ready = |_: &Scene| procs::serve_programs() == kept;
    terminated_once(scene, "built", ready, |_| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while procs::serve_programs().iter().any(|p| kept.contains(p)) {
            assert!(Instant::now() < deadline, "the keeper still has the session the stopped build held");
            std::thread::sleep(Duration::from_millis(20));
        }
    });
}

/// A hook waiting for the one slot (another build holds it) is killed: it held nothing, and
/// the other build goes on.
fn the_hook_killed_waiting_for_a_slot(nix: Nix) {
    waiting_for_a_slot(nix, |pid| {
        kill_group(pid);
        Some(Duration::ZERO)
    });
}

/// The same, stopped as Nix stops it (SIGTERM, SIGKILL 500 ms later): it exits before the
/// SIGKILL.
fn the_hook_terminated_waiting_for_a_slot(nix: Nix) {
    waiting_for_a_slot(nix, |pid| terminate_group(pid, pid));
}

/// `end(pid)` ends the hook waiting for a slot; it says how long the hook took, if it ended
/// before a SIGKILL.
fn waiting_for_a_slot(nix: Nix, end: impl FnOnce(u32) -> Option<Duration>) {
    let Some(scene) = Scene::new(nix, Front::Hook, HOLDING) else { return };
    let nonce = unique_nonce();
    let waiter = format!(
        r#"builtins.derivation {{ name = "nwh-waiter"; nonce = "{nonce}"; system = builtins.currentSystem;
  builder = "/bin/sh"; args = [ "-c" "echo > $out" ]; }}"#
    );
    let mut holder = scene.start(&scene.expr);
    let holding = scene.reached(&mut holder, "nwh-fault", "uploaded");
    let mut child = scene.start(&waiter);
    // Another hook has decided: the slot is held, so it waits for it before it accepts.
    let pid = scene
        .reached_where(&mut child, "the waiter decided", |m| m["phase"] == "decided" && m["pid"] != holding);
    std::thread::sleep(Duration::from_millis(300));
    let text = std::fs::read_to_string(scene.timeline_file()).unwrap();
    assert!(
        !text.lines().any(|l| l.contains(&format!("\"pid\":{pid},")) && l.contains("\"accepted\"")),
        "the waiter did not get the slot while it was held:\n{text}"
    );
    let at = SystemTime::now();
    let took = end(pid);
    let first = finish(child);
    assert!(took.is_some(), "the hook was still running {NIX_GRACE:?} after SIGTERM, and got SIGKILL");
    scene.was_in(pid, "decided", at);
    assert!(!first.status.success(), "{}", describe(&first));
    let held = finish(holder);
    assert!(held.status.success(), "the build holding the slot went on: {}", describe(&held));
    scene.afterwards();
}

fn the_builder_stopped_mid_build(nix: Nix) {
    builder_stopped_mid_build(nix, Front::Hook);
}

fn the_builder_stopped_mid_build_behind_the_builder_front_end(nix: Nix) {
    builder_stopped_mid_build(nix, Front::Builder);
}

fn the_builder_frozen_mid_upload(nix: Nix) {
    builder_frozen_mid_upload(nix, Front::Hook);
}

fn the_builder_frozen_mid_upload_behind_the_builder_front_end(nix: Nix) {
    builder_frozen_mid_upload(nix, Front::Builder);
}

fn the_builder_cut_off_mid_download(nix: Nix) {
    builder_cut_off_mid_download(nix, Front::Hook);
}

fn the_builder_cut_off_mid_download_behind_the_builder_front_end(nix: Nix) {
    builder_cut_off_mid_download(nix, Front::Builder);
}

/// The builder stopped (its sshd and everything under it killed) while it builds: the build
/// fails with a message that names the builder; started again, it takes the next build.
fn builder_stopped_mid_build(nix: Nix, front: Front) {
    let Some(scene) = Scene::new(nix, front, BUILDING) else { return };
    let mut child = scene.start(&scene.expr);
    let ours = scene.reached(&mut child, "nwh-fault", "uploaded");
    let at = SystemTime::now();
    scene.tb.builder_stop(1);
    let first = finish(child);
    scene.tb.builder_start(1);
    // The build failed, and it was still running when the builder began to stop: the stop
    // ended it.
    assert!(!first.status.success(), "{}", describe(&first));
    scene.was_in(ours, "uploaded", at);
    let said = stderr(&first);
    assert!(said.contains(&format!("'{}'", scene.tb.uri(1))), "the builder is named: {said}");
    scene.afterwards();
}

/// The builder frozen (SIGSTOP) mid-upload for two seconds: the upload resumes where it was,
/// and the build completes.
fn builder_frozen_mid_upload(nix: Nix, front: Front) {
    let Some(scene) = Scene::new(nix, front, "0") else { return };
    let mut child = scene.start(&scene.expr);
    let ours = scene.reached(&mut child, "nwh-fault", "session");
    scene.tb.builder_freeze(1);
    std::thread::sleep(Duration::from_secs(2));
    let thawed = SystemTime::now();
    scene.tb.builder_thaw(1);
    let first = finish(child);
    assert!(first.status.success(), "the paused upload went on: {}", describe(&first));
    // Still uploading when the builder was thawed: the freeze held the upload up.
    scene.was_in(ours, "session", thawed);
    scene.afterwards();
}

/// The builder frozen mid-upload for good: ssh's keepalive (15 s × 4) gives it up, the build
/// fails naming the builder and the cause instead of hanging, and once the builder is back all of
/// [`Scene::afterwards`] holds. On the newest Nix only: it takes a minute.
#[test]
#[cfg_attr(
    not(nwh_testbed),
    ignore = "needs root and the test bed (nix-build, sshd, ip, unshare): cargo xtask test sets it up"
)]
fn a_builder_frozen_for_good_mid_upload_is_given_up() {
    let Some(scene) = Scene::new(Nix::V2_34, Front::Hook, "0") else { return };
    let mut child = scene.start(&scene.expr);
    let ours = scene.reached(&mut child, "nwh-fault", "session");
    scene.tb.builder_freeze(1);
    let frozen = SystemTime::now();
    // Well past the keepalive's minute: a hang, not a slow give-up, fails the test.
    let deadline = Instant::now() + Duration::from_secs(240);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            scene.tb.builder_thaw(1);
            let _ = finish(child);
            panic!("the build still hangs four minutes after its builder froze");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    scene.tb.builder_thaw(1);
    let first = finish(child);
    assert!(!first.status.success(), "{}", describe(&first));
    scene.was_in(ours, "session", frozen);
    let said = stderr(&first);
    assert!(said.contains(&scene.tb.uri(1)), "the builder is named: {said}");
    // ssh's own words for why it gave up ("Timeout, server … not responding").
    let lost = format!("the SSH connection to 'root@{}' was lost: ", scene.tb.addr(1));
    assert!(said.contains(&lost) && said.contains("not responding"), "the cause is named: {said}");
    scene.afterwards();
}

/// The builder's link down mid-download for two seconds (packets vanish, nothing is reset):
/// TCP carries on when it comes back, and the build completes.
fn builder_cut_off_mid_download(nix: Nix, front: Front) {
    let Some(scene) = Scene::new(nix, front, "0") else { return };
    let mut child = scene.start(&scene.expr);
    let ours = scene.reached(&mut child, "nwh-fault", "built");
    scene.tb.link_down(1);
    let link = LinkUp(&scene.tb);
    std::thread::sleep(Duration::from_secs(2));
    let restored = SystemTime::now();
    drop(link);
    let first = finish(child);
    assert!(first.status.success(), "the download went on: {}", describe(&first));
    // Still downloading when the link came back: the cut held the download up.
    scene.was_in(ours, "built", restored);
    scene.afterwards();
}

/// Brings the link back up, also when the test fails.
struct LinkUp<'a>(&'a Testbed);

impl Drop for LinkUp<'_> {
    fn drop(&mut self) {
        self.0.link_up(1);
    }
}
