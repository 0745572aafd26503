//! Azure-specific settings and checks: the partition key of `event-hubs` and `kafka`
//! endpoints, and the 128-character limit on a message id.
//!
//! Kept out of the TOML reader so it stays readable; the reader only looks the words up
//! here.

use crate::spec::{PartitionKey, ProtocolSpec};

/// `partition_key` values in an endpoint table.
pub(crate) const PARTITION_KEYS: [(&str, PartitionKey); 2] = [
    ("device", PartitionKey::Device),
    ("none", PartitionKey::None),
];

/// Sets the partition key of an Event Hubs or Kafka endpoint (other protocols have none;
/// the reader refuses the key for them before this is called).
pub(crate) fn set_partition_key(protocol: &mut ProtocolSpec, key: PartitionKey) {
    match protocol {
        ProtocolSpec::EventHubs(e) => e.partition_key = key,
        ProtocolSpec::Kafka(k) => k.partition_key = key,
        ProtocolSpec::IotHub(_) | ProtocolSpec::Mqtt(_) | ProtocolSpec::Http(_) => {}
    }
}

/// The longest `MessageId` Service Bus, Event Hubs and IoT Hub accept, in characters (as
/// .NET counts them: UTF-16 code units). Azure's SDKs refuse longer ids before sending
/// (`MaxMessageIdLength = 128` in Azure.Messaging.ServiceBus) and IoT Hub documents the
/// same limit for a message's `message-id`.
pub const MAX_MESSAGE_ID_CHARS: usize = 128;

/// The widest `:{epoch}:{seq}` a message id can end in: two colons, a `u32` epoch (at most
/// 10 digits) and a `u64` sequence number (at most 20 digits).
pub const MESSAGE_ID_SUFFIX_MAX: usize = 2 + 10 + 20;

/// A device id so long that its message ids (`{device}:{epoch}:{seq}`) could exceed
/// Azure's 128-character `MessageId` limit, which the service would refuse only once the
/// ids grow, long after the device was deployed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "is {chars} characters long: its message ids ({{device}}:{{epoch}}:{{seq}}, up to \
     {MESSAGE_ID_SUFFIX_MAX} more) could exceed the {MAX_MESSAGE_ID_CHARS}-character MessageId \
     limit of {hub}; use a device id of at most {max} characters",
    max = MAX_MESSAGE_ID_CHARS - MESSAGE_ID_SUFFIX_MAX
)]
pub struct MessageIdTooLong {
    /// The device id's length in characters (UTF-16 code units).
    pub chars: usize,
    /// The service whose limit it is (`Event Hubs`, `IoT Hub`).
    pub hub: &'static str,
}

/// Whether every message id of `device_id` fits the `MessageId` limit of `protocol`.
/// Protocols that do not carry the id in an Azure `MessageId` (MQTT, generic HTTP, a
/// plain Kafka cluster) have no such limit.
///
/// ```
/// use twinhub::config::azure::check_message_id;
/// use twinhub::config::connstr::parse_event_hubs;
/// use twinhub::spec::ProtocolSpec;
/// let eh = ProtocolSpec::EventHubs(parse_event_hubs(
///     "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=s;SharedAccessKey=k;EntityPath=t",
/// ).unwrap());
/// assert!(check_message_id(&"d".repeat(96), &eh).is_ok());
/// assert_eq!(check_message_id(&"d".repeat(97), &eh).unwrap_err().chars, 97);
/// ```
pub fn check_message_id(device_id: &str, protocol: &ProtocolSpec) -> Result<(), MessageIdTooLong> {
    let hub = match protocol {
        ProtocolSpec::EventHubs(_) => "Event Hubs",
        ProtocolSpec::Kafka(k) if k.event_hubs => "Event Hubs",
        ProtocolSpec::IotHub(_) => "IoT Hub",
        ProtocolSpec::Kafka(_) | ProtocolSpec::Mqtt(_) | ProtocolSpec::Http(_) => return Ok(()),
    };
    let chars = device_id.encode_utf16().count();
    if chars + MESSAGE_ID_SUFFIX_MAX > MAX_MESSAGE_ID_CHARS {
        return Err(MessageIdTooLong { chars, hub });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_widest_suffix_is_what_ids_can_reach() {
        let id = twinhub_core::MessageId {
            device: twinhub_core::DeviceId::new("d").unwrap(),
            epoch: u32::MAX,
            seq: u64::MAX,
        };
        assert_eq!(id.to_text().len(), 1 + MESSAGE_ID_SUFFIX_MAX);
    }
}
