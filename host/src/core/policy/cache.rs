//! Precompiled policy images on disk, so that a hook process (one per accepted build) does not
//! compile the policy again. wasmtime's own cache decompresses on every hit; an image of our
//! own is only read and copied into place, far faster for large (Python, JS) components.
//!
//! wasmtime runs whatever machine code an image holds, as the hook's user (root under the
//! daemon). So an image is loaded only from a directory verified as ours ([`PrivateDir`]) and
//! only from a file opened there without following links and checked through that descriptor
//! (ours, regular, closed to others' writing), and what is deserialized is what was read
//! through it. A directory that fails the check is not used at all: policies are compiled each
//! time, with one warning that says how to fix it.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use anyhow::Result;
use nwh_files::private::{Access, PrivateDir};
use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::Engine;

/// Where compiled images live, and whether to use them at all.
#[derive(Clone, Debug)]
pub struct Cache {
    dir: Option<PathBuf>,
    /// The directory once checked (one check, one warning, per process), or why it is not used.
    opened: Arc<OnceLock<Result<PrivateDir, String>>>,
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
        Cache { dir: None, opened: Arc::default() }
    }

    pub fn at(dir: PathBuf) -> Self {
        Cache { dir: Some(dir), opened: Arc::default() }
    }

    /// `$XDG_CACHE_HOME/nix-wasm-hook`, else `$HOME/.cache/nix-wasm-hook`; none when neither
    /// is set (the hook then compiles each time, which is correct, only slower).
    pub fn default_location() -> Self {
        let base =
            std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()).map(PathBuf::from).or_else(|| {
                std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|h| Path::new(&h).join(".cache"))
            });
        match base {
            Some(b) => Cache::at(b.join("nix-wasm-hook")),
            None => Cache::disabled(),
        }
    }

    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Why the cache directory is not used, once it has been found unfit: the one warning.
    pub fn warning(&self) -> Option<String> {
        match self.opened.get() {
            Some(Err(why)) => Some(why.clone()),
            _ => None,
        }
    }

    /// `warning`, with the cache's own appended when it has one.
    pub fn with_warning(&self, warning: Option<String>) -> Option<String> {
        match (warning, self.warning()) {
            (Some(w), Some(c)) => Some(format!("{w}; {c}")),
            (w, c) => w.or(c),
        }
    }

    /// The cache directory, made and checked the first time it is needed.
    fn verified(&self) -> Option<&PrivateDir> {
        let dir = self.dir.as_ref()?;
        let opened = self.opened.get_or_init(|| {
            PrivateDir::create(dir, Access::Readable).map_err(|e| {
                format!("the policy cache is not used: {e}; policies are compiled each time until then")
            })
        });
        opened.as_ref().ok()
    }

    /// Returns the component for `bytes` (whose `sha256_hex` the caller already has: hashing
    /// an 18 MB Python component costs more than mapping its image), from the cache when a
    /// usable image is there.
    pub fn load(&self, engine: &Engine, bytes: &[u8], sha256: &str) -> Result<(Component, Source)> {
        let Some(dir) = self.verified() else {
            return Ok((Component::new(engine, bytes)?, Source::Compiled));
        };
        let name = format!("{}.cwasm", key(engine, sha256));
        if let Some(component) = cached(engine, dir, &name) {
            return Ok((component, Source::Cached));
        }
        let image = engine.precompile_component(bytes)?;
        // A cache that cannot be written must not stop a build. Whatever was at the name (a
        // link, another user's file) is replaced, not written through.
        let _ = dir.write_atomically(&name, &image);
        Ok((deserialize(engine, &image)?, Source::Compiled))
    }
}

/// The image at `name`, when it is a file of ours that wasmtime accepts. Anything else (absent,
/// a link, another user's, writable by others, from another wasmtime or engine configuration)
/// is a miss: the policy is compiled again and the image replaced.
fn cached(engine: &Engine, dir: &PrivateDir, name: &str) -> Option<Component> {
    let file = dir.open_own(name).ok()??;
    map_checked(engine, &file).ok()
}

/// Maps the image `file`, opened and checked as ours, without reading it: through its
/// descriptor's entry in `/proc/self/fd`, which names that open file and no path that could be
/// swapped meanwhile. Mapping instead of reading keeps a hit of a large (Python, JS) image cheap.
#[allow(unsafe_code)]
fn map_checked(engine: &Engine, file: &std::fs::File) -> Result<Component> {
    use std::os::fd::AsRawFd;
    let by_descriptor = format!("/proc/self/fd/{}", file.as_raw_fd());
    // SAFETY: wasmtime trusts precompiled images; this one is the open file checked as ours,
    // in a directory checked as ours (see the module's doc).
    Ok(unsafe { Component::deserialize_file(engine, by_descriptor) }?)
}

/// Content hash of the component plus everything that makes an image unusable elsewhere:
/// wasmtime's compatibility hash covers its exact version and the engine's configuration.
pub fn key(engine: &Engine, sha256: &str) -> String {
    let mut compat = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut compat);
    let mut h = Sha256::new();
    h.update(sha256.as_bytes());
    h.update(compat.finish().to_le_bytes());
    h.update(env!("CARGO_PKG_VERSION").as_bytes());
    nwh_nar::hash::base16_encode(&h.finalize()[..16])
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    nwh_nar::hash::base16_encode(&Sha256::digest(bytes))
}

#[allow(unsafe_code)]
fn deserialize(engine: &Engine, image: &[u8]) -> Result<Component> {
    // SAFETY: wasmtime trusts precompiled images. `image` is one this process compiled, or
    // was read through a descriptor of a file checked as ours, in a directory checked as ours,
    // never a path that could be swapped in between.
    Ok(unsafe { Component::deserialize(engine, image) }?)
}
