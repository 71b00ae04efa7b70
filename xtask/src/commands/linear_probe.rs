//! `cargo xtask linear-probe [--checkpoint PATH] [--config FILE] [--set k=v ...] [--cuda]`.

use crate::util::{Forward, forward};

pub fn run(args: Forward) -> anyhow::Result<()> {
    forward("linear-probe", args)
}
