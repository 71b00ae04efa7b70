//! `cargo xtask inspect FILE [--format auto|nbin|aedat2|aedat3|aedat4] [--json]`.

use crate::util::{Forward, forward};

pub fn run(args: Forward) -> anyhow::Result<()> {
    forward("inspect", args)
}
