//! The few Kafka protocol messages a producer needs, encoded and decoded by hand:
//! ApiVersions v0, SaslHandshake v1, SaslAuthenticate v0, Metadata v1/v4 and Produce
//! v3–v7 with record batches of magic 2 (headers, CRC-32C, optional gzip).
//!
//! All of them are the protocol's non-flexible versions (no tagged fields), which every
//! broker from Kafka 1.0 on, Event Hubs' Kafka endpoint and librdkafka's mock cluster
//! speak. Decoding never panics: a short or malformed response is a [`WireError`].

use std::io::Write as _;

/// API keys used here.
pub(crate) const PRODUCE: i16 = 0;
pub(crate) const METADATA: i16 = 3;
pub(crate) const SASL_HANDSHAKE: i16 = 17;
pub(crate) const API_VERSIONS: i16 = 18;
pub(crate) const SASL_AUTHENTICATE: i16 = 36;

/// Why a response could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum WireError {
    /// The response ended early.
    #[error("response truncated")]
    Truncated,
    /// A field holds an impossible value.
    #[error("response malformed: {0}")]
    Malformed(&'static str),
}

/// Appends big-endian primitives to a request body.
#[derive(Debug, Default)]
pub(crate) struct Writer {
    pub(crate) buf: Vec<u8>,
}

impl Writer {
    pub(crate) fn i8(&mut self, v: i8) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    pub(crate) fn i16(&mut self, v: i16) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    pub(crate) fn i32(&mut self, v: i32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    pub(crate) fn i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    /// A STRING (i16 length). Longer strings are cut at 32767 bytes, which no name the
    /// SDK sends (topic, client id, mechanism) comes near: config validation caps them.
    pub(crate) fn string(&mut self, s: &str) {
        let b = &s.as_bytes()[..s.len().min(i16::MAX as usize)];
        self.i16(b.len() as i16);
        self.buf.extend_from_slice(b);
    }
    pub(crate) fn null_string(&mut self) {
        self.i16(-1);
    }
    /// BYTES (i32 length).
    pub(crate) fn bytes(&mut self, b: &[u8]) {
        self.i32(i32::try_from(b.len()).unwrap_or(i32::MAX));
        self.buf.extend_from_slice(b);
    }
    pub(crate) fn uvarint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }
    /// A zig-zag VARINT/VARLONG, as record fields use.
    pub(crate) fn varint(&mut self, v: i64) {
        self.uvarint(((v << 1) ^ (v >> 63)) as u64);
    }
    /// A varint length followed by the bytes (record keys, values, header fields).
    fn var_bytes(&mut self, b: &[u8]) {
        self.varint(b.len() as i64);
        self.buf.extend_from_slice(b);
    }
}

/// Reads big-endian primitives from a response body.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.buf.len() < n {
            return Err(WireError::Truncated);
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    pub(crate) fn i8(&mut self) -> Result<i8, WireError> {
        Ok(i8::from_be_bytes(self.array()?))
    }
    pub(crate) fn i16(&mut self) -> Result<i16, WireError> {
        Ok(i16::from_be_bytes(self.array()?))
    }
    pub(crate) fn i32(&mut self) -> Result<i32, WireError> {
        Ok(i32::from_be_bytes(self.array()?))
    }
    pub(crate) fn i64(&mut self) -> Result<i64, WireError> {
        Ok(i64::from_be_bytes(self.array()?))
    }
    /// A nullable STRING; `None` for null. Invalid UTF-8 is replaced, not refused: these
    /// are names and messages, only compared or logged.
    pub(crate) fn string(&mut self) -> Result<Option<String>, WireError> {
        let n = self.i16()?;
        if n < 0 {
            return Ok(None);
        }
        Ok(Some(
            String::from_utf8_lossy(self.take(n as usize)?).into_owned(),
        ))
    }
    /// Nullable BYTES.
    pub(crate) fn bytes(&mut self) -> Result<Option<&'a [u8]>, WireError> {
        let n = self.i32()?;
        if n < 0 {
            return Ok(None);
        }
        self.take(n as usize).map(Some)
    }
    /// An array's element count (null counts as empty). Each element takes at least one
    /// byte, so a count larger than what is left is malformed rather than a huge
    /// allocation.
    pub(crate) fn count(&mut self) -> Result<usize, WireError> {
        let n = self.i32()?;
        if n < 0 {
            return Ok(0);
        }
        let n = n as usize;
        if n > self.buf.len() {
            return Err(WireError::Malformed("array longer than the response"));
        }
        Ok(n)
    }
}

/// The supported version range of each API a broker announced (ApiVersions v0).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ApiVersions {
    pub(crate) error: i16,
    pub(crate) apis: Vec<(i16, i16, i16)>,
}

impl ApiVersions {
    /// The highest version of `key` both sides speak, within `ours`.
    pub(crate) fn pick(&self, key: i16, ours: std::ops::RangeInclusive<i16>) -> Option<i16> {
        let (_, min, max) = self.apis.iter().find(|(k, _, _)| *k == key)?;
        let hi = (*max).min(*ours.end());
        (hi >= (*min).max(*ours.start())).then_some(hi)
    }
}

pub(crate) fn decode_api_versions(body: &[u8]) -> Result<ApiVersions, WireError> {
    let mut r = Reader::new(body);
    let error = r.i16()?;
    let n = r.count()?;
    let mut apis = Vec::with_capacity(n);
    for _ in 0..n {
        apis.push((r.i16()?, r.i16()?, r.i16()?));
    }
    Ok(ApiVersions { error, apis })
}

/// SaslHandshake v1 response: the error and the broker's mechanisms.
pub(crate) fn decode_sasl_handshake(body: &[u8]) -> Result<(i16, Vec<String>), WireError> {
    let mut r = Reader::new(body);
    let error = r.i16()?;
    let n = r.count()?;
    let mut mechanisms = Vec::with_capacity(n);
    for _ in 0..n {
        mechanisms.extend(r.string()?);
    }
    Ok((error, mechanisms))
}

/// SaslAuthenticate v0 response: error, message, the server's bytes.
pub(crate) fn decode_sasl_authenticate(
    body: &[u8],
) -> Result<(i16, Option<String>, Vec<u8>), WireError> {
    let mut r = Reader::new(body);
    let error = r.i16()?;
    let message = r.string()?;
    let bytes = r.bytes()?.unwrap_or_default().to_vec();
    Ok((error, message, bytes))
}

/// A broker as Metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Broker {
    pub(crate) node: i32,
    pub(crate) host: String,
    pub(crate) port: u16,
}

/// One topic's partitions as Metadata describes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TopicMetadata {
    pub(crate) error: i16,
    /// (error, partition index, leader node id or -1), sorted by index.
    pub(crate) partitions: Vec<(i16, i32, i32)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Metadata {
    pub(crate) brokers: Vec<Broker>,
    /// The asked topic, if the broker answered for it.
    pub(crate) topic: Option<TopicMetadata>,
}

/// Metadata v1 or v4 request for one topic. v4 asks the broker not to create the topic:
/// a typo in `topic` should fail over, not create a stray topic.
pub(crate) fn encode_metadata(version: i16, topic: &str) -> Vec<u8> {
    let mut w = Writer::default();
    w.i32(1);
    w.string(topic);
    if version >= 4 {
        w.i8(0);
    }
    w.buf
}

pub(crate) fn decode_metadata(
    version: i16,
    topic: &str,
    body: &[u8],
) -> Result<Metadata, WireError> {
    let mut r = Reader::new(body);
    if version >= 3 {
        r.i32()?; // throttle_time_ms: metadata is cheap and rare, so it is not honoured
    }
    let n = r.count()?;
    let mut brokers = Vec::with_capacity(n);
    for _ in 0..n {
        let node = r.i32()?;
        let host = r
            .string()?
            .ok_or(WireError::Malformed("broker without host"))?;
        let port = u16::try_from(r.i32()?).map_err(|_| WireError::Malformed("broker port"))?;
        r.string()?; // rack
        brokers.push(Broker { node, host, port });
    }
    if version >= 2 {
        r.string()?; // cluster_id
    }
    r.i32()?; // controller_id
    let mut found = None;
    for _ in 0..r.count()? {
        let error = r.i16()?;
        let name = r.string()?.unwrap_or_default();
        r.i8()?; // is_internal
        let mut partitions = Vec::new();
        for _ in 0..r.count()? {
            let perr = r.i16()?;
            let index = r.i32()?;
            let leader = r.i32()?;
            if version >= 7 {
                r.i32()?; // leader_epoch
            }
            for _ in 0..r.count()? {
                r.i32()?; // replicas
            }
            for _ in 0..r.count()? {
                r.i32()?; // isr
            }
            if version >= 5 {
                for _ in 0..r.count()? {
                    r.i32()?; // offline replicas
                }
            }
            partitions.push((perr, index, leader));
        }
        partitions.sort_by_key(|p| p.1);
        if name == topic {
            found = Some(TopicMetadata { error, partitions });
        }
    }
    Ok(Metadata {
        brokers,
        topic: found,
    })
}

pub(crate) use crate::spec::KafkaCompression as Compression;

/// One record to write into a batch.
pub(crate) struct OutRecord<'a> {
    /// `None` writes a null key (length -1), which Kafka reads as "no key".
    pub(crate) key: Option<&'a [u8]>,
    pub(crate) value: &'a [u8],
    pub(crate) headers: &'a [(&'a str, &'a [u8])],
}

/// Bytes of a record batch before its records: base offset (8), length (4), leader epoch
/// (4), magic (1), CRC (4), then what the CRC covers: attributes (2), last offset delta
/// (4), base and max timestamps (8 + 8), producer id (8), epoch (2), base sequence (4) and
/// the record count (4).
const BATCH_HEADER: usize = 61;
/// Where the CRC-covered part of a batch starts.
const CRC_FROM: usize = 21;

/// Bytes the zig-zag varint of `v` takes.
fn varint_len(v: i64) -> usize {
    let u = ((v << 1) ^ (v >> 63)) as u64;
    (64 - (u | 1).leading_zeros() as usize).div_ceil(7)
}

/// Bytes of a varint length and the `n` bytes after it.
fn var_bytes_len(n: usize) -> usize {
    varint_len(n as i64) + n
}

/// Bytes of record `i`'s body (everything after its own length varint).
fn record_len(r: &OutRecord<'_>, i: usize) -> usize {
    let key = r.key.map_or(1, |k| var_bytes_len(k.len()));
    let headers: usize = r
        .headers
        .iter()
        .map(|(k, v)| var_bytes_len(k.len()) + var_bytes_len(v.len()))
        .sum();
    // Attributes and timestamp delta (one byte each), then the offset delta.
    2 + varint_len(i as i64)
        + key
        + var_bytes_len(r.value.len())
        + varint_len(r.headers.len() as i64)
        + headers
}

/// A record batch (magic 2) holding `records`, all stamped `timestamp_ms`.
///
/// Producer id, epoch and base sequence are -1: no idempotent producer, because
/// retries are the engine's and may go to another cluster, where a broker-side sequence
/// would mean nothing; consumers dedupe by the `message-id` header instead.
///
/// Written into one buffer sized up front: each record's length is known before its
/// fields, so no record is built apart and copied in.
pub(crate) fn encode_batch(
    records: &[OutRecord<'_>],
    timestamp_ms: i64,
    compression: Compression,
) -> std::io::Result<Vec<u8>> {
    let total: usize = records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let n = record_len(r, i);
            varint_len(n as i64) + n
        })
        .sum();
    let mut w = Writer {
        buf: Vec::with_capacity(BATCH_HEADER + total),
    };
    w.buf.resize(BATCH_HEADER, 0);
    for (i, r) in records.iter().enumerate() {
        w.varint(record_len(r, i) as i64);
        w.i8(0); // attributes
        w.varint(0); // timestamp delta
        w.varint(i as i64); // offset delta
        match r.key {
            Some(key) => w.var_bytes(key),
            None => w.varint(-1),
        }
        w.var_bytes(r.value);
        w.varint(r.headers.len() as i64);
        for (k, v) in r.headers {
            w.var_bytes(k.as_bytes());
            w.var_bytes(v);
        }
    }
    debug_assert_eq!(w.buf.len(), BATCH_HEADER + total);
    let attributes = match compression {
        Compression::None => 0i16,
        Compression::Gzip => {
            let mut gz = flate2::write::GzEncoder::new(
                Vec::with_capacity(BATCH_HEADER + total / 2),
                flate2::Compression::fast(),
            );
            gz.get_mut().resize(BATCH_HEADER, 0);
            gz.write_all(&w.buf[BATCH_HEADER..])?;
            w.buf = gz.finish()?;
            1
        }
    };
    let n = i32::try_from(records.len()).unwrap_or(i32::MAX);
    let mut h = Writer {
        buf: Vec::with_capacity(BATCH_HEADER),
    };
    h.i64(0); // base offset
    // Length of everything after this field.
    h.i32(i32::try_from(w.buf.len() - 12).unwrap_or(i32::MAX));
    h.i32(-1); // partition leader epoch
    h.i8(2); // magic
    h.i32(0); // CRC, set below
    h.i16(attributes);
    h.i32(n - 1); // last offset delta
    h.i64(timestamp_ms); // base timestamp
    h.i64(timestamp_ms); // max timestamp
    h.i64(-1); // producer id
    h.i16(-1); // producer epoch
    h.i32(-1); // base sequence
    h.i32(n);
    w.buf[..BATCH_HEADER].copy_from_slice(&h.buf);
    let crc = crc32c::crc32c(&w.buf[CRC_FROM..]);
    w.buf[CRC_FROM - 4..CRC_FROM].copy_from_slice(&crc.to_be_bytes());
    Ok(w.buf)
}

/// Produce v3–v7 request (one layout): acks = all, one topic, one partition, one batch.
pub(crate) fn encode_produce(
    topic: &str,
    partition: i32,
    timeout_ms: i32,
    batch: &[u8],
) -> Vec<u8> {
    let mut w = Writer::default();
    w.buf.reserve(batch.len() + topic.len() + 32);
    w.null_string(); // transactional id
    w.i16(-1); // acks: all in-sync replicas, so a failover cannot lose an acknowledged record
    w.i32(timeout_ms);
    w.i32(1);
    w.string(topic);
    w.i32(1);
    w.i32(partition);
    w.bytes(batch);
    w.buf
}

/// What a Produce response says about our one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProduceResult {
    pub(crate) error: i16,
    pub(crate) base_offset: i64,
    pub(crate) throttle_ms: i32,
}

pub(crate) fn decode_produce(
    version: i16,
    topic: &str,
    partition: i32,
    body: &[u8],
) -> Result<ProduceResult, WireError> {
    let mut r = Reader::new(body);
    let mut found = None;
    for _ in 0..r.count()? {
        let name = r.string()?.unwrap_or_default();
        for _ in 0..r.count()? {
            let index = r.i32()?;
            let error = r.i16()?;
            let base_offset = r.i64()?;
            r.i64()?; // log append time
            if version >= 5 {
                r.i64()?; // log start offset
            }
            if name == topic && index == partition {
                found = Some((error, base_offset));
            }
        }
    }
    let throttle_ms = r.i32()?;
    let (error, base_offset) = found.ok_or(WireError::Malformed("no result for the partition"))?;
    Ok(ProduceResult {
        error,
        base_offset,
        throttle_ms,
    })
}

/// A request frame: size, header v1 (key, version, correlation id, client id), body.
pub(crate) fn frame(
    key: i16,
    version: i16,
    correlation: i32,
    client_id: &str,
    body: &[u8],
) -> Vec<u8> {
    let mut w = Writer::default();
    w.buf.reserve(body.len() + client_id.len() + 14);
    w.i32(0);
    w.i16(key);
    w.i16(version);
    w.i32(correlation);
    w.string(client_id);
    w.buf.extend_from_slice(body);
    let size = (w.buf.len() - 4) as i32;
    w.buf[..4].copy_from_slice(&size.to_be_bytes());
    w.buf
}

/// Kafka's default partitioner hash for keyed records: murmur2 (seed `0x9747b28c`), as
/// the Java client's `Utils.murmur2` and librdkafka's `murmur2` partitioner compute it,
/// so every producer and consumer agrees on where a device's records live.
pub fn murmur2(data: &[u8]) -> i32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h: u32 = 0x9747_b28c ^ (data.len() as u32);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if let Some(b) = rest.first() {
        h ^= u32::from(*b);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition Kafka's default partitioner picks for `key` among `count` partitions:
/// `toPositive(murmur2(key)) % count`.
pub fn partition_for(key: &[u8], count: u32) -> u32 {
    ((murmur2(key) as u32) & 0x7fff_ffff) % count.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Apache Kafka's own vectors (`UtilsTest.testMurmur2`).
    #[test]
    fn murmur2_matches_kafka() {
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (key, want) in cases {
            assert_eq!(murmur2(key), want, "{}", String::from_utf8_lossy(key));
        }
        // toPositive(-790332482) = 1357151166; % 10 = 6.
        assert_eq!(partition_for(b"foobar", 10), 6);
        assert_eq!(partition_for(b"foobar", 0), 0);
    }

    #[test]
    fn zigzag_varints() {
        for (v, bytes) in [
            (0i64, &[0u8][..]),
            (-1, &[1]),
            (1, &[2]),
            (63, &[126]),
            (-64, &[127]),
            (64, &[128, 1]),
            (300, &[216, 4]),
        ] {
            let mut w = Writer::default();
            w.varint(v);
            assert_eq!(w.buf, bytes, "{v}");
        }
    }

    /// The sizes a batch is laid out with agree with what the writer writes, at every
    /// bit length and sign.
    #[test]
    fn varint_len_matches_the_writer() {
        for bit in 0..64 {
            let p = 1i64 << bit;
            for v in [p, p.wrapping_sub(1), p.wrapping_neg(), i64::MIN, i64::MAX] {
                let mut w = Writer::default();
                w.varint(v);
                assert_eq!(varint_len(v), w.buf.len(), "{v}");
            }
        }
    }

    /// Golden bytes of a one-record batch, laid out field by field from the protocol's
    /// record batch and record definitions.
    #[test]
    fn batch_layout() {
        let rec = OutRecord {
            key: Some(b"k"),
            value: b"v",
            headers: &[("h", b"x")],
        };
        let b = encode_batch(&[rec], 1000, Compression::None).unwrap();
        let record: &[u8] = &[
            0, // attributes
            0, // timestamp delta
            0, // offset delta
            2, b'k', // key
            2, b'v', // value
            2,    // one header
            2, b'h', 2, b'x',
        ];
        let mut r = Reader::new(&b);
        assert_eq!(r.i64().unwrap(), 0);
        assert_eq!(r.i32().unwrap() as usize, b.len() - 12);
        assert_eq!(r.i32().unwrap(), -1);
        assert_eq!(r.i8().unwrap(), 2);
        let crc = r.i32().unwrap() as u32;
        assert_eq!(crc, crc32c::crc32c(&b[21..]));
        assert_eq!(r.i16().unwrap(), 0);
        assert_eq!(r.i32().unwrap(), 0); // last offset delta
        assert_eq!((r.i64().unwrap(), r.i64().unwrap()), (1000, 1000));
        assert_eq!(
            (r.i64().unwrap(), r.i16().unwrap(), r.i32().unwrap()),
            (-1, -1, -1)
        );
        assert_eq!(r.i32().unwrap(), 1);
        assert_eq!(r.take(1).unwrap(), &[(record.len() as u8) << 1]);
        assert_eq!(r.take(record.len()).unwrap(), record);
        assert!(r.buf.is_empty());
    }

    /// `partition_key = "none"`: the key is null (length -1, zigzag 1), not empty.
    #[test]
    fn keyless_record_has_a_null_key() {
        let rec = OutRecord {
            key: None,
            value: b"v",
            headers: &[],
        };
        let b = encode_batch(&[rec], 1000, Compression::None).unwrap();
        let record: &[u8] = &[0, 0, 0, 1, 2, b'v', 0];
        assert!(b.ends_with(record), "{b:?}");
        assert_eq!(b[b.len() - record.len() - 1], (record.len() as u8) << 1);
    }

    #[test]
    fn gzip_batch_decompresses_to_the_plain_records() {
        use std::io::Read as _;
        let recs = || {
            (0..3)
                .map(|_| OutRecord {
                    key: Some(b"dev"),
                    value: b"payload payload payload",
                    headers: &[("message-id", b"dev:1:1")],
                })
                .collect::<Vec<_>>()
        };
        let plain = encode_batch(&recs(), 5, Compression::None).unwrap();
        let gz = encode_batch(&recs(), 5, Compression::Gzip).unwrap();
        assert_eq!(i16::from_be_bytes([gz[21], gz[22]]), 1);
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&gz[61..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, &plain[61..]);
    }

    #[test]
    fn responses_decode_and_truncation_is_an_error() {
        // Produce v5: one topic, one partition, error 0, offset 42; throttle 250.
        let mut w = Writer::default();
        w.i32(1);
        w.string("t");
        w.i32(1);
        w.i32(2);
        w.i16(0);
        w.i64(42);
        w.i64(-1);
        w.i64(0);
        w.i32(250);
        let r = decode_produce(5, "t", 2, &w.buf).unwrap();
        assert_eq!((r.error, r.base_offset, r.throttle_ms), (0, 42, 250));
        for cut in 0..w.buf.len() {
            assert!(decode_produce(5, "t", 2, &w.buf[..cut]).is_err());
        }
        assert!(decode_produce(5, "other", 2, &w.buf).is_err());

        // Metadata v1: one broker, one topic with two partitions listed out of order.
        let mut w = Writer::default();
        w.i32(1);
        w.i32(7);
        w.string("127.0.0.1");
        w.i32(9092);
        w.null_string();
        w.i32(7);
        w.i32(1);
        w.i16(0);
        w.string("t");
        w.i8(0);
        w.i32(2);
        for (index, leader) in [(1, 7), (0, -1)] {
            w.i16(0);
            w.i32(index);
            w.i32(leader);
            w.i32(1);
            w.i32(7);
            w.i32(0);
        }
        let m = decode_metadata(1, "t", &w.buf).unwrap();
        assert_eq!(m.brokers[0].port, 9092);
        let t = m.topic.unwrap();
        assert_eq!(t.partitions, vec![(0, 0, -1), (0, 1, 7)]);
        for cut in 0..w.buf.len() {
            assert!(decode_metadata(1, "t", &w.buf[..cut]).is_err());
        }
        // A huge array count is refused without allocating.
        assert!(decode_api_versions(&[0, 0, 0x7f, 0xff, 0xff, 0xff]).is_err());
    }

    #[test]
    fn version_pick() {
        let v = ApiVersions {
            error: 0,
            apis: vec![(PRODUCE, 0, 9), (METADATA, 0, 2)],
        };
        assert_eq!(v.pick(PRODUCE, 3..=7), Some(7));
        assert_eq!(v.pick(METADATA, 1..=1), Some(1));
        assert_eq!(v.pick(SASL_HANDSHAKE, 1..=1), None);
        let old = ApiVersions {
            error: 0,
            apis: vec![(PRODUCE, 0, 2)],
        };
        assert_eq!(old.pick(PRODUCE, 3..=7), None);
    }
}
