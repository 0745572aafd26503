//! `twinhub-chaos`: the reliability scenarios or the soak, with a table of figures; exit 0
//! when nothing accepted was lost (and a soak's memory stayed flat), 1 otherwise.
//! `cargo xtask chaos` and `cargo xtask soak` run it.

use std::process::ExitCode;

use clap::Parser;
use twinhub_tests::chaos::{self, ChaosArgs};

fn main() -> ExitCode {
    let args = ChaosArgs::parse();
    // The emulator and the broker are fixtures here: keep their logs out of the table
    // unless asked for (RUST_LOG).
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("error,rumqttd=off,twinhub_emulator=off")
            }),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("twinhub-chaos: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match chaos::run(&args, &runtime) {
        Ok(figures) if chaos::passed(&figures) => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(1),
        Err(e) => {
            eprintln!("twinhub-chaos: {e}");
            ExitCode::FAILURE
        }
    }
}
