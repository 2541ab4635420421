//! Nix derivation files (`.drv`, the ATerm form written by Nix) and the `BasicDerivation` that
//! a remote build sends over the serve protocol (docs/serve-protocol.md §5).
//!
//! ```text
//! Derive([outputs],[inputDrvs],[inputSrcs],"platform","builder",[args],[env])
//!   output   = ("name","path","hashAlgo","hash")
//!   inputDrv = ("/nix/store/…drv",["out",…])
//!   env      = ("key","value")
//! ```
//!
//! Nix writes every list of a `.drv` sorted and without duplicates, and [`Derivation::to_aterm`]
//! prints a parsed file back byte for byte. The parser is stricter than Nix's on two points that
//! only hand-made files hit: a repeated output, input or variable is an error (Nix silently keeps
//! one of them), and every string must be UTF-8.
//!
//! Modules: `derivation` (the types), `parse` (the `.drv` reader), `write` (the ATerm printer),
//! `wire` (the serve-protocol form of a `BasicDerivation`), `modulo` (the hash modulo and the
//! DrvOutput ids of floating content-addressed outputs), `error`.

mod derivation;
mod error;
mod modulo;
mod parse;
mod wire;
mod write;

pub use derivation::{BasicDerivation, Derivation, Output};
pub use error::{Found, ParseError, ReadError};
pub use modulo::{drv_output_id, ModuloError};
