//! `nmoco data check --dataset NAME --root DIR`: verify a dataset root (layout, file counts,
//! samples per class and split) before hours of training are spent.

use std::path::PathBuf;

use anyhow::{Context, bail};
use nmoco_data::{CacheMode, DataConfig, Dataset, DatasetKind, IndexOptions, Split};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub cmd: DataCmd,
}

#[derive(clap::Subcommand, Debug)]
pub enum DataCmd {
    /// Index a dataset root and print files and samples per class and split
    Check(CheckArgs),
    /// Build (or validate) the frame cache of both splits, optionally timing the loader
    Build(BuildArgs),
}

#[derive(clap::Args, Debug)]
pub struct BuildArgs {
    #[arg(long, value_parser = parse_kind)]
    pub dataset: DatasetKind,
    #[arg(long)]
    pub root: PathBuf,
    /// Cache folder (default <root>/.nmoco-cache)
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Number of frames
    #[arg(long = "t", default_value_t = 16)]
    pub t: usize,
    /// Frame size N (N×N); default: the dataset's literature size
    #[arg(long)]
    pub size: Option<usize>,
    /// Threads (0 = all cores)
    #[arg(long, default_value_t = 0)]
    pub workers: usize,
    /// After building, time one epoch of batches of this size on the train split
    #[arg(long)]
    pub time_loader: Option<usize>,
    /// Views for --time-loader: plain, augmented or two_views
    #[arg(long, default_value = "two_views", value_parser = parse_views)]
    pub views: nmoco_data::Views,
}

fn parse_views(s: &str) -> Result<nmoco_data::Views, String> {
    match s.replace('-', "_").as_str() {
        "plain" => Ok(nmoco_data::Views::Plain),
        "augmented" => Ok(nmoco_data::Views::Augmented),
        "two_views" => Ok(nmoco_data::Views::TwoViews),
        _ => Err(format!(
            "unknown views {s:?}; expected plain, augmented or two_views"
        )),
    }
}

#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// cifar10_dvs | dvs128_gesture | n_caltech101 | n_mnist | synthetic
    #[arg(long, value_parser = parse_kind)]
    pub dataset: DatasetKind,
    /// The dataset root, laid out as the dataset ships
    #[arg(long)]
    pub root: PathBuf,
    /// CIFAR10-DVS: use the TEBN split (files 0-99 of each class are test)
    #[arg(long)]
    pub tebn: bool,
    /// N-Caltech101: leave out BACKGROUND_Google
    #[arg(long)]
    pub no_background: bool,
    /// Also decode every event file (slower; finds unreadable files)
    #[arg(long)]
    pub deep: bool,
    /// Succeed even when the counts differ from the published dataset (subsets, fake roots)
    #[arg(long)]
    pub partial: bool,
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
}

pub fn parse_kind(s: &str) -> Result<DatasetKind, String> {
    DatasetKind::parse(s).ok_or_else(|| {
        format!(
            "unknown dataset {s:?}; expected one of {}",
            DatasetKind::ALL.map(|k| k.name()).join(", ")
        )
    })
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.cmd {
        DataCmd::Check(a) => check(a),
        DataCmd::Build(a) => build(a),
    }
}

fn build(a: BuildArgs) -> anyhow::Result<()> {
    let mut cfg = DataConfig::for_dataset(a.dataset.clone(), &a.root);
    cfg.cache_dir = a.cache_dir.clone();
    cfg.workers = a.workers;
    cfg.frames.t = a.t;
    if let Some(n) = a.size {
        cfg.frames.height = n;
        cfg.frames.width = n;
        if cfg.frames.resize == nmoco_frames::Resize::None {
            cfg.frames.resize = nmoco_frames::Resize::Pool;
        }
    }
    let mut train = None;
    for split in [Split::Train, Split::Test] {
        let t0 = std::time::Instant::now();
        let ds = Dataset::open(&cfg, split)?;
        let secs = t0.elapsed().as_secs_f64();
        println!(
            "{split}: {} samples of {:?} in {secs:.2} s ({:.1} samples/s), cache {}",
            ds.len(),
            ds.frame_shape(),
            ds.len() as f64 / secs.max(1e-9),
            ds.cache_dir()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        );
        if split == Split::Train {
            train = Some(ds);
        }
    }
    if let (Some(bs), Some(ds)) = (a.time_loader, train) {
        let ds = std::sync::Arc::new(ds);
        let lc = nmoco_data::LoaderConfig {
            batch_size: bs,
            views: a.views,
            ..Default::default()
        };
        let t0 = std::time::Instant::now();
        let mut n = 0usize;
        for b in nmoco_data::Loader::new(ds, &lc, &cfg.augment, &candle_core::Device::Cpu) {
            n += b?.indices.len();
        }
        let secs = t0.elapsed().as_secs_f64();
        println!(
            "loader: {n} samples, views {:?}, batch {bs}, in {secs:.2} s ({:.1} samples/s)",
            a.views,
            n as f64 / secs.max(1e-9)
        );
    }
    Ok(())
}

fn check(a: CheckArgs) -> anyhow::Result<()> {
    let opts = IndexOptions {
        cifar_split: if a.tebn {
            nmoco_data::CifarSplit::Tebn
        } else {
            nmoco_data::CifarSplit::SpikingJelly
        },
        ncaltech_include_background: !a.no_background,
        ..IndexOptions::default()
    };
    let rep = nmoco_data::check_root_with(&a.dataset, &a.root, &opts)
        .with_context(|| format!("checking {} root {}", a.dataset, a.root.display()))?;
    let mut decode_errors = Vec::new();
    if a.deep {
        let mut cfg = DataConfig::for_dataset(a.dataset.clone(), &a.root);
        cfg.cifar_split = opts.cifar_split;
        cfg.ncaltech_include_background = opts.ncaltech_include_background;
        for split in [Split::Train, Split::Test] {
            let ds = Dataset::open_with(&cfg, split, CacheMode::Off)?;
            decode_errors.extend(
                ds.verify_sources()
                    .into_iter()
                    .map(|e| format!("{:#}", anyhow::Error::new(e))),
            );
        }
    }
    if a.json {
        let mut v = serde_json::to_value(&rep)?;
        v["decode_errors"] = serde_json::json!(decode_errors);
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("dataset    {}", rep.dataset);
        println!("data root  {}", rep.data_root.display());
        println!("files      {}", rep.files);
        println!("classes    {}", rep.class_names.len());
        let wname = rep
            .class_names
            .iter()
            .map(|n| n.len())
            .max()
            .unwrap_or(5)
            .max(5);
        println!(
            "  {:>3}  {:<wname$}  {:>7}  {:>7}",
            "#", "class", "train", "test"
        );
        for (c, name) in rep.class_names.iter().enumerate() {
            println!(
                "  {c:>3}  {name:<wname$}  {:>7}  {:>7}",
                rep.train_per_class[c], rep.test_per_class[c]
            );
        }
        println!(
            "  {:>3}  {:<wname$}  {:>7}  {:>7}",
            "",
            "total",
            rep.train_total(),
            rep.test_total()
        );
        if let Some(p) = rep.published {
            let split = match (p.train, p.test) {
                (Some(tr), Some(te)) => format!(", {tr}/{te} train/test"),
                _ => String::new(),
            };
            println!("published  {} classes, {} files{split}", p.classes, p.files);
        }
        if a.deep {
            println!("decoded    every file, {} failed", decode_errors.len());
        }
        for w in &rep.warnings {
            println!("warning: {w}");
        }
        for e in &decode_errors {
            println!("error: {e}");
        }
    }
    if !decode_errors.is_empty() {
        bail!("{} event files could not be decoded", decode_errors.len());
    }
    if !rep.warnings.is_empty() && !a.partial {
        bail!(
            "the root differs from the published dataset ({} warnings); pass --partial to accept it",
            rep.warnings.len()
        );
    }
    if !a.json {
        println!("ok");
    }
    Ok(())
}
