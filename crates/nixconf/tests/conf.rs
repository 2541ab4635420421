use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use nwh_nixconf::{ConfError, HostDefaults, LoadOptions, Origin, Settings, Warning};

fn fixture_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// A fixed host so results do not depend on the machine running the tests.
fn host() -> HostDefaults {
    HostDefaults {
        system: "x86_64-linux".into(),
        extra_platforms: ["i686-linux", "x86_64-v1-linux"].map(String::from).into(),
        system_features: ["benchmark", "big-parallel", "nixos-test", "uid-range"].map(String::from).into(),
        cpus: 8,
    }
}

fn load(name: &str) -> Result<Settings, ConfError> {
    Settings::load(LoadOptions::new(fixture_dir(name), host()))
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn defaults_without_any_config() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Settings::load(LoadOptions::new(tmp.path(), host())).unwrap();
    assert_eq!(s.builders(), format!("@{}/machines", tmp.path().display()));
    assert_eq!(s.max_jobs(), 1);
    assert_eq!(s.system(), "x86_64-linux");
    assert_eq!(s.extra_platforms(), ["i686-linux", "x86_64-v1-linux"]);
    assert_eq!(s.system_features(), host().system_features);
    assert_eq!(s.max_silent_time(), 0);
    assert_eq!(s.build_timeout(), 0);
    assert_eq!(s.max_build_log_size(), 0);
    assert!(!s.builders_use_substitutes());
    assert_eq!(s.get("builders"), None);
    assert_eq!(s.iter().count(), 0);
    assert!(s.warnings().is_empty());
}

#[test]
fn default_builders_follow_conf_dir() {
    let s = Settings::new("/etc/nix", None, host());
    assert_eq!(s.builders(), "@/etc/nix/machines");
}

#[test]
fn basic_fixture() {
    let s = load("basic").unwrap();
    let main = fixture_dir("basic").join("nix.conf");

    assert_eq!(s.max_jobs(), 4);
    // Runs of blanks collapse and the comment is cut off, as in Nix.
    assert_eq!(s.builders(), "ssh://nix@b1 x86_64-linux ; ssh://b2");
    assert_eq!(s.origin("builders"), Some(&Origin::File { path: main.clone(), line: 4 }));
    // Set explicitly (tab-separated), then extended by `extra-` twice (once from an include).
    assert_eq!(s.system_features(), set(&["kvm", "big-parallel", "gpu", "benchmark"]));
    assert_eq!(s.get("system-features"), Some("kvm big-parallel gpu benchmark"));
    // `build-timeout` is the old name of `timeout`.
    assert_eq!(s.build_timeout(), 3600);
    assert_eq!(s.get("build-timeout"), Some("3600"));
    assert_eq!(s.max_silent_time(), 600);
    assert!(s.builders_use_substitutes());
    // Unknown settings are kept verbatim (blank runs collapsed).
    assert_eq!(s.get("some-future-setting"), Some("hello world"));
    assert_eq!(s.get("sandbox"), Some("true"));
    // `extra-extra-platforms` appends to the *default* extra-platforms.
    assert_eq!(s.extra_platforms(), ["aarch64-linux", "i686-linux", "x86_64-v1-linux"]);
    assert_eq!(s.get("substituters"), Some("https://cache.example.org https://other.example.org"));
    assert_eq!(
        s.origin("max-silent-time"),
        Some(&Origin::File { path: fixture_dir("basic").join("conf.d/extra.conf"), line: 1 })
    );
    assert!(s.warnings().is_empty(), "{:?}", s.warnings());
}

#[test]
fn nix_config_comes_after_nix_conf() {
    let mut opts = LoadOptions::new(fixture_dir("basic"), host());
    opts.nix_config = Some("max-jobs = auto\n\n# comment\nextra-system-features = big-cpu\n".into());
    let s = Settings::load(opts).unwrap();
    assert_eq!(s.max_jobs(), 8, "auto = number of CPUs");
    assert_eq!(s.origin("max-jobs"), Some(&Origin::NixConfig { line: 1 }));
    assert!(s.system_features().contains("big-cpu"));
    assert!(s.system_features().contains("gpu"), "nix.conf's value is extended");
}

#[test]
fn block_overrides_everything() {
    let mut opts = LoadOptions::new(fixture_dir("basic"), host());
    opts.nix_config = Some("max-jobs = 2".into());
    let mut s = Settings::load(opts).unwrap();
    s.apply_block([
        ("max-jobs", "0"),
        ("builders", ""),
        ("system-features", "kvm"),
        ("extra-platforms", "armv7l-linux"),
        ("timeout", "0"),
    ])
    .unwrap();
    assert_eq!(s.max_jobs(), 0);
    assert_eq!(s.builders(), "", "empty builders means no remote machines");
    assert_eq!(s.system_features(), set(&["kvm"]));
    // `extra-platforms` is a setting in its own right: the block replaces it.
    assert_eq!(s.extra_platforms(), ["armv7l-linux"]);
    assert_eq!(s.build_timeout(), 0);
    assert_eq!(s.origin("max-jobs"), Some(&Origin::Block));
    // Untouched by the block, so still from the files.
    assert_eq!(s.max_silent_time(), 600);
}

#[test]
fn lix_style_block_of_overrides_only() {
    // Lix ≤ 2.93 sends only what the client overrode; the rest must come from nix.conf.
    let mut s = load("basic").unwrap();
    s.apply_block([("max-silent-time", "30")]).unwrap();
    assert_eq!(s.max_silent_time(), 30);
    assert_eq!(s.max_jobs(), 4);
    assert_eq!(s.builders(), "ssh://nix@b1 x86_64-linux ; ssh://b2");
}

#[test]
fn remote_systems_default_only_applies_when_unset() {
    let tmp = tempfile::tempdir().unwrap();
    let mut opts = LoadOptions::new(tmp.path(), host());
    opts.default_builders = Some("@/etc/nix/remote-systems.conf".into());
    let mut s = Settings::load(opts.clone()).unwrap();
    assert_eq!(s.builders(), "@/etc/nix/remote-systems.conf");
    s.apply_block([("builders", "ssh://x")]).unwrap();
    assert_eq!(s.builders(), "ssh://x");

    let mut opts = LoadOptions::new(fixture_dir("basic"), host());
    opts.default_builders = Some("@/etc/nix/remote-systems.conf".into());
    let s = Settings::load(opts).unwrap();
    assert_eq!(s.builders(), "ssh://nix@b1 x86_64-linux ; ssh://b2");
}

#[test]
fn syntax_error_names_file_and_line() {
    let err = load("bad-syntax").unwrap_err();
    let path = fixture_dir("bad-syntax").join("nix.conf");
    assert_eq!(err.to_string(), format!("{}:7: expected 'name = value'", path.display()));
    match err {
        ConfError::Syntax { origin, line } => {
            assert_eq!(origin, Origin::File { path, line: 7 });
            assert_eq!(line, "max-jobs 4");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn syntax_errors_in_nix_config() {
    let mut s = Settings::new("/etc/nix", None, host());
    let err = s.apply_nix_config("max-jobs = 1\nfoo=bar").unwrap_err();
    assert_eq!(err.to_string(), "NIX_CONFIG:2: expected 'name = value'");
    // Nothing of the text was applied.
    assert_eq!(s.get("max-jobs"), None);

    for bad in ["lonely", "= value", "a =b", "a b = c"] {
        let err = s.apply_nix_config(bad).unwrap_err();
        assert!(matches!(err, ConfError::Syntax { .. }), "{bad:?}: {err:?}");
    }
}

#[test]
fn edge_cases_nix_accepts() {
    let mut s = Settings::new("/etc/nix", None, host());
    s.apply_nix_config(
        "builders =\n  max-jobs   =   3   \r\nkeep-failed = true # why\n#only = comment\n\
         nix-path = a=b c = d\n",
    )
    .unwrap();
    assert_eq!(s.builders(), "");
    assert_eq!(s.max_jobs(), 3);
    assert_eq!(s.get("keep-failed"), Some("true"));
    assert_eq!(s.get("only"), None);
    // Only the second token must be '='; later ones are part of the value.
    assert_eq!(s.get("nix-path"), Some("a=b c = d"));
}

#[test]
fn missing_include_is_an_error_but_optional_include_is_not() {
    let err = load("missing-include").unwrap_err();
    let dir = fixture_dir("missing-include");
    match &err {
        ConfError::IncludeNotFound { origin, path } => {
            assert_eq!(origin, &Origin::File { path: dir.join("nix.conf"), line: 2 });
            assert_eq!(path, &dir.join("nope.conf"));
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().starts_with(&format!("{}:2: ", dir.join("nix.conf").display())));
    // The basic fixture's `!include conf.d/does-not-exist.conf` was silently skipped.
    load("basic").unwrap();
}

#[test]
fn include_loop_is_reported() {
    let err = load("include-loop").unwrap_err();
    assert!(matches!(err, ConfError::IncludeTooDeep { .. }), "{err:?}");
}

#[test]
fn include_needs_one_path() {
    let err = load("bad-include-args").unwrap_err();
    assert!(matches!(&err, ConfError::BadInclude { keyword, .. } if keyword == "include"), "{err:?}");
}

#[test]
fn error_in_included_file_points_into_it() {
    let err = load("nested-error").unwrap_err();
    let path = fixture_dir("nested-error").join("sub/broken.conf");
    assert_eq!(err.to_string(), format!("{}:3: expected 'name = value'", path.display()));
}

#[test]
fn invalid_values_are_typed_errors() {
    let err = load("bad-value").unwrap_err();
    match &err {
        ConfError::InvalidValue { origin, name, value, .. } => {
            assert_eq!(origin, &Origin::File { path: fixture_dir("bad-value").join("nix.conf"), line: 2 });
            assert_eq!(name, "max-jobs");
            assert_eq!(value, "lots");
        }
        other => panic!("{other:?}"),
    }

    let mut s = Settings::new("/etc/nix", None, host());
    for (name, value) in [
        ("max-jobs", "-1"),
        ("build-max-jobs", "x"),
        ("timeout", "1h"),
        ("max-silent-time", ""),
        ("builders-use-substitutes", "yes"),
        ("max-build-log-size", "-5"),
    ] {
        let err = s.apply_block([(name, value)]).unwrap_err();
        assert!(
            matches!(&err, ConfError::InvalidValue { origin: Origin::Block, .. }),
            "{name}={value}: {err:?}"
        );
    }
    // Nix takes negative times; they mean no limit.
    s.apply_block([("timeout", "-1")]).unwrap();
    assert_eq!(s.build_timeout(), 0);
}

#[test]
fn extra_on_a_scalar_is_kept_as_unknown() {
    let mut s = Settings::new("/etc/nix", None, host());
    s.apply_nix_config("max-jobs = 2\nextra-max-jobs = 5\nextra-builders = ssh://x\n").unwrap();
    assert_eq!(s.max_jobs(), 2);
    assert_eq!(s.get("extra-max-jobs"), Some("5"));
    assert_eq!(s.builders(), "@/etc/nix/machines");
    assert_eq!(s.warnings().len(), 2);
    assert!(matches!(
        &s.warnings()[0],
        Warning::NotAppendable { name, origin: Origin::NixConfig { line: 2 } } if name == "extra-max-jobs"
    ));
}

#[test]
fn extra_appends_in_order_and_plain_set_resets() {
    let mut s = Settings::new("/etc/nix", None, host());
    s.apply_nix_config(
        "extra-trusted-public-keys = a\nextra-trusted-public-keys = b\n\
         extra-system-features = x\nsystem-features = y\nextra-system-features = z\n\
         extra-binary-caches = https://c\n",
    )
    .unwrap();
    assert_eq!(s.get("trusted-public-keys"), Some("a b"));
    assert_eq!(s.system_features(), set(&["y", "z"]));
    // Aliases work behind `extra-` too.
    assert_eq!(s.get("substituters"), Some("https://c"));
}

#[test]
fn unreadable_file_is_a_warning() {
    let tmp = tempfile::tempdir().unwrap();
    // A directory where a file is expected fails to read without needing permissions games
    // (the tests may run as root).
    std::fs::create_dir(tmp.path().join("nix.conf")).unwrap();
    let s = Settings::load(LoadOptions::new(tmp.path(), host())).unwrap();
    assert!(matches!(s.warnings(), [Warning::Unreadable { included_from: None, .. }]), "{:?}", s.warnings());

    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("sub.conf")).unwrap();
    std::fs::write(tmp.path().join("nix.conf"), "include sub.conf\nmax-jobs = 7\n").unwrap();
    let s = Settings::load(LoadOptions::new(tmp.path(), host())).unwrap();
    assert_eq!(s.max_jobs(), 7);
    assert!(matches!(
        s.warnings(),
        [Warning::Unreadable { included_from: Some(Origin::File { line: 1, .. }), .. }]
    ));
}

#[test]
fn absolute_include_from_nix_config() {
    let tmp = tempfile::tempdir().unwrap();
    let inc = tmp.path().join("abs.conf");
    std::fs::write(&inc, "max-jobs = 9\n").unwrap();
    let mut s = Settings::new("/etc/nix", None, host());
    s.apply_nix_config(&format!("include {}", inc.display())).unwrap();
    assert_eq!(s.max_jobs(), 9);
    assert_eq!(s.origin("max-jobs"), Some(&Origin::File { path: inc, line: 1 }));
}

#[test]
fn real_settings_block_from_nix_2_8() {
    // The block Nix 2.8 sent in the testbed's spy-accept capture (wire crate fixture),
    // reduced to the settings the hook reads.
    let mut s = load("basic").unwrap();
    s.apply_block([
        ("builders", "ssh://dummy x86_64-linux"),
        ("builders-use-substitutes", "false"),
        ("extra-platforms", "i686-linux x86_64-v1-linux x86_64-v2-linux x86_64-v3-linux"),
        ("max-build-log-size", "0"),
        ("max-jobs", "1"),
        ("max-silent-time", "0"),
        ("system", "x86_64-linux"),
        ("system-features", "benchmark big-parallel kvm nixos-test"),
        ("timeout", "0"),
        ("max-free", "18446744073709551615"),
    ])
    .unwrap();
    assert_eq!(s.builders(), "ssh://dummy x86_64-linux");
    assert_eq!(s.max_jobs(), 1);
    assert_eq!(s.extra_platforms().len(), 4);
    assert_eq!(s.system_features(), set(&["benchmark", "big-parallel", "kvm", "nixos-test"]));
    assert!(!s.builders_use_substitutes());
    assert_eq!(s.get("max-free"), Some("18446744073709551615"));
}

/// A settings block as the spy hook wrote it down (`name = value` per line, in Nix's order).
fn recorded_block(name: &str) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(fixture_dir(name)).unwrap();
    text.lines()
        .map(|l| {
            let (n, v) = l.split_once(" = ").unwrap_or_else(|| panic!("{name}: {l:?}"));
            (n.to_string(), v.to_string())
        })
        .collect()
}

#[test]
fn every_setting_nix_2_26_and_2_34_send_applies_without_a_warning() {
    for (fixture, count) in [("block-nix-2.26.3.txt", 110), ("block-nix-2.34.8.txt", 122)] {
        let block = recorded_block(fixture);
        assert_eq!(block.len(), count, "{fixture}");
        let mut s = Settings::new("/etc/nix", None, host());
        s.apply_block(block.iter().map(|(n, v)| (n, v))).unwrap_or_else(|e| panic!("{fixture}: {e}"));
        assert!(s.warnings().is_empty(), "{fixture}: {:?}", s.warnings());
        assert_eq!(s.builders(), "ssh://dummy x86_64-linux", "{fixture}");
        assert_eq!(s.max_jobs(), 0, "{fixture}");
        assert_eq!(s.system(), "x86_64-linux", "{fixture}");
        assert_eq!(
            s.system_features(),
            set(&["benchmark", "big-parallel", "kvm", "nixos-test", "uid-range"]),
            "{fixture}"
        );
        assert_eq!(s.extra_platforms().len(), 5, "{fixture}");
        assert_eq!((s.max_silent_time(), s.build_timeout(), s.max_build_log_size()), (0, 0, 0), "{fixture}");
        assert!(s.experimental_features().is_empty(), "{fixture}: an empty value turns nothing on");
        assert_eq!(s.local_store_features(), s.system_features(), "{fixture}");
    }
    // What 2.34 sends that 2.8 did not, or differently: kept as sent, none of them read.
    let mut s = Settings::new("/etc/nix", None, host());
    s.apply_block(recorded_block("block-nix-2.34.8.txt").iter().map(|(n, v)| (n, v))).unwrap();
    assert_eq!(s.get("max-free"), Some("9223372036854775807"));
    assert_eq!(s.get("external-builders"), Some("[]"), "a JSON value, not a list of words");
    assert_eq!(s.get("cores"), Some("0"));
    assert_eq!(s.get("connect-timeout"), Some("15"));
}

#[test]
fn experimental_features_add_to_the_local_store_features() {
    let mut s = Settings::new("/etc/nix", None, host());
    s.apply_block([("system-features", "kvm"), ("experimental-features", "nix-command ca-derivations")])
        .unwrap();
    assert_eq!(s.experimental_features(), set(&["ca-derivations", "nix-command"]));
    assert_eq!(s.system_features(), set(&["kvm"]), "the setting itself is unchanged");
    assert_eq!(s.local_store_features(), set(&["ca-derivations", "kvm"]));

    // `extra-` appends, and the default system features are the base when none are set.
    let mut s = Settings::new("/etc/nix", None, host());
    s.apply_nix_config("experimental-features = flakes\nextra-experimental-features = recursive-nix")
        .unwrap();
    assert_eq!(
        s.local_store_features(),
        set(&["benchmark", "big-parallel", "nixos-test", "recursive-nix", "uid-range"])
    );
}
