//! One module per subcommand.

pub mod ci;
pub mod inspect;
pub mod make_synthetic;
pub mod tidy;
