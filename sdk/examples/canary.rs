//! Active-active with a canary: 90/10 between two endpoints, then drain the first.
//!
//! `cargo run -p twinhub --example canary`

use std::time::Duration;

use twinhub::config::EndpointBuilder;
use twinhub::{Producer, Routing, SdkConfig};
use twinhub_emulator::{Emulator, EmulatorConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let emu = Emulator::start(EmulatorConfig::with_regions(["blue", "green"])).await?;
    let config = SdkConfig::builder("gateway-7")
        .routing(Routing::ActiveActive)
        .endpoint(EndpointBuilder::event_hubs(
            "blue",
            emu["blue"].event_hubs_connection_string(),
        ))
        .endpoint(EndpointBuilder::event_hubs(
            "green",
            emu["green"].event_hubs_connection_string(),
        ))
        .build()?;
    let producer = Producer::builder(config).build().await?;
    producer.set_weights(&[9, 1]).await?; // green is the canary
    for i in 0..200 {
        producer.send(format!("r{i}").into_bytes()).await?;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    producer.flush(Duration::from_secs(10)).await?;
    println!(
        "canary: blue {} green {}",
        emu["blue"].ids().len(),
        emu["green"].ids().len()
    );

    producer.set_drained("blue", true).await?; // promote green
    for i in 0..100 {
        producer.send(format!("s{i}").into_bytes()).await?;
    }
    producer.flush(Duration::from_secs(10)).await?;
    println!(
        "after draining blue: blue {} green {}",
        emu["blue"].ids().len(),
        emu["green"].ids().len()
    );
    producer.shutdown(Duration::from_secs(5)).await?;
    Ok(())
}
