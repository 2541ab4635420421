//! The serve-protocol form of a [`BasicDerivation`] (docs/serve-protocol.md §5), both ways.

use std::io::{self, Read, Write};

use nwh_wire::{Reader, WireError, Writer};

use crate::derivation::{BasicDerivation, Output};

impl BasicDerivation {
    /// Writes the serve-protocol form (docs/serve-protocol.md §5). Maps iterate sorted, which is
    /// the order Nix sends and expects.
    pub fn write_to<W: Write>(&self, w: &mut Writer<W>) -> io::Result<()> {
        w.write_u64(self.outputs.len() as u64)?;
        for (name, out) in &self.outputs {
            w.write_str(name)?;
            w.write_str(&out.path)?;
            w.write_str(&out.hash_algo)?;
            w.write_str(&out.hash)?;
        }
        w.write_list(&self.input_srcs)?;
        w.write_str(&self.platform)?;
        w.write_str(&self.builder)?;
        w.write_list(&self.args)?;
        w.write_u64(self.env.len() as u64)?;
        for (key, value) in &self.env {
            w.write_str(key)?;
            w.write_str(value)?;
        }
        Ok(())
    }

    /// Reads the serve-protocol form, as a builder receives it with `BuildDerivation`. A name
    /// sent twice (Nix never does) keeps its last value.
    pub fn read_from<R: Read>(r: &mut Reader<R>) -> Result<BasicDerivation, WireError> {
        let mut drv = BasicDerivation::default();
        let outputs = r.read_u64()?;
        for _ in 0..outputs {
            let name = r.read_string()?;
            let path = r.read_string()?;
            let hash_algo = r.read_string()?;
            let hash = r.read_string()?;
            drv.outputs.insert(name, Output { path, hash_algo, hash });
        }
        drv.input_srcs = r.read_string_set()?;
        drv.platform = r.read_string()?;
        drv.builder = r.read_string()?;
        drv.args = r.read_string_list()?;
        let env = r.read_u64()?;
        for _ in 0..env {
            let key = r.read_string()?;
            let value = r.read_string()?;
            drv.env.insert(key, value);
        }
        Ok(drv)
    }
}
