//! `nmoco`: the command-line program. The only crate that installs a tracing subscriber.

#![forbid(unsafe_code)]

mod cmd;
mod logging;

use clap::{Parser, Subcommand};

/// mimalloc keeps freed pages for reuse: candle allocates (and zero-fills) a fresh buffer for
/// every op output and gradient, and with glibc's allocator every large one is a fresh `mmap`
/// whose page faults cost more than the op (docs/benchmarks.md, "allocator"); `main` calls
/// `nmoco_alloc::configure` so that it also keeps freed memory between steps.
#[global_allocator]
static GLOBAL: nmoco_alloc::MiMalloc = nmoco_alloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "nmoco",
    version,
    about = "NeuroMoCo: momentum-contrast pre-training of spiking networks on event data"
)]
struct Cli {
    /// Show the log records on a terminal too (-v info, -vv debug, -vvv trace); NMOCO_LOG
    /// (e.g. `NMOCO_LOG=nmoco_train=debug`) names exactly what to show
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Decode an event file and print a summary
    Inspect(cmd::inspect::Args),
    /// Dataset tools: `data check --dataset NAME --root DIR`
    Data(cmd::data::Args),
    /// Render the frames of an event file or dataset sample as a PNG grid
    Show(cmd::show::Args),
    /// Generate the synthetic event dataset (DVS128 Gesture layout)
    MakeSynthetic(cmd::make_synthetic::Args),
    /// NeuroMoCo pre-training (default: the CPU run on the synthetic set)
    Pretrain(cmd::pretrain::Args),
    /// Linear probe and kNN on frozen features, with the random-init baseline
    LinearProbe(cmd::linear_probe::Args),
    /// Fine-tune the pre-trained encoder with labels, with the supervised-from-scratch baseline
    Finetune(cmd::finetune::Args),
    /// Write an encoder's backbone as a PyTorch state dict (SpikingJelly / official Spikformer names)
    Export(cmd::export::Args),
    /// Features of frames from a .npy file, written as .npy (checkpoint or PyTorch state dict)
    Embed(cmd::embed::Args),
}

fn main() -> anyhow::Result<()> {
    nmoco_alloc::configure();
    let cli = Cli::parse();
    logging::install(cli.verbose);
    match cli.cmd {
        Cmd::Inspect(a) => cmd::inspect::run(a),
        Cmd::Data(a) => cmd::data::run(a),
        Cmd::Show(a) => cmd::show::run(a),
        Cmd::MakeSynthetic(a) => cmd::make_synthetic::run(a),
        Cmd::Pretrain(a) => cmd::pretrain::run(a),
        Cmd::LinearProbe(a) => cmd::linear_probe::run(a),
        Cmd::Finetune(a) => cmd::finetune::run(a),
        Cmd::Export(a) => cmd::export::run(a),
        Cmd::Embed(a) => cmd::embed::run(a),
    }
}
