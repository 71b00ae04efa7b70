//! One module per subcommand.

pub mod ci;
pub mod data;
pub mod gpu_build;
pub mod inspect;
pub mod make_synthetic;
pub mod show;
pub mod tidy;
