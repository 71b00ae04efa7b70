//! One module per subcommand.

pub mod data;
pub mod evalcfg;
pub mod finetune;
pub mod inspect;
pub mod linear_probe;
pub mod make_synthetic;
pub mod pretrain;
pub mod show;
