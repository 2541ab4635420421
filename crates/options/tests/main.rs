//! Each options file in tests/fixtures is a test case: its first line says what reading it
//! gives, `# expect: ok` or `# expect: <words the error contains>`.

use std::path::Path;

use nwh_options::Options;

#[test]
fn every_fixture_reads_as_its_first_line_says() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut cases = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let expect = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{}: the first line must be `# expect: …`", path.display()));
        let got = Options::from_file(&path, true);
        match (expect, got) {
            ("ok", Ok(_)) => {}
            ("ok", Err(e)) => panic!("{}: {e:#}", path.display()),
            (words, Ok(o)) => panic!("{}: expected an error with {words:?}, read {o:?}", path.display()),
            (words, Err(e)) => {
                let msg = format!("{e:#}");
                assert!(msg.contains(words), "{}: {msg}", path.display());
                assert!(msg.contains(&path.display().to_string()), "the error names the file: {msg}");
            }
        }
        cases += 1;
    }
    assert!(cases >= 8, "{cases} fixtures");
}

#[test]
fn every_key_of_the_full_file_is_read() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/every-key.toml");
    let o = Options::from_file(&path, true).unwrap();
    assert_eq!(o.connect_timeout(), std::time::Duration::from_secs(20));
    assert_eq!(o.postpone_wait(), std::time::Duration::ZERO);
    assert!(!o.connect_before_accept());
    assert_eq!(o.trace_max_bytes(), 1 << 20);
    assert_eq!(o.state_dir(), Path::new("/nix/var/nix/nix-wasm-hook"));
    assert_eq!(o.machines.as_deref(), Some("@/etc/nix/nix-wasm-hook.machines"));
}
