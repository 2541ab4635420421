//! `nix-wasm-hook explain`: every machine with whether it fits, the rank the policy gives it,
//! and for each one rejected the rule in plain words; settings read as the hook reads them.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output};

use nix_wasm_hook::transfer::health::Health;
use serde_json::Value;

use crate::support::fake_parent::shared_cache;
use crate::support::tool::{stderr, stdout};

const MACHINES: &str = "\
ssh://b1 x86_64-linux - 2 1 kvm,big-parallel
ssh://b2 x86_64-linux,aarch64-linux - 1 2 - benchmark
ssh://b3 aarch64-linux - 4 1 kvm
";

/// A private /etc/nix, options file, load and state directories.
struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new(machines: &str, nix_conf_extra: &str) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let env = Env { dir };
        std::fs::create_dir_all(env.path("etc-nix")).unwrap();
        std::fs::write(env.path("machines"), machines).unwrap();
        std::fs::write(
            env.path("etc-nix/nix.conf"),
            format!("builders = @{}\nmax-jobs = 0\n{nix_conf_extra}", env.path("machines").display()),
        )
        .unwrap();
        std::fs::write(
            env.path("hook.toml"),
            format!(
                "current-load = {:?}\nstate-dir = {:?}\ncache-dir = {:?}\n",
                env.path("load"),
                env.path("state"),
                shared_cache()
            ),
        )
        .unwrap();
        env
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn explain(&self, args: &[&str]) -> Output {
        self.explain_with_path(&std::env::var("PATH").unwrap_or_default(), args)
    }

    /// `explain` with this `PATH`, which decides the `nix-store` it asks for Nix's version.
    fn explain_with_path(&self, path: &str, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_nix-wasm-hook"))
            .env_clear()
            .env("PATH", path)
            .env("HOME", self.dir.path())
            .env("NIX_CONF_DIR", self.path("etc-nix"))
            .current_dir(self.dir.path())
            .arg("explain")
            .arg("--config")
            .arg(self.path("hook.toml"))
            .args(args)
            .output()
            .unwrap()
    }

    /// A derivation file as Nix writes it, with these required features.
    fn drv(&self, name: &str, system: &str, features: &str) -> String {
        let out = format!("/nix/store/00000000000000000000000000000000-{name}");
        let path = self.path(&format!("{name}.drv"));
        std::fs::write(
            &path,
            format!(
                "Derive([(\"out\",\"{out}\",\"\",\"\")],[],[],\"{system}\",\"/bin/sh\",[\"-c\",\"true\"],\
                 [(\"builder\",\"/bin/sh\"),(\"name\",\"{name}\"),(\"out\",\"{out}\"),\
                 (\"requiredSystemFeatures\",\"{features}\"),(\"system\",\"{system}\")])"
            ),
        )
        .unwrap();
        path.display().to_string()
    }
}

/// The table row of a machine, split on runs of two or more spaces.
fn row(text: &str, uri: &str) -> Vec<String> {
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{uri} ")))
        .unwrap_or_else(|| panic!("no row {uri}:\n{text}"));
    line.split("  ").map(str::trim).filter(|c| !c.is_empty()).map(str::to_string).collect()
}

#[test]
fn a_derivation_is_explained_machine_by_machine() {
    let env = Env::new(MACHINES, "");
    let drv = env.drv("needs-kvm", "x86_64-linux", "kvm");
    let out = env.explain(&[&drv]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let m = env.path("machines").display().to_string();
    assert!(
        text.contains(&format!("derivation: {drv}\nsystem: x86_64-linux; required features: kvm\n")),
        "{text}"
    );
    assert!(text.contains("policy: the default policy (sha256 "), "{text}");
    assert_eq!(row(&text, "ssh://b1"), ["ssh://b1", &format!("{m}:1"), "0/2", "yes", "0.00", "1"]);
    assert_eq!(
        row(&text, "ssh://b2"),
        [
            "ssh://b2",
            &format!("{m}:2"),
            "0/1",
            "no",
            "-",
            "-",
            "does not support the required feature `kvm`; mandatory feature `benchmark` is not among the \
             derivation's required features"
        ]
    );
    assert_eq!(row(&text, "ssh://b3")[6], "system `x86_64-linux` is not among its systems (aarch64-linux)");
    assert!(text.contains("answer: try ssh://b1\nso: the hook would send it to ssh://b1\n"), "{text}");
}

#[test]
fn a_feature_typo_gets_the_nearest_name_and_exit_1() {
    let env = Env::new(MACHINES, "");
    let out = env.explain(&["--system", "x86_64-linux", "--features", "big-paralel"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("answer: decline\nso: nothing can build it: no machine fits, and this machine cannot either (max-jobs 0, system x86_64-linux"), "{text}");
    assert!(
        text.contains(
            "hint: no machine supports the required feature `big-paralel`; did you mean `big-parallel`?"
        ),
        "{text}"
    );
}

#[test]
fn busy_and_unreachable_machines_say_so() {
    let env = Env::new(MACHINES, "");
    // b2 (the only machine for `benchmark`) is busy: its one slot is held, as a hook holds it.
    let load = nwh_slots::LoadDir::open(env.path("load"));
    let main = load.lock_main().unwrap();
    let held = load.scan(&main, "ssh://b2", 1).unwrap().free.expect("a free slot");
    drop(main);
    let out = env.explain(&["--system", "x86_64-linux", "--features", "benchmark"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(row(&text, "ssh://b2")[2..], ["1/1", "busy", "0.50", "-", "its 1 slot is in use"]);
    assert!(
        text.contains("answer: postpone\nso: every machine that fits is busy now: Nix waits and asks again"),
        "{text}"
    );
    drop(held);

    // b1 failed to connect a moment ago (another hook wrote it down): disabled, with ssh's words.
    Health::new(env.path("state/down"))
        .mark_down("ssh://b1", "ssh: connect to host b1 port 22: Connection refused");
    let out = env.explain(&["--system", "x86_64-linux", "--features", "kvm"]);
    let text = stdout(&out);
    let b1 = row(&text, "ssh://b1");
    assert_eq!(b1[3], "no", "{text}");
    assert!(
        b1[6].starts_with(
            "unreachable (ssh: connect to host b1 port 22: Connection refused); not tried again for "
        ),
        "{text}"
    );
    assert_eq!(out.status.code(), Some(1), "nothing else builds kvm on x86_64: {text}");
}

#[test]
fn a_relative_machines_path_is_explained_as_the_hook_sees_it() {
    let env = Env::new(MACHINES, "");
    std::fs::write(env.path("etc-nix/nix.conf"), "builders = @machines\nmax-jobs = 0\n").unwrap();
    let out = env.explain(&["--system", "x86_64-linux"]);
    let text = stdout(&out);
    // Run from the directory that holds `machines`: the hook would still look in `/`.
    assert!(text.contains("note: setting 'builders'"), "{text}");
    assert!(text.contains("/machines"), "{text}");
    assert!(text.contains("(no usable machine in `builders`)"), "{text}");
    assert_eq!(out.status.code(), Some(1), "{text}");
}

#[test]
fn json_for_scripts() {
    let env = Env::new(MACHINES, "");
    let out = env.explain(&["--system", "aarch64-linux", "--json", "--features", "kvm"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["answer"], "try ssh://b3");
    assert_eq!(v["machines"][2]["rank"], 1);
    assert_eq!(v["machines"][0]["fits"], false);
    assert_eq!(v["machines"][0]["why_not"], "system `aarch64-linux` is not among its systems (x86_64-linux)");
    assert_eq!(v["request"]["required_features"], serde_json::json!(["kvm"]));
}

#[test]
fn an_ssh_ng_machine_is_a_machine_and_unknown_store_parameters_are_named() {
    let env = Env::new(
        "ssh-ng://ng x86_64-linux - 4 8\nssh://plain x86_64-linux - 1 1\nssh-ng://odd?frobnicate=1 x86_64-linux - 9 9\n",
        "",
    );
    let out = env.explain(&["--system", "x86_64-linux"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("answer: try ssh-ng://ng, ssh://plain\n"),
        "the faster ssh-ng machine first: {text}"
    );
    let odd = row(&text, "ssh-ng://odd?frobnicate=1");
    assert_eq!(odd[3], "no", "{text}");
    assert!(
        odd[6].starts_with(
            "ssh-ng://odd?frobnicate=1: the store parameter `frobnicate` is not one this hook knows"
        ),
        "{text}"
    );
}

/// The `so:` line of explain's text.
fn so(text: &str) -> &str {
    text.lines().find_map(|l| l.strip_prefix("so: ")).unwrap_or_else(|| panic!("no `so:` line:\n{text}"))
}

#[test]
fn what_nix_does_next_is_said_in_the_words_of_its_release() {
    let env = Env::new(MACHINES, "");
    let drv = env.drv("needs-cuda", "x86_64-linux", "cuda");
    let nowhere =
        "nothing can build it: no machine fits, and this machine cannot either (max-jobs 0, system \
                   x86_64-linux";
    // Named on the command line.
    let out = env.explain(&["--nix-version", "2.34.8", &drv]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(so(&text).starts_with(nowhere), "{text}");
    assert!(
        so(&text).ends_with(&format!(
            "; Nix 2.34.8 fails with \"Cannot build '{drv}'. Reason: local builds are disabled (max-jobs = 0)\""
        )),
        "{text}"
    );
    let out = env.explain(&["--nix-version", "2.8.0", "--system", "x86_64-linux", "--features", "cuda"]);
    assert!(
        so(&stdout(&out)).ends_with("; Nix 2.8.0 fails with \"unable to start any build\""),
        "{}",
        stdout(&out)
    );
    let out = env.explain(&["--nix-version", "lix 2.93.0", "--system", "x86_64-linux", "--features", "cuda"]);
    assert!(
        so(&stdout(&out)).ends_with("; Lix 2.93.0 fails with \"unable to start any build\""),
        "{}",
        stdout(&out)
    );

    // Asked of the `nix-store` on PATH.
    let bin = env.path("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let nix_store = bin.join("nix-store");
    std::fs::write(&nix_store, "#!/bin/sh\necho 'nix-store (Nix) 2.26.3'\n").unwrap();
    std::fs::set_permissions(&nix_store, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = env
        .explain_with_path(&bin.display().to_string(), &["--system", "x86_64-linux", "--features", "cuda"]);
    assert!(
        so(&stdout(&out)).ends_with("; Nix 2.26.3 fails with \"unable to start any build\""),
        "{}",
        stdout(&out)
    );

    // No Nix at all: both wordings, each with its releases.
    let empty = env.path("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let out = env.explain_with_path(&empty.display().to_string(), &[&drv]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        so(&text).ends_with(&format!(
            "; Nix fails with \"unable to start any build\" (Nix up to 2.33, and Lix) or \"Cannot build \
             '{drv}'. Reason: local builds are disabled (max-jobs = 0)\" (Nix 2.34 and later)"
        )),
        "{text}"
    );
}

#[test]
fn a_machine_that_never_takes_a_build_means_waiting_for_ever() {
    let env = Env::new("ssh://never x86_64-linux - 0\n", "");
    let out = env.explain(&["--nix-version", "2.34.8", "--system", "x86_64-linux"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("answer: postpone\n"), "{text}");
    assert!(
        so(&text).starts_with("it waits for ever: no machine that fits ever takes a build (max-jobs 0)"),
        "{text}"
    );
    assert!(!text.contains("fails with"), "Nix does not fail, it waits: {text}");
}

#[test]
fn the_ca_derivations_experiment_makes_it_a_local_build() {
    let with = Env::new(MACHINES, "max-jobs = 1\nexperimental-features = nix-command ca-derivations\n");
    let out = with.explain(&["--system", "x86_64-linux", "--features", "ca-derivations"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(so(&stdout(&out)), "Nix builds it on this machine (max-jobs 1, system x86_64-linux)");
    let without = Env::new(MACHINES, "max-jobs = 1\n");
    let out = without.explain(&[
        "--nix-version",
        "2.34.8",
        "--system",
        "x86_64-linux",
        "--features",
        "ca-derivations",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        so(&stdout(&out))
            .ends_with("Nix 2.34.8 fails with \"Cannot build '…'. Reason: missing system features\""),
        "{}",
        stdout(&out)
    );
}

#[test]
fn builder_mode_is_explained_in_two_hops() {
    // Nix's own hook sees the builder-mode line and one machine of its own; behind the line,
    // nix-wasm-hook sees the real builders.
    let line = "ssh://localhost?remote-program=/usr/local/bin/nix-wasm-hook x86_64-linux - 16 1 kvm,big-parallel,nixos-test";
    let env = Env::new(&format!("{line}\nssh://other aarch64-linux - 1 1 kvm\n"), "");
    std::fs::write(env.path("real"), MACHINES).unwrap();
    let options = std::fs::read_to_string(env.path("hook.toml")).unwrap();
    std::fs::write(
        env.path("hook.toml"),
        format!("{options}machines = \"@{}\"\n", env.path("real").display()),
    )
    .unwrap();
    through_the_line_to_a_real_builder(&env);
    not_for_the_line(&env);
    a_feature_the_line_does_not_offer(&env);
    waiting_inside_for_a_busy_real_builder(&env);
    a_feature_no_real_builder_has(&env);
}

fn through_the_line_to_a_real_builder(env: &Env) {
    let out = env.explain(&["--system", "x86_64-linux", "--features", "kvm"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("\nNix's own hook chooses among `builders`, by Nix's rules:\n"), "{text}");
    assert_eq!(
        row(&text, "ssh://localhost?remote-program=/usr/local/bin/nix-wasm-hook")[2..6],
        ["0/16", "yes", "0.00", "1"]
    );
    assert_eq!(row(&text, "ssh://other")[3], "no", "{text}");
    assert!(
        text.contains(
            "\nbehind the builder-mode line, nix-wasm-hook chooses among nix-wasm-hook option 'machines':\n"
        ),
        "{text}"
    );
    let real = env.path("real").display().to_string();
    assert_eq!(row(&text, "ssh://b1"), ["ssh://b1", &format!("{real}:1"), "0/2", "yes", "0.00", "1"]);
    assert_eq!(row(&text, "ssh://b3")[6], "system `x86_64-linux` is not among its systems (aarch64-linux)");
    assert!(text.contains("answer: try ssh://b1\n"), "{text}");
    assert_eq!(
        so(&text),
        "Nix's own hook sends it to nix-wasm-hook (builder mode), which sends it to ssh://b1"
    );
}

/// Nix's own hook builds it elsewhere itself.
fn not_for_the_line(env: &Env) {
    let out = env.explain(&["--system", "aarch64-linux", "--features", "kvm"]);
    assert_eq!(
        so(&stdout(&out)),
        "Nix's own hook sends it to ssh://other directly: nix-wasm-hook is not involved"
    );
}

/// The real builders have `benchmark` (b2), but the line does not offer it to Nix.
fn a_feature_the_line_does_not_offer(env: &Env) {
    let out = env.explain(&["--system", "x86_64-linux", "--features", "benchmark"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("answer: decline\n\nbehind the builder-mode line"), "{text}");
    assert!(
        text.contains(&format!(
            "hint: the real builders behind the builder-mode line ({}:1) could build it, but the line does not \
             declare its system or features, so Nix never sends it there",
            env.path("machines").display()
        )),
        "{text}"
    );
}

/// Every real builder that fits is busy: the build waits inside nix-wasm-hook.
fn waiting_inside_for_a_busy_real_builder(env: &Env) {
    let load = nwh_slots::LoadDir::open(env.path("load"));
    let main = load.lock_main().unwrap();
    let held: Vec<_> =
        (0..2).map(|_| load.scan(&main, "ssh://b1", 2).unwrap().free.expect("a free slot")).collect();
    drop(main);
    let out = env.explain(&["--system", "x86_64-linux", "--features", "big-parallel"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(row(&text, "ssh://b1")[2..4], ["2/2", "busy"]);
    assert_eq!(
        so(&text),
        "Nix's own hook sends it to nix-wasm-hook (builder mode), where it waits for the first free slot \
         of a real builder that fits (first come, first served)"
    );
    drop(held);
}

/// The line promises a feature no real builder has: Nix sends the build, and it fails there.
fn a_feature_no_real_builder_has(env: &Env) {
    let out = env.explain(&["--system", "x86_64-linux", "--features", "nixos-test", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["answer"], "try ssh://localhost?remote-program=/usr/local/bin/nix-wasm-hook");
    assert_eq!(v["behind"]["answer"], "decline");
    assert_eq!(v["behind"]["machines"][0]["why_not"], "does not support the required feature `nixos-test`");
    assert!(v["verdict"]
        .as_str()
        .unwrap()
        .ends_with("where it fails at once: no real builder can take it (the rows behind say why)"));
}
