//! The `twinhub` command.
//!
//! `twinhub emulator --regions primary,secondary` starts a local emulator of two hub regions
//! and prints one JSON line to stdout with the admin address and, per region, the HTTP and
//! MQTT addresses and a ready Event Hubs connection string. Logs go to stderr. It runs until
//! interrupted (Ctrl-C or SIGTERM).
//!
//! `twinhub send --config FILE` sends one record per line of standard input through a
//! producer, drains, prints the final stats as JSON and exits 0 when everything was
//! delivered, or 3 when the drain timeout passed (pending records stay in a disk outbox).
//! A memory outbox keeps its epoch counter in `--state-dir` (default: the config's
//! `state_dir`, else the per-user XDG state directory), so reruns never reuse an id.
//!
//! `twinhub gateway --config FILE --listen tcp://ADDR` takes records from devices' serial
//! lines (postcard + COBS, see `twinhub::wire`), acks each once it is in the gateway's
//! durable outbox and forwards it with failover; `--stdin` takes one record per line.
//!
//! `twinhub sim --scenario FILE` runs the fleet simulator and prints its summary (exit 4 if
//! a record was lost); `twinhub demo` runs the fabrikam outage simulated, then live.

mod gateway;
mod metrics;
mod send;
mod sim;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use twinhub_emulator::{Emulator, EmulatorConfig, RegionConfig};

#[derive(Parser)]
#[command(
    name = "twinhub",
    version,
    about = "twinhub: telemetry that fails over between regions"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a local multi-region hub emulator with a fault switch and an admin API.
    Emulator(EmulatorArgs),
    /// Send one record per line of standard input through a configured producer.
    Send(send::SendArgs),
    /// Take records from devices' serial lines (over TCP) and forward them with failover.
    Gateway(gateway::GatewayArgs),
    /// Simulate a fleet (one real engine per virtual device) through a scenario.
    Sim(sim::SimArgs),
    /// The fabrikam outage, simulated for a large fleet and then run live.
    Demo(sim::DemoArgs),
}

#[derive(clap::Args)]
struct EmulatorArgs {
    /// Region names, comma separated. With --config, regions missing from the file are
    /// added with default settings and the file's other regions are left out.
    #[arg(long, value_delimiter = ',')]
    regions: Option<Vec<String>>,
    /// TOML file fixing ports, keys, tiers, hub names and proxies.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Admin API port (overrides the file); 0 = ephemeral.
    #[arg(long)]
    admin_port: Option<u16>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The simulator's own emulator is an implementation detail: keep its logs out of the
    // summary unless asked for (RUST_LOG).
    let default_filter = match cli.command {
        Command::Sim(_) | Command::Demo(_) => "error,rumqttd=off,twinhub_emulator=off",
        _ => "warn,twinhub_emulator=info,twinhub=warn",
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("twinhub: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Emulator(args) => runtime.block_on(emulator(args)).map(|()| 0),
        Command::Send(args) => runtime.block_on(send::run(args)),
        Command::Gateway(args) => runtime.block_on(gateway::run(args)),
        Command::Sim(args) => sim::run(args, &runtime),
        Command::Demo(args) => sim::demo(args, &runtime),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("twinhub: {e}");
            ExitCode::FAILURE
        }
    }
}

fn build_config(args: &EmulatorArgs) -> Result<EmulatorConfig, String> {
    let mut config = match &args.config {
        Some(path) => EmulatorConfig::from_toml_file(path).map_err(|e| e.to_string())?,
        None => EmulatorConfig::empty(),
    };
    match &args.regions {
        Some(names) => {
            let mut regions = Vec::new();
            for name in names.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
                let r = config
                    .regions
                    .iter()
                    .find(|r| r.name == name)
                    .cloned()
                    .unwrap_or_else(|| RegionConfig::new(name));
                regions.push(r);
            }
            config.regions = regions;
        }
        None if args.config.is_none() => {
            config = EmulatorConfig::default();
        }
        None => {}
    }
    if let Some(port) = args.admin_port {
        config.admin_port = port;
    }
    if config.regions.is_empty() && config.proxies.is_empty() {
        return Err("no regions: pass --regions primary,secondary or a config file".into());
    }
    config.validate().map_err(|e| e.to_string())?;
    Ok(config)
}

async fn emulator(args: EmulatorArgs) -> Result<(), String> {
    let config = build_config(&args)?;
    let emu = Emulator::start(config).await.map_err(|e| e.to_string())?;
    // The one line scripts and tests read to find the addresses.
    println!("{}", emu.start_info());
    wait_for_signal().await;
    emu.shutdown().await;
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(regions: Option<&str>, config: Option<PathBuf>) -> EmulatorArgs {
        EmulatorArgs {
            regions: regions.map(|r| r.split(',').map(str::to_string).collect()),
            config,
            admin_port: None,
        }
    }

    #[test]
    fn defaults_and_region_list() {
        let c = build_config(&args(None, None)).unwrap();
        let names: Vec<_> = c.regions.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["primary", "secondary"]);
        let c = build_config(&args(Some("a,b,c"), None)).unwrap();
        assert_eq!(c.regions.len(), 3);
        assert!(
            build_config(&args(Some("a,a"), None))
                .unwrap_err()
                .contains("twice")
        );
    }

    #[test]
    fn config_file_errors_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("emu.toml");
        std::fs::write(
            &path,
            "[[region]]\nname = \"p\"\nhttp_port = 1\nbogus = 2\n",
        )
        .unwrap();
        let e = build_config(&args(None, Some(path))).unwrap_err();
        assert!(e.contains("bogus"), "{e}");
    }
}
