//! `nmoco`: the command-line program. The only crate that installs a tracing subscriber.

mod cmd;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(name = "nmoco", version, about = "NeuroMoCo: momentum-contrast pre-training of spiking networks on event data")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Decode an event file and print a summary
    Inspect(cmd::inspect::Args),
    /// Generate the synthetic event dataset (DVS128 Gesture layout)
    MakeSynthetic(cmd::make_synthetic::Args),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("NMOCO_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Inspect(a) => cmd::inspect::run(a),
        Cmd::MakeSynthetic(a) => cmd::make_synthetic::run(a),
    }
}
