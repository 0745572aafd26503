//! IoT Hub over MQTT: a device connection string as-is. Against the emulator's MQTT
//! broker (`UseDevelopmentEmulator=true` means plain MQTT to a local address); with a real
//! hub, use its connection string and TLS on 8883 is used.
//!
//! `cargo run -p twinhub --example iot_hub`

use std::time::Duration;

use twinhub::config::EndpointBuilder;
use twinhub::{Producer, SdkConfig};
use twinhub_emulator::{Emulator, EmulatorConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let emu = Emulator::start(EmulatorConfig::with_regions(["hub"])).await?;
    let mqtt = emu["hub"].mqtt_addr();
    // A base64 device key, as the portal shows it.
    let conn = format!(
        "HostName={}:{};DeviceId=thermo-1;SharedAccessKey=cGFzc3dvcmQ=;UseDevelopmentEmulator=true",
        mqtt.ip(),
        mqtt.port()
    );
    // In production: `SecretSource::env("IOT_HUB_CONNECTION_STRING")` instead of the value.
    let config = SdkConfig::builder("thermo-1")
        .endpoint(EndpointBuilder::iot_hub("hub", conn))
        .build()?;
    let producer = Producer::builder(config).build().await?;
    for i in 0..3 {
        let id = producer
            .send(format!("{{\"temp\":{i}}}").into_bytes())
            .await?;
        println!("accepted {id}");
    }
    producer.shutdown(Duration::from_secs(10)).await?;
    println!("the hub recorded ids: {:?}", emu["hub"].ids());
    Ok(())
}
