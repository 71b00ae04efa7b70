//! One module per subcommand.

pub mod data;
pub mod embed;
pub mod evalcfg;
pub mod export;
pub mod finetune;
pub mod inspect;
pub mod linear_probe;
pub mod make_synthetic;
pub mod pretrain;
pub mod show;
