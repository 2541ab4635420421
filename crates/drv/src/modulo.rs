//! The hash modulo of a derivation and the DrvOutput ids (`sha256:<hex>!<output>`) under which
//! Nix records the realisation of a floating content-addressed output.
//!
//! Nix's `hashDerivationModulo` with outputs masked (`staticOutputHashes`): the ATerm of the
//! derivation with every output path and every environment variable named after an output
//! printed empty, its input derivations replaced by their own hashes modulo, hashed with
//! sha256. Every output of the derivation gets that same hash (Nix 2.8 to 2.34: there is no
//! per-output step); an output's id is `sha256:<base-16 hash>!<output name>`.
//!
//! Only derivations without input derivations are handled: that is what Nix hands a hook for a
//! floating content-addressed derivation (it resolves one with inputs first, replacing its
//! input derivations by their outputs' paths), and hashing input derivations would need their
//! `.drv` files. Fixed-output derivations (hashed differently, and with known paths) and impure
//! ones (whose hash Nix 2.8 fixes to a constant) are refused too.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::derivation::{Derivation, Output};

/// Why [`Derivation::hash_modulo`] cannot give a derivation's hash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ModuloError {
    #[error("it has input derivations (Nix resolves a content-addressed derivation before a hook gets it)")]
    InputDerivations,
    #[error("output '{0}' is a fixed output (its hash modulo is computed differently)")]
    Fixed(String),
    #[error("output '{0}' is impure")]
    Impure(String),
}

impl Output {
    /// True for a floating content-addressed output: no path yet, a hash algorithm, no hash.
    pub fn is_floating(&self) -> bool {
        self.path.is_empty() && !self.hash_algo.is_empty() && self.hash.is_empty()
    }
}

impl Derivation {
    /// True when some output is floating content-addressed (Nix's `ca-derivations`): its path
    /// is only known after the build, through the realisation the builder reports.
    pub fn has_floating_outputs(&self) -> bool {
        self.outputs.values().any(Output::is_floating)
    }

    /// The ATerm that Nix hashes for the hash modulo: output paths, and the values of the
    /// environment variables named after outputs, printed empty.
    pub fn masked_aterm(&self) -> String {
        let mut masked = self.clone();
        for output in masked.outputs.values_mut() {
            output.path.clear();
        }
        for name in self.outputs.keys() {
            if let Some(value) = masked.env.get_mut(name) {
                value.clear();
            }
        }
        masked.to_aterm()
    }

    /// The derivation's hash modulo (sha256 of [`Derivation::masked_aterm`]), the same for all
    /// its outputs, in base 16.
    pub fn hash_modulo(&self) -> Result<String, ModuloError> {
        if !self.input_drvs.is_empty() {
            return Err(ModuloError::InputDerivations);
        }
        for (name, output) in &self.outputs {
            if output.hash == "impure" {
                return Err(ModuloError::Impure(name.clone()));
            }
            if output.is_fixed() {
                return Err(ModuloError::Fixed(name.clone()));
            }
        }
        let digest = Sha256::digest(self.masked_aterm().as_bytes());
        Ok(nwh_nar::hash::base16_encode(&digest))
    }

    /// Output name → DrvOutput id (`sha256:<hash modulo>!<name>`), for every output.
    pub fn drv_output_ids(&self) -> Result<BTreeMap<String, String>, ModuloError> {
        let hash = self.hash_modulo()?;
        Ok(self.outputs.keys().map(|name| (name.clone(), drv_output_id(&hash, name))).collect())
    }
}

/// A DrvOutput id as Nix prints it: `sha256:<base-16 hash>!<output name>`.
pub fn drv_output_id(hash_modulo: &str, output: &str) -> String {
    format!("sha256:{hash_modulo}!{output}")
}
