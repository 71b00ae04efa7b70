//! One module per subcommand.

pub mod bench;
pub mod ci;
pub mod data;
pub mod finetune;
pub mod gpu_build;
pub mod inspect;
pub mod linear_probe;
pub mod make_synthetic;
pub mod pretrain;
pub mod show;
pub mod tidy;
pub mod wheel;
