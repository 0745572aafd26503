//! `twinhub sim` and `twinhub demo`: the fleet simulator from the command line.

use std::path::{Path, PathBuf};

use twinhub_sim::{Report, RunOptions, Scenario};

/// The scenario `twinhub demo` runs, shipped in the repository as `scenarios/fabrikam.toml`.
const FABRIKAM: &str = include_str!("../../scenarios/fabrikam.toml");

/// Arguments of `twinhub sim`.
#[derive(clap::Args)]
pub struct SimArgs {
    /// The scenario file (TOML; see scenarios/fabrikam.toml).
    #[arg(long)]
    scenario: PathBuf,
    /// Replace the scenario's device count.
    #[arg(long)]
    devices: Option<u32>,
    /// Replace the scenario's seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Write the full report (with the per-minute timeline) as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Draw the timeline (deliveries per region, backlog at risk, costly bytes) here: PNG
    /// when the name ends in `.png`, SVG otherwise.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Run N real SDK producers against emulator regions instead of the simulated fleet.
    #[arg(long, value_name = "N", num_args = 0..=1, default_missing_value = "50")]
    live: Option<u32>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

/// Arguments of `twinhub demo`.
#[derive(clap::Args)]
pub struct DemoArgs {
    /// Devices in the simulated fleet (the scenario's 800,000 by default).
    #[arg(long, default_value_t = 800_000)]
    devices: u32,
    /// Real producers in the live run (0 skips it).
    #[arg(long, default_value_t = 200)]
    live: u32,
    /// Where the JSON reports go.
    #[arg(long, default_value = "target/twinhub-demo")]
    out: PathBuf,
}

/// Runs `twinhub sim`; exit code 0, or 4 when a record was lost.
pub fn run(args: SimArgs, runtime: &tokio::runtime::Runtime) -> Result<u8, String> {
    let scenario = Scenario::from_file(&args.scenario).map_err(|e| e.to_string())?;
    let opts = RunOptions {
        devices: args.devices,
        seed: args.seed,
        progress: !args.quiet,
        ..RunOptions::default()
    };
    let report = match args.live {
        Some(n) => runtime
            .block_on(twinhub_sim::live::run(&scenario, n, &opts))
            .map_err(|e| e.to_string())?,
        None => twinhub_sim::run(&scenario, &opts).map_err(|e| e.to_string())?,
    };
    print!("{}", report.summary());
    if let Some(path) = &args.json {
        write_json(path, &report)?;
        println!("  report: {}", path.display());
    }
    if let Some(path) = &args.plot {
        twinhub_sim::plot::draw(&report, path).map_err(|e| e.to_string())?;
        println!("  plot: {}", path.display());
    }
    Ok(if report.lost == 0 { 0 } else { 4 })
}

/// Runs `twinhub demo`: the fabrikam fleet simulated, then a short live run.
pub fn demo(args: DemoArgs, runtime: &tokio::runtime::Runtime) -> Result<u8, String> {
    let scenario = Scenario::from_toml_str(FABRIKAM).map_err(|e| e.to_string())?;
    println!(
        "twinhub demo: the primary region goes dark from minute 30 to 60 of a 2-hour day.\n\
         1/2 simulated fleet: {} devices, each running the real engine (scenarios/fabrikam.toml)",
        args.devices
    );
    let opts = RunOptions {
        devices: Some(args.devices),
        seed: None,
        progress: true,
        ..RunOptions::default()
    };
    let sim = twinhub_sim::run(&scenario, &opts).map_err(|e| e.to_string())?;
    print!("{}", sim.summary());
    std::fs::create_dir_all(&args.out)
        .map_err(|e| format!("cannot create {}: {e}", args.out.display()))?;
    write_json(&args.out.join("fabrikam.json"), &sim)?;
    twinhub_sim::plot::svg(&sim, &args.out.join("fabrikam.svg")).map_err(|e| e.to_string())?;
    twinhub_sim::plot::png(&sim, &args.out.join("fabrikam.png")).map_err(|e| e.to_string())?;
    let mut lost = sim.lost;
    if args.live > 0 {
        println!(
            "2/2 live: {} real SDK producers (MQTT and Event Hubs REST) against two emulator regions on loopback",
            args.live
        );
        let live = runtime
            .block_on(twinhub_sim::live::run(
                &scenario,
                args.live,
                &RunOptions::default(),
            ))
            .map_err(|e| e.to_string())?;
        print!("{}", live.summary());
        write_json(&args.out.join("live.json"), &live)?;
        lost += live.lost;
    }
    println!(
        "reports (JSON, with per-minute timelines) and the fleet's timeline plot (fabrikam.svg, fabrikam.png): {}",
        args.out.display()
    );
    Ok(if lost == 0 { 0 } else { 4 })
}

fn write_json(path: &Path, report: &Report) -> Result<(), String> {
    let text = serde_json::to_string_pretty(report).map_err(|e| e.to_string())?;
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}
