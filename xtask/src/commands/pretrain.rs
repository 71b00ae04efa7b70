//! `cargo xtask pretrain [--config FILE] [--set key=value ...] [--cuda] [--resume | --resume-from epoch-NNNN] [--name RUN]`.
//! With no arguments: the CPU default on the synthetic set (generated if missing).

use crate::util::{Forward, forward};

pub fn run(args: Forward) -> anyhow::Result<()> {
    forward("pretrain", args)
}
