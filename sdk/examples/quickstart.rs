//! Quickstart: two local regions (the emulator), a producer configured in code, a primary
//! outage.
//!
//! `cargo run -p twinhub --example quickstart`

use std::time::Duration;

use twinhub::config::EndpointBuilder;
use twinhub::{Event, Producer, SdkConfig};
use twinhub_emulator::{Emulator, EmulatorConfig, Fault};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let emu = Emulator::start(EmulatorConfig::default()).await?;
    // The same settings as a config file's, with the same checks.
    let config = SdkConfig::builder("quickstart-1")
        .endpoint(EndpointBuilder::event_hubs(
            "primary",
            emu["primary"].event_hubs_connection_string(),
        ))
        .endpoint(EndpointBuilder::event_hubs(
            "secondary",
            emu["secondary"].event_hubs_connection_string(),
        ))
        .build()?;
    let producer = Producer::builder(config).build().await?;
    let mut events = producer.events();

    for i in 0..5 {
        let id = producer
            .send(format!("{{\"temp\":{}}}", 20 + i).into_bytes())
            .await?;
        println!("accepted {id}");
    }
    producer.flush(Duration::from_secs(10)).await?;

    println!("the primary region goes dark");
    emu["primary"].set_fault(Fault::Down);
    for i in 0..5 {
        producer
            .send(format!("{{\"temp\":{}}}", 30 + i).into_bytes())
            .await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    producer.flush(Duration::from_secs(30)).await?;
    while let Ok(e) = events.try_recv() {
        if matches!(e, Event::FailedOver { .. } | Event::RouteDown { .. }) {
            println!("event: {e:?}");
        }
    }
    let snapshot = producer.shutdown(Duration::from_secs(10)).await?;
    println!("{}", serde_json::to_string_pretty(&snapshot.to_json())?);
    println!(
        "primary received {}, secondary received {}",
        emu["primary"].ids().len(),
        emu["secondary"].ids().len()
    );
    Ok(())
}
