//! One module per subcommand.

pub mod ci;
pub mod inspect;
pub mod tidy;
