//! `cargo xtask finetune [--checkpoint PATH] [--config FILE] [--set k=v ...] [--cuda]`.

use crate::util::{Forward, forward};

pub fn run(args: Forward) -> anyhow::Result<()> {
    forward("finetune", args)
}
