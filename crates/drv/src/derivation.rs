//! The derivation types: a `.drv` as parsed, and the basic derivation a remote builder gets.

use std::collections::{BTreeMap, BTreeSet};

/// One output of a derivation, as written in the `.drv`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Output {
    /// Full store path; empty for floating content-addressed, deferred and impure outputs.
    pub path: String,
    /// `""` for input-addressed outputs, else the method prefix and algorithm, e.g.
    /// `sha256`, `r:sha256`, `text:sha256`.
    pub hash_algo: String,
    /// Base-16 hash for fixed outputs, `impure` for impure ones, else empty.
    pub hash: String,
}

impl Output {
    /// True for a fixed-output derivation's output (its hash is known in advance).
    pub fn is_fixed(&self) -> bool {
        !self.hash_algo.is_empty() && !self.hash.is_empty() && self.hash != "impure"
    }
}

/// A parsed `.drv` file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Derivation {
    /// Output name → output.
    pub outputs: BTreeMap<String, Output>,
    /// Input derivation path → names of the outputs used.
    pub input_drvs: BTreeMap<String, BTreeSet<String>>,
    /// Store paths used directly (sources, not built by a derivation).
    pub input_srcs: BTreeSet<String>,
    /// The `system` it builds for, e.g. `x86_64-linux`.
    pub platform: String,
    pub builder: String,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
}

/// A derivation as a remote builder receives it: no input derivations, all inputs as store
/// paths (docs/serve-protocol.md §5). The name is not part of it; the server takes it from the
/// `.drv` path that accompanies it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BasicDerivation {
    pub outputs: BTreeMap<String, Output>,
    pub input_srcs: BTreeSet<String>,
    pub platform: String,
    pub builder: String,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
}

impl Derivation {
    /// The output paths by output name; floating outputs (no path yet) are left out.
    pub fn output_paths(&self) -> BTreeMap<String, String> {
        output_paths(&self.outputs)
    }

    /// The derivation to send with `BuildDerivation`. `inputs_closure` is the input closure
    /// Nix hands the hook after `# accept`. When the derivation has input derivations, their
    /// outputs are only named through `inputDrvs`, which the remote does not get, so the
    /// sources are replaced by the whole closure. Without input derivations the sources are
    /// kept as they are: changing them would change a content-addressed derivation's identity.
    pub fn to_basic(&self, inputs_closure: &BTreeSet<String>) -> BasicDerivation {
        let input_srcs =
            if self.input_drvs.is_empty() { self.input_srcs.clone() } else { inputs_closure.clone() };
        BasicDerivation {
            outputs: self.outputs.clone(),
            input_srcs,
            platform: self.platform.clone(),
            builder: self.builder.clone(),
            args: self.args.clone(),
            env: self.env.clone(),
        }
    }
}

impl BasicDerivation {
    /// The output paths by output name; floating outputs (no path yet) are left out.
    pub fn output_paths(&self) -> BTreeMap<String, String> {
        output_paths(&self.outputs)
    }
}

fn output_paths(outputs: &BTreeMap<String, Output>) -> BTreeMap<String, String> {
    outputs
        .iter()
        .filter(|(_, o)| !o.path.is_empty())
        .map(|(name, o)| (name.clone(), o.path.clone()))
        .collect()
}
