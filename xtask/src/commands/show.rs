//! `cargo xtask show FILE --out grid.png [--t T] [--size N]` or
//! `cargo xtask show --dataset NAME --root DIR --index I [--split train|test] --out grid.png`.

use crate::util::{Forward, forward};

pub fn run(args: Forward) -> anyhow::Result<()> {
    forward("show", args)
}
