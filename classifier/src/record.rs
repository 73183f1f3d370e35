//! Burn records (burnpack files) as this crate writes them.
//!
//! Burn gives every parameter a random id and writes it into the record. Only an optimiser
//! reads those ids, and no optimiser state is saved, so they are replaced by their positions:
//! the same weights then always give the same bytes, and the content-addressed store keeps a
//! network that a re-run took over, or trained again identically, once.

use std::path::Path;

use burn::module::{Module, ModuleMapper, Param, ParamId};
use burn::tensor::{Bool, Int, Tensor};

use crate::error::Error;

/// Numbers a module's parameters 1, 2, 3… in the order the module lists them.
struct NumberParams(u64);

impl NumberParams {
    fn next(&mut self) -> ParamId {
        self.0 += 1;
        ParamId::from(self.0)
    }
}

impl ModuleMapper for NumberParams {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (_, value, mapper) = param.consume();
        Param::from_mapped_value(self.next(), value, mapper)
    }

    fn map_int<const D: usize>(&mut self, param: Param<Tensor<D, Int>>) -> Param<Tensor<D, Int>> {
        let (_, value, mapper) = param.consume();
        Param::from_mapped_value(self.next(), value, mapper)
    }

    fn map_bool<const D: usize>(
        &mut self,
        param: Param<Tensor<D, Bool>>,
    ) -> Param<Tensor<D, Bool>> {
        let (_, value, mapper) = param.consume();
        Param::from_mapped_value(self.next(), value, mapper)
    }
}

/// Writes `module` as a burn record (burnpack) at `path`, its parameters numbered in order
/// (see the module's doc).
pub(crate) fn save_record<M: Module>(module: M, path: &Path) -> Result<(), Error> {
    module
        .map(&mut NumberParams(0))
        .into_record()
        .save(path)
        .map_err(|e| Error::File {
            path: path.to_path_buf(),
            message: format!(
                "could not write the burn record: {e}; check that the disk has room and the folder is writable"
            ),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_weights_are_saved_as_the_same_bytes() {
        let cfg = crate::model::TrainConfig::default();
        let a = crate::model::Trained::empty_module(64, &cfg, 5);
        // The same weights under fresh parameter ids, as a network taken over from a
        // previous run is saved again.
        let b = crate::model::Trained::from_module(a.clone()).to_module();
        assert_ne!(a.embedding.id, b.embedding.id);
        let dir = tempfile::tempdir().unwrap();
        let (pa, pb) = (dir.path().join("a.bpk"), dir.path().join("b.bpk"));
        save_record(a.clone(), &pa).unwrap();
        save_record(b, &pb).unwrap();
        assert_eq!(std::fs::read(&pa).unwrap(), std::fs::read(&pb).unwrap());
        // Other weights still give other bytes.
        let c = crate::model::Trained::empty_module(64, &cfg, 5);
        let pc = dir.path().join("c.bpk");
        save_record(c, &pc).unwrap();
        assert_ne!(std::fs::read(&pa).unwrap(), std::fs::read(&pc).unwrap());
        // A record that cannot be written says where and what to check.
        let err = save_record(a.clone(), &pa.join("inside-a-file.bpk"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("inside-a-file.bpk") && err.contains("the disk has room"),
            "{err}"
        );
        // A saved record loads back into a network of the same shapes.
        let record = burn::store::ModuleRecord::load(&pa).unwrap();
        let back = crate::model::Trained::empty_module(64, &cfg, 5)
            .try_load_record(record)
            .unwrap();
        assert_eq!(
            back.out.weight.val().into_data(),
            a.out.weight.val().into_data()
        );
    }
}
