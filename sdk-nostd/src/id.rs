//! Device and message identities.

use core::fmt::{self, Write as _};
use core::str::FromStr;

/// Longest device id accepted (IoT Hub's limit).
pub const MAX_DEVICE_ID: usize = 128;

/// A device id: 1 to 128 ASCII characters from IoT Hub's allowed set (letters, digits and
/// ``- . + % _ # * ? ! ( ) , : = @ $ '``).
#[derive(PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct DeviceId(heapless::String<MAX_DEVICE_ID>);

// By hand: the derived clone copies byte by byte; every record a std transport sends
// carries a copy, so this copies the text in one go, inlined so that it lands in the
// caller's value rather than in a temporary copied afterwards.
impl Clone for DeviceId {
    #[inline]
    fn clone(&self) -> Self {
        let mut out = heapless::String::new();
        // Same capacity as `self`'s: cannot fail.
        let _ = out.push_str(&self.0);
        DeviceId(out)
    }
}

/// Why a device id or message id was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum IdError {
    /// The device id is empty.
    Empty,
    /// The device id is longer than [`MAX_DEVICE_ID`].
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The device id holds a character outside the allowed set.
    BadChar {
        /// Byte offset of the first bad character.
        at: usize,
    },
    /// A message id is not `device:epoch:seq`.
    BadMessageId(&'static str),
}

impl fmt::Display for IdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdError::Empty => f.write_str("device id is empty"),
            IdError::TooLong { len } => {
                write!(
                    f,
                    "device id is {len} bytes; at most {MAX_DEVICE_ID} are allowed"
                )
            }
            IdError::BadChar { at } => write!(
                f,
                "device id has a character at byte {at} outside letters, digits and -.+%_#*?!(),:=@$'"
            ),
            IdError::BadMessageId(why) => write!(f, "message id is not device:epoch:seq: {why}"),
        }
    }
}

impl core::error::Error for IdError {}

fn allowed(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.+%_#*?!(),:=@$'".contains(&b)
}

impl DeviceId {
    /// Checks and copies `s`.
    pub fn new(s: &str) -> Result<Self, IdError> {
        if s.is_empty() {
            return Err(IdError::Empty);
        }
        if s.len() > MAX_DEVICE_ID {
            return Err(IdError::TooLong { len: s.len() });
        }
        if let Some(at) = s.bytes().position(|b| !allowed(b)) {
            return Err(IdError::BadChar { at });
        }
        let mut out = heapless::String::new();
        out.push_str(s)
            .map_err(|_| IdError::TooLong { len: s.len() })?;
        Ok(DeviceId(out))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0.as_str())
    }
}

/// The unique id of a record: `{device}:{epoch}:{seq}`.
///
/// `epoch` increases at every start of the producer and `seq` counts records within an
/// epoch, so the id never repeats for a device and consumers in either region can drop
/// duplicates exactly.
///
/// ```
/// use twinhub_core::MessageId;
/// let id: MessageId = "sensor:0001:7:42".parse().unwrap(); // device ids may hold ':'
/// assert_eq!(id.device.as_str(), "sensor:0001");
/// assert_eq!((id.epoch, id.seq), (7, 42));
/// assert_eq!(id.to_string(), "sensor:0001:7:42");
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct MessageId {
    /// The device that produced the record.
    pub device: DeviceId,
    /// The producer's start count.
    pub epoch: u32,
    /// The record's number within the epoch.
    pub seq: u64,
}

impl MessageId {
    /// Writes the text form into a fixed-capacity string (no allocation).
    pub fn to_text(&self) -> heapless::String<{ MAX_DEVICE_ID + 32 }> {
        let mut s = heapless::String::new();
        // Capacity covers the longest device id plus two decimal numbers.
        let _ = write!(s, "{self}");
        s
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.device, self.epoch, self.seq)
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({self})")
    }
}

impl FromStr for MessageId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        // Device ids may contain ':', so the numbers are taken from the right.
        let (rest, seq) = s.rsplit_once(':').ok_or(IdError::BadMessageId("no ':'"))?;
        let (device, epoch) = rest
            .rsplit_once(':')
            .ok_or(IdError::BadMessageId("needs two ':'"))?;
        let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
        if !digits(epoch) || !digits(seq) {
            return Err(IdError::BadMessageId("epoch and seq must be decimal"));
        }
        Ok(MessageId {
            device: DeviceId::new(device)?,
            epoch: epoch
                .parse()
                .map_err(|_| IdError::BadMessageId("epoch out of range"))?,
            seq: seq
                .parse()
                .map_err(|_| IdError::BadMessageId("seq out of range"))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_id_rules() {
        assert!(DeviceId::new("sensor-0001").is_ok());
        let longest = DeviceId::new(&"a".repeat(MAX_DEVICE_ID)).unwrap();
        assert_eq!(longest.clone().as_str(), longest.as_str());
        assert_eq!(DeviceId::new(""), Err(IdError::Empty));
        assert_eq!(DeviceId::new("a b"), Err(IdError::BadChar { at: 1 }));
        let long = [b'a'; 129];
        assert_eq!(
            DeviceId::new(core::str::from_utf8(&long).unwrap()),
            Err(IdError::TooLong { len: 129 })
        );
    }

    #[test]
    fn message_id_round_trip_and_errors() {
        let id = MessageId {
            device: DeviceId::new("d:1").unwrap(),
            epoch: 3,
            seq: u64::MAX,
        };
        let text = id.to_text();
        assert_eq!(text.as_str().parse::<MessageId>().unwrap(), id);
        for bad in [
            "",
            "d",
            "d:1",
            "d:x:1",
            "d:1:",
            ":1:2",
            "d:1:-2",
            "d:99999999999:1",
        ] {
            assert!(bad.parse::<MessageId>().is_err(), "{bad}");
        }
    }
}
