//! One test per diagnostic of a machine line or of the `builders` value: file, line, column,
//! the words of the message, what was expected and the fix.

use crate::common;

use common::{error, parse, render, single, warning, Want};
use nwh_machines::Severity;

/// Parse, expect one diagnostic matching `want`, and return how many machines survived.
fn one(value: &str, want: Want) -> usize {
    let m = parse(value);
    want.check(single(&m));
    m.machines.len()
}

// ---- the Display format ----

#[test]
fn rendering_names_place_expectation_fix_and_line() {
    let m = parse("b0\n\nssh://b1 x86_64-linux - four");
    let shown = single(&m).to_string();
    assert_eq!(
        shown,
        "setting 'builders':3:25: error: max-jobs column is 'four', not a whole number\n\
         \x20 expected: an unsigned integer (builds at once), or '-' for the default 1\n\
         \x20 fix: write the number of builds to run at once in digits, e.g. '4'\n\
         \x20 3 | ssh://b1 x86_64-linux - four\n\
         \x20   |                         ^^^^"
    );
}

#[test]
fn carets_follow_tabs() {
    let m = parse("b1\tx86_64-linux\t-\tfour");
    let shown = single(&m).to_string();
    assert!(shown.ends_with("1 | b1\tx86_64-linux\t-\tfour\n    |   \t            \t \t^^^^"), "{shown:?}");
}

#[test]
fn bad_line_is_skipped_and_good_lines_serve() {
    let m = parse("good1 - - 2\nbad - - x\ngood2");
    let uris: Vec<_> = m.machines.iter().map(|b| b.uri.as_str()).collect();
    assert_eq!(uris, ["ssh://good1", "ssh://good2"]);
    assert_eq!(m.diagnostics.len(), 1);
    assert!(m.diagnostics[0].is_error());
    assert_eq!(m.diagnostics[0].line, 2);
}

#[test]
fn every_error_of_a_line_is_reported() {
    let m = parse("b1 - - x y");
    let cols: Vec<_> = m.diagnostics.iter().map(|d| d.column).collect();
    assert_eq!(cols, [8, 10], "{}", render(&m));
    assert!(m.machines.is_empty());
}

// ---- column 1: store URI ----

#[test]
fn uri_column_unset() {
    let n = one(
        "- x86_64-linux",
        Want {
            expected: &["store URI", "host name"],
            fix: &["column 1", "ssh://"],
            ..error(1, 1, &["store URI column is '-'"])
        },
    );
    assert_eq!(n, 0);
}

#[test]
fn uri_without_host() {
    one(
        "ssh-ng:// x86_64-linux",
        Want {
            expected: &["[user@]host"],
            fix: &["host name"],
            ..error(1, 1, &["'ssh-ng://' names no host"])
        },
    );
}

#[test]
fn bare_number_host() {
    // `builders = 5` becomes the machine ssh://5.
    let n = one(
        "5",
        Want {
            expected: &["host name"],
            fix: &["max-jobs = 5"],
            ..warning(1, 1, &["'5' is a bare number", "ssh://5", "builders = 5"])
        },
    );
    assert_eq!(n, 1, "a warning keeps the machine");
}

#[test]
fn host_starting_with_dash() {
    one(
        "b0 ; ssh://nix@-oProxyCommand=evil",
        Want {
            expected: &["host name first"],
            fix: &["column 1"],
            ..warning(1, 6, &["'-oProxyCommand=evil' starts with '-'", "option"])
        },
    );
}

#[test]
fn host_with_characters_no_host_name_has() {
    one(
        "ssh://build$er x86_64-linux",
        Want {
            expected: &["letters, digits"],
            fix: &["correct the host name"],
            ..warning(1, 1, &["'build$er'", "'$'"])
        },
    );
}

#[test]
fn quotes_are_literal() {
    // A typical nix.conf mistake: builders = "ssh://b1 x86_64-linux"
    one(
        "\"ssh://b1 x86_64-linux\"",
        Want {
            expected: &["unquoted"],
            fix: &["remove the quotes"],
            ..warning(1, 1, &["quote", "literally"])
        },
    );
    one(
        "b1 x86_64-linux - 1 1 'kvm'",
        Want { expected: &["unquoted"], fix: &["remove the quotes"], ..warning(1, 23, &["quote"]) },
    );
}

#[test]
fn localhost_over_ssh() {
    for (line, uri) in
        [("localhost", "ssh://localhost"), ("ssh-ng://root@127.0.0.1", "ssh-ng://root@127.0.0.1")]
    {
        one(
            line,
            Want {
                expected: &["remote machine"],
                fix: &["max-jobs", "remote-store="],
                ..warning(1, 1, &[uri, "same Nix store", "hangs"])
            },
        );
    }
}

#[test]
fn local_store_as_builder() {
    one(
        "daemon x86_64-linux",
        Want {
            expected: &["remote machine"],
            fix: &["max-jobs"],
            ..warning(1, 1, &["'daemon'", "own Nix store"])
        },
    );
}

// ---- column 2, 6, 7: lists ----

#[test]
fn space_after_comma_in_a_list() {
    one(
        "b1 x86_64-linux - 1 1 kvm, big-parallel",
        Want {
            expected: &["without spaces"],
            fix: &["'kvm,big-parallel'"],
            ..warning(1, 23, &["'kvm,'", "'big-parallel' starts a new column"])
        },
    );
}

// ---- column 3: ssh key ----

#[test]
fn relative_ssh_key() {
    let n = one(
        "b1 x86_64-linux id_builder",
        Want {
            expected: &["absolute path"],
            fix: &["absolute path", "realpath id_builder"],
            ..error(
                1,
                17,
                &[
                    "'id_builder' is a relative path",
                    "working directory at '/'",
                    "'/id_builder'",
                    "does not exist",
                ],
            )
        },
    );
    assert_eq!(n, 0);
}

#[test]
fn relative_ssh_key_shows_an_existing_resolution() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("id"), "key").unwrap();
    let mut ctx = common::ctx();
    ctx.cwd = dir.path().to_owned();
    let m = nwh_machines::parse_builders("b1 - id", nwh_machines::BUILDERS_SETTING, &ctx);
    let d = single(&m);
    let resolved = dir.path().join("id").display().to_string();
    assert!(d.message.contains(&format!("working directory at '{}'", dir.path().display())), "{d}");
    assert!(d.message.contains(&format!("'{resolved}' (which exists)")), "{d}");
}

#[test]
fn tilde_ssh_key() {
    one(
        "b1 - ~/.ssh/id_builder",
        Want {
            expected: &["absolute path"],
            fix: &["realpath ~/.ssh/id_builder"],
            ..error(1, 6, &["starts with '~'", "root's under nix-daemon"])
        },
    );
}

#[test]
fn slid_column_in_ssh_key() {
    // The systems column was left out, so max-jobs landed in the key column.
    one(
        "b1 x86_64-linux 4",
        Want { fix: &["looks like a number", "write '-'"], ..error(1, 17, &["'4' is a relative path"]) },
    );
}

#[test]
fn missing_absolute_ssh_key() {
    let n = one(
        "b1 - /nonexistent/id_builder",
        Want {
            expected: &["private key"],
            fix: &["ssh-keygen", "/nonexistent/id_builder"],
            ..warning(1, 6, &["'/nonexistent/id_builder' does not exist"])
        },
    );
    assert_eq!(n, 1);
}

// ---- column 4: max-jobs ----

#[test]
fn max_jobs_not_a_number() {
    one(
        "b1 - - four",
        Want {
            expected: &["unsigned integer", "'-' for the default 1"],
            fix: &["digits", "'4'"],
            ..error(1, 8, &["max-jobs column is 'four', not a whole number"])
        },
    );
}

#[test]
fn max_jobs_negative() {
    one(
        "b1 - - -1",
        Want {
            expected: &["unsigned integer"],
            fix: &["0 or more", "'-' alone"],
            ..error(1, 8, &["'-1', which is negative"])
        },
    );
}

#[test]
fn max_jobs_fraction() {
    one(
        "b1 - - 2.5",
        Want {
            expected: &["unsigned integer"],
            fix: &["whole number", "'2'"],
            ..error(1, 8, &["'2.5', not a whole number"])
        },
    );
}

#[test]
fn max_jobs_too_large() {
    // Each slot is a lock file every decision looks at: four billion would stall every build.
    for text in ["b1 - - 4294967295", "b1 - - 4294967296", "b1 - - 1025"] {
        one(
            text,
            Want {
                expected: &["unsigned integer"],
                fix: &["use at most 1024"],
                ..error(1, 8, &["builds at once this hook takes on one machine"])
            },
        );
    }
    let ok =
        nwh_machines::parse_builders("b1 - - 1024", "test", &nwh_machines::ParseContext::new("x86_64-linux"));
    assert_eq!(ok.machines[0].max_jobs, 1024);
}

#[test]
fn machines_past_the_bound_are_refused_with_one_error() {
    let text: String = (0..nwh_machines::MAX_MACHINES + 5).map(|i| format!("ssh://b{i}\n")).collect();
    let parsed =
        nwh_machines::parse_builders(&text, "test", &nwh_machines::ParseContext::new("x86_64-linux"));
    assert_eq!(parsed.machines.len(), nwh_machines::MAX_MACHINES);
    assert_eq!(parsed.diagnostics.len(), 1, "{:?}", parsed.diagnostics);
    let said = parsed.diagnostics[0].to_string();
    assert!(said.starts_with("test:10001:1: error: more than 10000 machines"), "{said}");
}

#[test]
fn max_jobs_holding_a_path_hints_at_slid_columns() {
    // The ssh key got one column too far right.
    one(
        "b1 x86_64-linux - /dev/null 4",
        Want {
            fix: &["looks like a path", "column may be missing or doubled"],
            ..error(1, 19, &["'/dev/null', not a whole number"])
        },
    );
}

// ---- column 5: speed factor ----

#[test]
fn speed_factor_not_a_number() {
    one(
        "b1 - - 1 fast",
        Want {
            expected: &["number >= 0", "default 1"],
            fix: &["'1.5'"],
            ..error(1, 10, &["speed factor column is 'fast', not a number"])
        },
    );
}

#[test]
fn speed_factor_negative() {
    one(
        "b1 - - 1 -3",
        Want {
            expected: &["number >= 0"],
            fix: &[">= 0", "'-' alone"],
            ..error(1, 10, &["'-3', which is negative", "speed factor must be >= 0"])
        },
    );
}

#[test]
fn speed_factor_not_finite() {
    one(
        "b1 - - 1 inf",
        Want { expected: &["number >= 0"], fix: &["'2'"], ..error(1, 10, &["'inf', not a finite number"]) },
    );
}

// ---- column 8: host key ----

#[test]
fn host_key_bad_base64_points_at_the_character() {
    one(
        "b1 - - - - - - c3No!ZWQ",
        Want {
            expected: &["base64", "ssh_host_ed25519_key.pub"],
            fix: &["copy the whole base64"],
            ..error(1, 20, &["not valid base64", "'!'"])
        },
    );
}

#[test]
fn host_key_cut_short() {
    one(
        "b1 - - - - - - c3NoL",
        Want { expected: &["base64"], fix: &["cut short"], ..error(1, 16, &["not valid base64"]) },
    );
}

#[test]
fn host_key_given_as_plain_key_line() {
    // The plain line splits into columns 8 and 9; only the real mistake is reported.
    let n = one(
        "b1 - - - - - - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKey",
        Want {
            expected: &["base64"],
            fix: &["c3NoLWVkMjU1MTkgQUFBQUMzTnphQzFsWkRJMU5URTVBQUFBSUtleQ=="],
            ..error(1, 16, &["holds the key line itself"])
        },
    );
    assert_eq!(n, 0);
}

#[test]
fn host_key_given_as_bare_blob() {
    // The second word of a .pub file instead of the base64 of the whole line.
    one(
        "b1 - - - - - - AAAAC3NzaC1lZDI1NTE5AAAAIKey",
        Want {
            expected: &["whole public host key line"],
            fix: &["c3NoLWVkMjU1MTkgQUFBQUMzTnphQzFsWkRJMU5URTVBQUFBSUtleQ=="],
            ..error(1, 16, &["bare ssh-ed25519 key blob"])
        },
    );
}

#[test]
fn host_key_decodes_to_text_that_is_no_key_line() {
    one(
        "b1 - - - - - - aGVsbG8=",
        Want {
            expected: &["base64"],
            fix: &["base64 -w0"],
            ..error(1, 16, &["decodes to 'hello'", "TYPE KEY"])
        },
    );
}

#[test]
fn host_key_decodes_to_binary() {
    one(
        "b1 - - - - - - AAEC",
        Want { expected: &["base64"], fix: &["base64 -w0"], ..error(1, 16, &["binary data"]) },
    );
}

// ---- beyond column 8 ----

#[test]
fn extra_columns() {
    let n = one(
        "b1 - - 1 1 kvm - - extra1 extra2",
        Want {
            expected: &["at most 8 columns", "host-key"],
            fix: &["remove them"],
            ..warning(1, 20, &["2 extra column(s)", "'extra1 extra2'"])
        },
    );
    assert_eq!(n, 1);
}

// ---- lines that Nix 2.8–2.28.1 and Lix read differently ----

#[test]
fn old_nix_reads_after_semicolon_in_comment() {
    let m = parse("b1 x86_64-linux # fast; b2 aarch64-linux");
    assert_eq!(m.machines.len(), 1, "current Nix: one machine");
    Want {
        expected: &["no ';' inside comments"],
        fix: &["remove the ';'"],
        ..warning(1, 25, &["Nix 2.8–2.28.1 and Lix", "'b2 aarch64-linux'", "another machine"])
    }
    .check(single(&m));
}

#[test]
fn old_nix_rejects_indented_comment() {
    let m = parse("b1\n    # indented comment\nb2");
    assert_eq!(m.machines.len(), 2);
    Want {
        expected: &["no whitespace-only entries"],
        fix: &["start the comment at the beginning"],
        ..warning(2, 1, &["comment line is indented", "store URL was not found", "stop every build"])
    }
    .check(single(&m));
}

#[test]
fn old_nix_rejects_whitespace_entry() {
    one(
        "b1 ;  # x",
        Want {
            expected: &["no whitespace-only entries"],
            fix: &["remove the whitespace"],
            ..warning(1, 5, &["only whitespace", "Nix 2.8–2.28.1"])
        },
    );
}

#[test]
fn old_nix_rejects_carriage_return_line() {
    let m = parse("b1\r\n\r\nb2\r\n");
    assert_eq!(m.machines.len(), 2);
    Want {
        expected: &["no whitespace-only entries"],
        fix: &["dos2unix"],
        ..warning(2, 1, &["carriage return"])
    }
    .check(single(&m));
}

#[test]
fn old_nix_ignores_indented_include() {
    let m = parse("  @/nonexistent/machines");
    let old: Vec<_> = m.diagnostics.iter().filter(|d| d.message.contains("indented '@'")).collect();
    assert_eq!(old.len(), 1, "{}", render(&m));
    Want {
        expected: &["'@' first in the entry"],
        fix: &["remove the whitespace before '@'"],
        ..warning(1, 1, &["'@/nonexistent/machines' as a machine"])
    }
    .check(old[0]);
    // Current Nix does include it: the missing-file warning proves the include was tried.
    assert!(
        m.diagnostics.iter().any(|d| d.column == 4 && d.message.contains("does not exist")),
        "{}",
        render(&m)
    );
}

#[test]
fn severity_orders_warning_below_error() {
    assert!(Severity::Warning < Severity::Error);
}

#[test]
fn non_ascii_character_in_host_key() {
    one(
        "b1 - - - - - - c3Noé",
        Want {
            expected: &["base64"],
            fix: &["copy the whole base64"],
            ..error(1, 20, &["'é' is not a base64 character"])
        },
    );
}

#[test]
fn a_uri_no_lock_file_can_be_named_after_is_refused() {
    one(
        "ssh://b\u{0}1 x86_64-linux",
        Want {
            expected: &["printable characters"],
            fix: &["remove the character"],
            ..error(1, 1, &["control character '\\0'"])
        },
    );
    let long = format!("ssh://{} x86_64-linux", "b".repeat(nwh_machines::MAX_URI_LEN));
    one(
        &long,
        Want { expected: &["at most 240 bytes"], fix: &["Host alias"], ..error(1, 1, &["246 bytes long"]) },
    );
}

#[test]
fn a_list_column_past_the_bound_is_refused() {
    let features: Vec<String> = (0..=nwh_machines::MAX_LIST).map(|i| format!("f{i}")).collect();
    let line = format!("ssh://b1 x86_64-linux - 1 1 {}", features.join(","));
    one(
        &line,
        Want {
            expected: &["at most 256"],
            fix: &["list only the supported features"],
            ..error(1, 29, &["column 6 lists 257 supported features"])
        },
    );
}
