//! `cargo xtask make-synthetic [--out DIR] [--seed N] [--classes K] [--per-class N]
//! [--users N] [--train-users N]`: generate the synthetic dataset (default out:
//! datasets/synthetic/generated). See docs/synthetic.md.

use crate::util::{Forward, forward};

pub fn run(args: Forward) -> anyhow::Result<()> {
    forward("make-synthetic", args)
}
