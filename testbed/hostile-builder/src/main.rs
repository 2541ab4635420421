//! A hostile builder, for the test bed's attacks on the hook (docs/security.md): it is the
//! `remote-program` of an `ssh://` machines line, starts the real `nix-store` with the
//! arguments it was given, relays every request to it, and changes only what its attack
//! says. Everything else is the real store's answer, so a hook that trusts the builder for
//! anything but the contents of the outputs it asked for is caught by the one lie.
//!
//! `nwh-hostile-builder ATTACK [VALUE] -- NIX-STORE-ARGS…`, attacks:
//! - `honest`: changes nothing (the control);
//! - `extra-path PATH`: announces PATH too in every answer about paths (its NAR: one small
//!   file), and serves that NAR for it;
//! - `newline-reference`: gives each announced path a reference with a newline in it, which
//!   reads as a second record of a registration text;
//! - `short-announcement`: announces each NAR 8 bytes shorter than what it sends;
//! - `other-contents`: sends one small file for every path asked about, with a path info that
//!   matches those bytes (a fixed output with other contents than its hash says);
//! - `dotdot-entry`: sends, for every path asked about, a NAR of a directory with an entry
//!   named `..` (a file beside the store path, if it were unpacked as named);
//! - `many-references`: gives each announced path 70 000 references, past any real path.

use std::collections::BTreeSet;
use std::io::{BufReader, Write};
use std::process::{Command, ExitCode, Stdio};

use anyhow::{bail, Context, Result};
use nwh_serve::{PathInfo, ServeClient, ServeRequest, ServeServer};
use sha2::{Digest, Sha256};

enum Attack {
    Honest,
    ExtraPath(String),
    NewlineReference,
    ShortAnnouncement,
    OtherContents,
    DotDotEntry,
    ManyReferences,
}

/// The contents a hostile builder plants.
const PLANTED: &[u8] = b"planted by a hostile builder\n";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nwh-hostile-builder: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let split = args.iter().position(|a| a == "--").context("usage: ATTACK [VALUE] -- NIX-STORE-ARGS…")?;
    let attack = match &args[..split] {
        [a] if a == "honest" => Attack::Honest,
        [a, path] if a == "extra-path" => Attack::ExtraPath(path.clone()),
        [a] if a == "newline-reference" => Attack::NewlineReference,
        [a] if a == "short-announcement" => Attack::ShortAnnouncement,
        [a] if a == "other-contents" => Attack::OtherContents,
        [a] if a == "dotdot-entry" => Attack::DotDotEntry,
        [a] if a == "many-references" => Attack::ManyReferences,
        other => bail!("unknown attack {other:?}"),
    };
    let mut real = Command::new("nix-store")
        .args(&args[split + 1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting nix-store")?;
    let (to_real, from_real) = (real.stdin.take().expect("piped"), real.stdout.take().expect("piped"));
    let mut client = ServeClient::handshake("the real store", from_real, to_real)?;
    let mut server = ServeServer::handshake(std::io::stdin().lock(), std::io::stdout().lock())?;
    while let Some(request) = server.next_request()? {
        relay(&attack, request, &mut client, &mut server)?;
    }
    drop(client);
    real.wait()?;
    Ok(())
}

fn relay<R, W, CR, CW>(
    attack: &Attack,
    request: ServeRequest,
    real: &mut ServeClient<CR, CW>,
    server: &mut ServeServer<R, W>,
) -> Result<()>
where
    R: std::io::Read,
    W: Write,
    CR: std::io::Read,
    CW: Write,
{
    match request {
        ServeRequest::QueryValidPaths { lock, substitute, paths } => {
            server.reply_valid_paths(real.query_valid_paths(&paths, lock, substitute)?)?
        }
        ServeRequest::QueryPathInfos { paths } => {
            let infos = real.query_path_infos(&paths)?;
            server.reply_path_infos(&lie_about(attack, &paths, infos))?
        }
        ServeRequest::DumpStorePath { path } => match attack {
            Attack::ExtraPath(extra) if *extra == path => {
                server.reply_nar(&mut planted_nar().as_slice())?;
            }
            Attack::OtherContents => {
                server.reply_nar(&mut planted_nar().as_slice())?;
            }
            Attack::DotDotEntry => {
                // Written as it is: our own server would refuse to send such a NAR.
                let mut sink = server.nar_sink();
                sink.write_all(&dotdot_nar())?;
                sink.finish()?;
            }
            _ => {
                let mut sink = server.nar_sink();
                real.dump_store_path(&path, &mut sink)?;
                sink.finish()?;
            }
        },
        ServeRequest::AddToStoreNar { path, info, .. } => {
            real.add_to_store_nar(&path, &info, &mut BufReader::new(server.nar_reader()?))?;
            server.reply_ok()?
        }
        ServeRequest::ImportPaths => {
            real.import_paths(&mut server.export_reader()?)?;
            server.reply_ok()?
        }
        ServeRequest::BuildDerivation { drv_path, drv, options } => {
            server.reply_build_result(&real.build_derivation(&drv_path, &drv, &options)?)?
        }
        ServeRequest::BuildPaths { paths, options } => {
            server.reply_build_paths(&real.build_paths(&paths, &options)?)?
        }
        ServeRequest::QueryClosure { include_outputs, paths } => {
            server.reply_closure(real.query_closure(&paths, include_outputs)?)?
        }
        ServeRequest::ExportPaths { .. } => bail!("ExportPaths is not relayed"),
    }
    Ok(())
}

/// The real answer to `QueryPathInfos`, changed as the attack says.
fn lie_about(
    attack: &Attack,
    asked: &BTreeSet<String>,
    mut infos: Vec<(String, PathInfo)>,
) -> Vec<(String, PathInfo)> {
    match attack {
        Attack::Honest => {}
        Attack::ExtraPath(extra) => infos.push((extra.clone(), planted_info())),
        Attack::NewlineReference => {
            for (path, info) in &mut infos {
                // After the real record, a second one: the path again with a hash of zeros and
                // no references, as `nix-store --register-validity` would read it.
                info.references.insert(format!("{path}\n{}\n1\n\n0", "0".repeat(64)));
            }
        }
        Attack::ShortAnnouncement => {
            for (_, info) in &mut infos {
                info.nar_size -= 8;
                info.download_size = info.nar_size;
            }
        }
        Attack::OtherContents => {
            infos = asked.iter().map(|p| (p.clone(), planted_info())).collect();
        }
        Attack::DotDotEntry => {
            infos = asked.iter().map(|p| (p.clone(), info_of(&dotdot_nar()))).collect();
        }
        Attack::ManyReferences => {
            for (path, info) in &mut infos {
                let (dir, base) = path.rsplit_once('/').expect("a store path");
                info.references.extend((0..70_000).map(|i| format!("{dir}/{:032}{}", i, &base[32..])));
            }
        }
    }
    infos
}

fn planted_info() -> PathInfo {
    info_of(&planted_nar())
}

fn info_of(nar: &[u8]) -> PathInfo {
    PathInfo {
        nar_size: nar.len() as u64,
        download_size: nar.len() as u64,
        nar_hash: format!("sha256:{}", nwh_nar::hash::nix32_encode(&Sha256::digest(nar))),
        ..PathInfo::default()
    }
}

/// The NAR of one regular file holding [`PLANTED`].
fn planted_nar() -> Vec<u8> {
    nar_of(&[b"nix-archive-1", b"(", b"type", b"regular", b"contents", PLANTED, b")"])
}

/// A NAR of a directory whose one entry is named `..`, holding [`PLANTED`].
fn dotdot_nar() -> Vec<u8> {
    nar_of(&[
        b"nix-archive-1",
        b"(",
        b"type",
        b"directory",
        b"entry",
        b"(",
        b"name",
        b"..",
        b"node",
        b"(",
        b"type",
        b"regular",
        b"contents",
        PLANTED,
        b")",
        b")",
        b")",
    ])
}

/// The NAR made of `strings`, each as the format writes one: its length, its bytes, padding.
fn nar_of(strings: &[&[u8]]) -> Vec<u8> {
    let mut nar = Vec::new();
    for s in strings {
        nar.extend_from_slice(&(s.len() as u64).to_le_bytes());
        nar.extend_from_slice(s);
        nar.resize(nar.len().next_multiple_of(8), 0);
    }
    nar
}
