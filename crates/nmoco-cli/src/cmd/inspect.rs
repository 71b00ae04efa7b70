//! `nmoco inspect FILE`: filled in with the decoder.

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The event file
    pub file: std::path::PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    anyhow::bail!("inspect is not implemented yet: {}", args.file.display())
}
