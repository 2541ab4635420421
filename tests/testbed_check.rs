//! `nix-wasm-hook check` against the test bed: one good builder and one line for each fault
//! users meet, each named with its fix.

use std::process::{Command, Output};

use crate::support::hook::OurHook;
use crate::support::testbed::{describe, Opts, Testbed};
use crate::support::tool::{check_report, run_check, stderr, stdout};

fn check(hook: &OurHook, builders: &str, extra: &[&str]) -> Output {
    check_as(hook, builders, extra, None, "")
}

/// `check`, as if run through `sudo` by `sudo_user`, with more `options` in its options file.
fn check_as(
    hook: &OurHook,
    builders: &str,
    extra: &[&str],
    sudo_user: Option<&str>,
    options: &str,
) -> Output {
    let options = format!("state-dir = {:?}\nconnect-timeout = 3\n{options}", hook.state());
    run_check(&options, builders, extra, sudo_user)
}

/// The report about the machine on `line` of the builders setting.
fn section(text: &str, line: usize) -> String {
    check_report(text, &format!("(setting 'builders':{line})"))
}

#[test]
#[cfg_attr(
    not(nwh_testbed),
    ignore = "needs root and the test bed (nix-build, sshd, ip, unshare): cargo xtask test sets it up"
)]
fn check_names_every_fault_with_its_fix() {
    let Some(tb) = Testbed::up_or_skip(4, Opts { features: Some("big-parallel".into()), ..Opts::default() })
    else {
        return;
    };
    let root_knows =
        |host: &str| Command::new("ssh-keygen").args(["-F", host]).output().unwrap().status.success();
    assert!(
        !root_knows(&tb.addr(2)),
        "root's known_hosts already has {0}, so the unknown host key this test provokes cannot be: \
         `ssh-keygen -R {0}` (a fresh machine's root knows no test-bed host)",
        tb.addr(2)
    );
    tb.builder_stop(3);
    // Builder 4 accepts TCP connections but never answers.
    tb.builder_freeze(4);
    let lines = faulty_lines(&tb);
    let hook = OurHook::new(&[]);
    let started = std::time::Instant::now();
    let out = check(&hook, &lines.join("\n"), &[]);
    let took = started.elapsed();
    tb.builder_thaw(4);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    the_first_four_lines_are_reported(&tb, &text);
    the_last_four_lines_are_reported(&tb, &text);
    assert!(took < std::time::Duration::from_secs(30), "check took {took:?}");
    assert!(text.contains("7 builder(s): 4 usable, 3 unusable; 1 machines line(s) unreadable"), "{text}");
    the_users_own_known_hosts_is_named(&tb, &hook, &lines[1]);

    let json = check(&hook, &lines[..1].join("\n"), &["--json"]);
    assert_eq!(json.status.code(), Some(0), "{}", stderr(&json));
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["builders"][0]["status"], "ok");
    assert_eq!(v["builders"][0]["facts"]["nix_version"], "Nix 2.8.0");
    assert_eq!(v["usable"], true);
}

/// The columns of builder `i`'s line.
fn cols(tb: &Testbed, i: usize) -> Vec<String> {
    tb.machine(i).split(' ').map(str::to_string).collect()
}

/// Eight lines, one fault each but the first (builder 3 stopped and builder 4 frozen first).
fn faulty_lines(tb: &Testbed) -> [String; 8] {
    let good = tb.machine(1);
    // The same builder as line 1, with a typo in its features (column 6).
    let mut typo = cols(tb, 1);
    typo[0] = format!("ssh://{}", tb.addr(1));
    typo[5] = "big-paralel".into();
    // Builder 2 without its host key (column 8): root's known_hosts must have it, and has not.
    let unknown_key = cols(tb, 2)[..7].join(" ");
    // Builder 2 again, with max-jobs 0.
    let mut zero = cols(tb, 2);
    zero[3] = "0".into();
    [
        good,
        unknown_key,
        tb.machine(3),
        typo.join(" "),
        zero.join(" "),
        "@machines.local".to_string(),
        tb.machines_lines_ng()[0].clone(),
        tb.machine(4),
    ]
}

/// A good line, a host key nobody has, a stopped builder, a feature typo.
fn the_first_four_lines_are_reported(tb: &Testbed, text: &str) {
    let (a1, a2, a3) = (tb.addr(1), tb.addr(2), tb.addr(3));
    let s = section(text, 1);
    assert!(s.starts_with(&format!("ok        ssh://root@{a1} (setting 'builders':1)")), "{text}");
    assert!(s.contains("host key: column 8 (SHA256:") && s.contains("Nix 2.8.0 (serve protocol 2."), "{s}");
    assert!(s.contains("builds x86_64-linux") && s.contains("big-parallel"), "{s}");

    let s = section(text, 2);
    assert!(s.starts_with(&format!("UNUSABLE  ssh://root@{a2} (setting 'builders':2)")), "{text}");
    assert!(
        s.contains(&format!(
            "problem: the host key of {a2} is in neither /root/.ssh/known_hosts nor /etc/ssh/ssh_known_hosts"
        )),
        "{s}"
    );
    assert!(s.contains("fix: put the key in column 8 of setting 'builders':2"), "{s}");
    assert_eq!(s.matches("problem:").count(), 1, "said once: {s}");

    let s = section(text, 3);
    assert!(s.starts_with(&format!("UNUSABLE  ssh://root@{a3} (setting 'builders':3)")), "{text}");
    assert!(s.contains("Connection refused"), "{s}");
    assert!(
        s.contains(&format!("nothing accepts connections on port 22 of {a3}: is sshd running there")),
        "{s}"
    );

    let s = section(text, 4);
    assert!(s.starts_with(&format!("WARNING   ssh://{a1} (setting 'builders':4)")), "{text}");
    assert!(
        s.contains(
            "problem: the line declares feature `big-paralel`, which the builder's system-features lack"
        ),
        "{s}"
    );
    assert!(
        s.contains("fix: correct columns 6–7 of setting 'builders':4 (did you mean `big-parallel`?)"),
        "{s}"
    );
}

/// max-jobs 0, a relative `@file`, an ssh-ng:// line, a frozen builder.
fn the_last_four_lines_are_reported(tb: &Testbed, text: &str) {
    let (a1, a2) = (tb.addr(1), tb.addr(2));
    let s = section(text, 5);
    assert!(s.starts_with(&format!("WARNING   ssh://root@{a2} (setting 'builders':5)")), "{text}");
    assert!(s.contains("problem: max-jobs (column 4) is 0: it never takes a build"), "{s}");
    assert!(s.contains("fix: set column 4 of setting 'builders':5 to 1 or more"), "{s}");

    assert!(
        text.contains("setting 'builders':6:2: error: included file 'machines.local' is a relative path; the build hook runs with its working directory at '/'"),
        "{text}"
    );
    // ssh-ng://: the daemon answers (Nix 2.8's says nothing of trust: that came with 1.35).
    let s = section(text, 7);
    assert!(s.starts_with(&format!("ok        ssh-ng://root@{a1} (setting 'builders':7)")), "{text}");
    assert!(s.contains("Nix 2.8.0 (nix-daemon protocol 1.34)"), "{s}");

    // A frozen builder is reported, and does not hold the others up (connect timeout 3 s).
    let s = section(text, 8);
    assert!(s.starts_with(&format!("UNUSABLE  ssh://root@{} (setting 'builders':8)", tb.addr(4))), "{text}");
    assert!(s.contains("did not answer in time") || s.contains("no answer within"), "{s}");
}

/// The classic: the key is in the invoking user's own known_hosts (they ran `ssh` as
/// themselves), not root's. `sudo` names that user in SUDO_USER.
fn the_users_own_known_hosts_is_named(tb: &Testbed, hook: &OurHook, line: &str) {
    let user = TempUser::new("nwh-check-user");
    let ssh_dir = user.home.path().join(".ssh");
    std::fs::create_dir_all(&ssh_dir).unwrap();
    use base64::Engine;
    let key = base64::engine::general_purpose::STANDARD.decode(&cols(tb, 2)[7]).unwrap();
    std::fs::write(
        ssh_dir.join("known_hosts"),
        format!("{} {}\n", tb.addr(2), String::from_utf8(key).unwrap()),
    )
    .unwrap();
    let out = check_as(hook, line, &[], Some(&user.name), "");
    let s = section(&stdout(&out), 1);
    let theirs = format!(
        "; nwh-check-user's own {}/.ssh/known_hosts has it (you accepted it as yourself, but the hook runs ssh as root)",
        user.home.path().display()
    );
    assert!(s.contains(&theirs), "missing {theirs:?} in\n{s}");
}

/// Builder mode: the line that runs our binary greets as a builder, and the real builders
/// behind it are checked as any builder is.
#[test]
#[cfg_attr(
    not(nwh_testbed),
    ignore = "needs root and the test bed (nix-build, sshd, ip, unshare): cargo xtask test sets it up"
)]
fn check_follows_a_builder_mode_line_to_the_real_builders() {
    let Some(tb) = Testbed::up_or_skip(2, Opts { features: Some("big-parallel".into()), ..Opts::default() })
    else {
        return;
    };
    let real = tb.machines_lines().join("\n");
    let builder = OurHook::as_builder(&real, &[]);
    let machines = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(machines.path(), &real).unwrap();
    let slots: u32 =
        tb.machines_lines().iter().map(|l| l.split(' ').nth(3).unwrap().parse::<u32>().unwrap()).sum();
    let line = builder.builder_line(4 * slots, "big-parallel");
    let options = format!("machines = \"@{}\"\n", machines.path().display());
    let out = check_as(&builder, &line, &[], None, &options);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    let s = section(&text, 1);
    assert!(s.starts_with("ok        ssh://localhost?remote-program="), "{text}");
    assert!(s.contains(" (serve protocol 2.") && !s.contains("problem:"), "{s}");
    assert!(text.contains("behind it, the real builders of nix-wasm-hook option 'machines':"), "{text}");
    for i in 1..=2 {
        let heading = format!("ok        ssh://root@{} ({}:{i})", tb.addr(i), machines.path().display());
        assert!(text.contains(&heading), "missing {heading:?} in\n{text}");
    }
    assert!(text.contains("3 builder(s): 3 usable, 0 unusable"), "{text}");

    let json = check_as(&builder, &line, &["--json"], None, &options);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["builders"][0]["status"], "ok");
    assert_eq!(v["real_builders"][1]["facts"]["nix_version"], "Nix 2.8.0");
    assert_eq!(v["usable"], true);
}

/// A system user with a temporary home, removed again on drop.
struct TempUser {
    name: String,
    home: tempfile::TempDir,
}

impl TempUser {
    fn new(name: &str) -> TempUser {
        let home = tempfile::tempdir().unwrap();
        let _ = Command::new("userdel").arg(name).output();
        let out = Command::new("useradd").args(["-M", "-d"]).arg(home.path()).arg(name).output().unwrap();
        assert!(out.status.success(), "useradd: {}", describe(&out));
        TempUser { name: name.to_string(), home }
    }
}

impl Drop for TempUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.name).output();
    }
}
