//! Precompiled policy images on disk, so that a hook process (one per accepted build) does not
//! compile the policy again. wasmtime's own cache decompresses and copies on every hit; an
//! mmapped `.cwasm` of our own is ~70× faster for large (Python, JS) components.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::Engine;

/// Where compiled images live, and whether to use them at all.
#[derive(Clone, Debug)]
pub struct Cache {
    dir: Option<PathBuf>,
}

/// How a component was obtained; reported by `check` and in traces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Compiled,
    Cached,
}

/// `cache-dir`: unset is the default location, empty turns the cache off.
impl From<&nwh_options::Options> for Cache {
    fn from(opts: &nwh_options::Options) -> Cache {
        match &opts.cache_dir {
            Some(p) if p.as_os_str().is_empty() => Cache::disabled(),
            Some(p) => Cache::at(p.clone()),
            None => Cache::default_location(),
        }
    }
}

impl Cache {
    pub fn disabled() -> Self {
        Cache { dir: None }
    }

    pub fn at(dir: PathBuf) -> Self {
        Cache { dir: Some(dir) }
    }

    /// `$XDG_CACHE_HOME/nix-wasm-hook`, else `$HOME/.cache/nix-wasm-hook`; none when neither
    /// is set (the hook then compiles each time, which is correct, only slower).
    pub fn default_location() -> Self {
        let base =
            std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()).map(PathBuf::from).or_else(|| {
                std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|h| Path::new(&h).join(".cache"))
            });
        Cache { dir: base.map(|b| b.join("nix-wasm-hook")) }
    }

    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Returns the component for `bytes` (whose `sha256_hex` the caller already has: hashing
    /// an 18 MB Python component costs more than mapping its image), from the cache when a
    /// usable image is there.
    pub fn load(&self, engine: &Engine, bytes: &[u8], sha256: &str) -> Result<(Component, Source)> {
        let Some(dir) = &self.dir else {
            return Ok((Component::new(engine, bytes)?, Source::Compiled));
        };
        let path = dir.join(format!("{}.cwasm", key(engine, sha256)));
        if path.exists() && private_to_us(dir) {
            // An image from another wasmtime or another engine config is refused by
            // wasmtime; that is a miss, not an error.
            if let Ok(component) = deserialize(engine, &path) {
                return Ok((component, Source::Cached));
            }
        }
        let image = engine.precompile_component(bytes)?;
        // A cache that cannot be written must not stop a build.
        let _ = store_atomically(dir, &path, &image);
        let component = match deserialize(engine, &path) {
            Ok(c) => c,
            Err(_) => Component::new(engine, bytes)?,
        };
        Ok((component, Source::Compiled))
    }
}

/// Content hash of the component plus everything that makes an image unusable elsewhere.
pub fn key(engine: &Engine, sha256: &str) -> String {
    let mut compat = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut compat);
    let mut h = Sha256::new();
    h.update(sha256.as_bytes());
    h.update(compat.finish().to_le_bytes());
    h.update(env!("CARGO_PKG_VERSION").as_bytes());
    h.update(b"wasmtime-48.0.8");
    hex(&h.finalize()[..16])
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[allow(unsafe_code)]
fn deserialize(engine: &Engine, path: &Path) -> Result<Component> {
    // SAFETY: wasmtime trusts precompiled images. We only map files that this code wrote
    // (atomically, into a directory created 0700 for the current user), never user input.
    Ok(unsafe { Component::deserialize_file(engine, path) }?)
}

/// wasmtime runs whatever machine code an image holds, so only a directory that nobody else
/// can write into is trusted.
fn private_to_us(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match fs::metadata(dir) {
        Ok(m) => m.uid() == rustix::process::geteuid().as_raw() && m.mode() & 0o022 == 0,
        Err(_) => false,
    }
}

fn store_atomically(dir: &Path, path: &Path, image: &[u8]) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating the policy cache {}", dir.display()))?;
    let tmp =
        dir.join(format!(".tmp-{}-{}", std::process::id(), path.file_name().unwrap().to_string_lossy()));
    let mut f = fs::File::create(&tmp)?;
    f.write_all(image)?;
    f.sync_all()?;
    fs::rename(&tmp, path)?;
    Ok(())
}
