//! Our hook as Nix 2.8 must be given it: `build-hook` there is a single path without
//! arguments, so a wrapper script passes a private state directory. Dropping it ends the SSH
//! masters the hook left running for later hooks (they would outlive the test bed).

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

pub struct OurHook {
    dir: tempfile::TempDir,
    pub path: String,
}

impl OurHook {
    pub fn new(extra_args: &[&str]) -> OurHook {
        OurHook::in_dir(tempfile::tempdir().unwrap(), extra_args, None)
    }

    /// Our hook finding the programs in `dir` before those of its `PATH`: a `nix-store` there
    /// stands in for Nix's.
    pub fn with_programs_from(dir: &std::path::Path) -> OurHook {
        OurHook::in_dir(tempfile::tempdir().unwrap(), &[], Some(dir))
    }

    fn in_dir(dir: tempfile::TempDir, extra_args: &[&str], programs: Option<&std::path::Path>) -> OurHook {
        // Named as installed: a builder-mode line is recognised by this file name.
        let path = dir.path().join("nix-wasm-hook");
        let state = dir.path().join("state");
        let path_first = programs.map(|p| format!("PATH={}:\"$PATH\" ", p.display())).unwrap_or_default();
        let mut script = format!(
            "#!/bin/sh\n{path_first}exec {} --state-dir {} --cache-dir {}",
            env!("CARGO_BIN_EXE_nix-wasm-hook"),
            state.display(),
            super::fake_parent::shared_cache().display()
        );
        for a in extra_args {
            script.push_str(&format!(" '{a}'"));
        }
        script.push_str(" \"$@\"\n");
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        OurHook { path: path.display().to_string(), dir }
    }

    /// Our binary as one builder of Nix's own hook (builder mode), dispatching to the real
    /// builders `machines` (Nix's `builders` syntax, written to a file beside the wrapper).
    pub fn as_builder(machines: &str, extra_args: &[&str]) -> OurHook {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("machines");
        std::fs::write(&file, machines).unwrap();
        let arg = format!("@{}", file.display());
        let mut args = vec!["--machines", arg.as_str()];
        args.extend_from_slice(extra_args);
        OurHook::in_dir(dir, &args, None)
    }

    /// The machines line that makes this wrapper a builder of Nix's own hook: Nix starts it
    /// locally, without ssh, as `remote-program --serve --write`.
    pub fn builder_line(&self, jobs: u32, features: &str) -> String {
        format!("ssh://localhost?remote-program={} x86_64-linux - {jobs} 1 {features}", self.path)
    }

    /// `nix-build` arguments that send every build through this hook to `builders` and never
    /// build locally (`--max-jobs 0`).
    pub fn remote_only<'a>(&'a self, builders: &'a str) -> [&'a str; 8] {
        ["--max-jobs", "0", "--option", "builders", builders, "--option", "build-hook", &self.path]
    }

    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The directory of our hooks' control sockets and keeper, through the link the state
    /// directory has to it.
    pub fn control(&self) -> PathBuf {
        self.state().join(nix_wasm_hook::transfer::ssh::CONTROL_LINK)
    }

    /// Control sockets of the SSH masters our hooks started (not the keeper of warm sessions').
    pub fn masters(&self) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(self.control()) else { return Vec::new() };
        entries
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "sock") && !p.ends_with("warm.sock"))
            .collect()
    }
}

impl OurHook {
    /// The PIDs of the SSH masters our hooks started (as `ssh -O check` tells them).
    pub fn master_pids(&self) -> Vec<u32> {
        self.masters()
            .iter()
            .filter_map(|socket| {
                let out = Command::new("ssh")
                    .arg("-S")
                    .arg(socket)
                    .args(["-O", "check", "nwh-test"])
                    .stdin(Stdio::null())
                    .output()
                    .ok()?;
                let said = String::from_utf8_lossy(&out.stderr).into_owned();
                said.split_once("pid=")?.1.split(')').next()?.parse().ok()
            })
            .collect()
    }
}

impl Drop for OurHook {
    fn drop(&mut self) {
        // The keeper of warm sessions our hooks started (it would end by itself when idle).
        let pid_file = self.control().join("warm.pid");
        if let Some(pid) = std::fs::read_to_string(&pid_file).ok().and_then(|t| t.trim().parse::<i32>().ok())
        {
            if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
        }
        for socket in self.masters() {
            let _ = Command::new("ssh")
                .arg("-S")
                .arg(&socket)
                .args(["-O", "exit", "nwh-test"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        // The control sockets' directory is outside the temporary directory.
        if let Ok(dir) = std::fs::read_link(self.control()) {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
