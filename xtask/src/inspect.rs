//! What a Wasm file imports and exports (a small `wasm-tools component wit`/`print` stand-in).

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::path::Path;
use wasmparser::{Parser, Payload};

/// The top-level interface of a Wasm file.
#[derive(Debug, Default)]
pub struct Summary {
    pub component: bool,
    /// (full name, kind) of every top-level import.
    pub imports: Vec<(String, String)>,
    /// (full name, kind) of every top-level export.
    pub exports: Vec<(String, String)>,
}

impl Summary {
    pub fn import_names(&self) -> Vec<&str> {
        self.imports.iter().map(|(n, _)| n.as_str()).collect()
    }
    pub fn export_names(&self) -> Vec<&str> {
        self.exports.iter().map(|(n, _)| n.as_str()).collect()
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Validates `bytes` and lists its top-level imports and exports (nested modules and
/// components inside a component are skipped).
pub fn summarize(bytes: &[u8]) -> Result<Summary> {
    wasmparser::Validator::new().validate_all(bytes).context("invalid Wasm")?;
    let mut summary = Summary { component: Parser::is_component(bytes), ..Summary::default() };
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload? {
            Payload::Version { .. } => depth += 1,
            Payload::End(_) => depth -= 1,
            Payload::ComponentImportSection(reader) if depth == 1 => {
                for import in reader {
                    let import = import?;
                    let kind = format!("{:?}", import.ty);
                    summary.imports.push((import.name.full_name().into_owned(), kind));
                }
            }
            Payload::ComponentExportSection(reader) if depth == 1 => {
                for export in reader {
                    let export = export?;
                    let kind = format!("{:?}", export.kind);
                    summary.exports.push((export.name.full_name().into_owned(), kind));
                }
            }
            Payload::ImportSection(reader) if depth == 1 => {
                for group in reader {
                    for import in group? {
                        let (_, import) = import?;
                        summary.imports.push((
                            format!("{}::{}", import.module, import.name),
                            format!("{:?}", import.ty),
                        ));
                    }
                }
            }
            Payload::ExportSection(reader) if depth == 1 => {
                for export in reader {
                    let export = export?;
                    summary.exports.push((export.name.to_string(), format!("{:?}", export.kind)));
                }
            }
            _ => {}
        }
    }
    Ok(summary)
}

/// The WIT world a component implements, as text.
pub fn wit_text(bytes: &[u8]) -> Result<String> {
    let decoded = wit_component::decode(bytes).context("decoding the component's WIT")?;
    let resolve = decoded.resolve();
    let package = decoded.package();
    let nested: Vec<_> = resolve.packages.iter().map(|(id, _)| id).filter(|id| *id != package).collect();
    let mut printer = wit_component::WitPrinter::default();
    printer.print(resolve, package, &nested)?;
    Ok(printer.output.to_string())
}

pub fn print(path: &Path, wit: bool) -> Result<()> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        bail!("{} is not a Wasm file", path.display());
    }
    let summary = summarize(&bytes)?;
    println!("{}", path.display());
    println!("  size:    {} bytes", bytes.len());
    println!("  sha256:  {}", sha256_hex(&bytes));
    println!("  kind:    {}", if summary.component { "component" } else { "core module" });
    println!("  imports: {}", summary.imports.len());
    for (name, kind) in &summary.imports {
        println!("    {name}  ({kind})");
    }
    println!("  exports: {}", summary.exports.len());
    for (name, kind) in &summary.exports {
        println!("    {name}  ({kind})");
    }
    if wit && summary.component {
        println!("  wit:");
        for line in wit_text(&bytes)?.lines() {
            println!("    {line}");
        }
    }
    Ok(())
}
