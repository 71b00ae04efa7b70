//! `cargo xtask data check --dataset NAME --root DIR [--deep] [--partial] [--json]`.

use crate::util::{Forward, forward};

pub fn run(args: Forward) -> anyhow::Result<()> {
    forward("data", args)
}
