//! `final/`: the master encoder, the resolved config and the encoder's size and SHA-256, written
//! once all epochs completed.

use std::collections::BTreeMap;
use std::path::PathBuf;

use candle_nn::VarMap;
use nmoco_eval::run_dir::{FINAL_ENCODER, RunPaths};

use crate::checkpoint;
use crate::config::PretrainConfig;
use crate::encoder::snapshot;
use crate::error::{Error, Result, io_err};

/// Write `final/encoder.safetensors` (the master encoder's variables), `final/config.toml` and
/// `final/files.json`, each through the atomic writer. Returns the encoder's path.
pub(super) fn write_final(
    paths: &RunPaths,
    cfg: &PretrainConfig,
    master_vars: &VarMap,
) -> Result<PathBuf> {
    let dir = paths.final_dir();
    std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let enc = paths.final_encoder();
    checkpoint::write_tensors_atomic(&enc, &snapshot(master_vars)?)?;
    checkpoint::write_atomic(&paths.final_config(), cfg.resolved().to_toml()?.as_bytes())?;
    // Size and SHA-256 of the encoder, checked by linear-probe / finetune before use.
    let files = BTreeMap::from([(FINAL_ENCODER.to_string(), checkpoint::digest_file(&enc)?)]);
    let json = serde_json::to_vec_pretty(&serde_json::json!({ "files": files })).map_err(|e| {
        Error::Checkpoint {
            path: paths.final_files(),
            reason: e.to_string(),
        }
    })?;
    checkpoint::write_atomic(&paths.final_files(), &json)?;
    Ok(enc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn final_files_are_complete_and_no_temporary_file_is_left() {
        let d = tempfile::tempdir().unwrap();
        let paths = RunPaths::new(d.path().join("run"));
        let vars = VarMap::new();
        let vb = candle_nn::VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu);
        vb.get_with_hints((3, 2), "w", candle_nn::Init::Const(0.5))
            .unwrap();
        let cfg = PretrainConfig::default();
        let enc = write_final(&paths, &cfg, &vars).unwrap();
        assert_eq!(enc, paths.final_encoder());
        let back = candle_core::safetensors::load(&enc, &Device::Cpu).unwrap();
        assert_eq!(
            back["w"].to_vec2::<f32>().unwrap(),
            vec![vec![0.5f32; 2]; 3]
        );
        let digest = checkpoint::digest_file(&enc).unwrap();
        let files: serde_json::Value =
            serde_json::from_slice(&std::fs::read(paths.final_files()).unwrap()).unwrap();
        assert_eq!(
            files["files"]["encoder.safetensors"],
            serde_json::to_value(&digest).unwrap()
        );
        let back_cfg = PretrainConfig::load(&paths.final_config(), &[], None);
        assert_eq!(back_cfg.unwrap().hash().unwrap(), cfg.hash().unwrap());
        let mut names: Vec<String> = std::fs::read_dir(paths.final_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["config.toml", "encoder.safetensors", "files.json"]);
    }
}
