//! The spool's on-disk format: length- and CRC-framed records, and the
//! encoding of one Kafka record inside a frame.
//!
//! Frame: `len: u32 LE | crc32(payload): u32 LE | payload (len bytes)`.
//! A frame that runs past the end of the file or fails its CRC ends the
//! readable part of a segment: that is how a torn write is detected.
//!
//! Payload version 2 (since 0.2) carries the record's topic; version 1
//! records, which have none, are still read (and go to their stream's
//! configured topic).

use std::sync::Arc;

use crate::metrics::Stream;
use crate::sink::record::OutRecord;

/// Bytes of frame header before each payload.
pub const FRAME_HEADER: usize = 8;
/// Largest payload a frame may hold (sanity bound when reading).
pub const MAX_PAYLOAD: usize = 256 * 1024 * 1024;
const VERSION: u8 = 2;

/// Appends the frame for `record` to `out`.
pub fn encode_frame(record: &OutRecord, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER]);
    out.push(VERSION);
    out.push(match record.stream {
        Stream::Events => 0,
        Stream::DeadLetter => 1,
    });
    match &record.topic {
        Some(t) => {
            out.push(1);
            put_bytes16(out, t.as_bytes());
        }
        None => out.push(0),
    }
    out.extend_from_slice(&record.timestamp_ms.to_le_bytes());
    put_bytes16(out, record.id.as_bytes());
    match &record.key {
        Some(k) => {
            out.push(1);
            put_bytes32(out, k.as_bytes());
        }
        None => out.push(0),
    }
    let n = u16::try_from(record.headers.len()).expect("a record has fewer than 65536 headers");
    out.extend_from_slice(&n.to_le_bytes());
    for (k, v) in &record.headers {
        put_bytes16(out, k.as_bytes());
        put_bytes32(out, v);
    }
    put_bytes32(out, &record.payload);
    let payload = &out[start + FRAME_HEADER..];
    let len = u32::try_from(payload.len()).expect("records are bounded by the body limit");
    let crc = crc32fast::hash(payload);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

fn put_bytes16(out: &mut Vec<u8>, b: &[u8]) {
    let n = u16::try_from(b.len()).expect("short field under 64 KiB");
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(b);
}

fn put_bytes32(out: &mut Vec<u8>, b: &[u8]) {
    let n = u32::try_from(b.len()).expect("field under 4 GiB");
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(b);
}

/// Length and CRC from a frame header; `None` if the length is impossible.
pub fn parse_header(h: &[u8; FRAME_HEADER]) -> Option<(usize, u32)> {
    let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
    let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
    (len > 0 && len <= MAX_PAYLOAD).then_some((len, crc))
}

/// What reading a frame at some offset found.
#[derive(Debug, PartialEq)]
pub enum Frame<'a> {
    /// A whole, intact frame: its payload and its total size.
    Whole(&'a [u8], usize),
    /// The data ends exactly here.
    End,
    /// A partial or corrupt frame: the readable data ends here.
    Torn,
}

/// Reads the frame at the start of `data`.
pub fn read_frame(data: &[u8]) -> Frame<'_> {
    if data.is_empty() {
        return Frame::End;
    }
    if data.len() < FRAME_HEADER {
        return Frame::Torn;
    }
    let header: &[u8; FRAME_HEADER] = data[..FRAME_HEADER].try_into().expect("length checked");
    let Some((len, crc)) = parse_header(header) else {
        return Frame::Torn;
    };
    if data.len() < FRAME_HEADER + len {
        return Frame::Torn;
    }
    let payload = &data[FRAME_HEADER..FRAME_HEADER + len];
    if crc32fast::hash(payload) != crc {
        return Frame::Torn;
    }
    Frame::Whole(payload, FRAME_HEADER + len)
}

/// Decodes a frame's payload. `None` if it is not a record this version wrote.
pub fn decode(payload: &[u8]) -> Option<OutRecord> {
    let mut r = Reader(payload);
    let version = r.u8()?;
    if !(1..=VERSION).contains(&version) {
        return None;
    }
    let stream = match r.u8()? {
        0 => Stream::Events,
        1 => Stream::DeadLetter,
        _ => return None,
    };
    let topic = match (version, r.0.first()) {
        (1, _) => None,
        (_, Some(0)) => {
            r.u8()?;
            None
        }
        (_, Some(1)) => {
            r.u8()?;
            Some(Arc::from(std::str::from_utf8(r.bytes16()?).ok()?))
        }
        _ => return None,
    };
    let timestamp_ms = i64::from_le_bytes(r.take(8)?.try_into().ok()?);
    let id = String::from_utf8(r.bytes16()?.to_vec()).ok()?;
    let key = match r.u8()? {
        0 => None,
        1 => Some(String::from_utf8(r.bytes32()?.to_vec()).ok()?),
        _ => return None,
    };
    let n = u16::from_le_bytes(r.take(2)?.try_into().ok()?);
    let mut headers = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let k = String::from_utf8(r.bytes16()?.to_vec()).ok()?;
        let v = r.bytes32()?.to_vec();
        headers.push((k.into(), v));
    }
    let payload = r.bytes32()?.to_vec();
    if !r.0.is_empty() {
        return None;
    }
    Some(OutRecord {
        stream,
        topic,
        id,
        key,
        headers,
        payload,
        timestamp_ms,
    })
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn bytes16(&mut self) -> Option<&'a [u8]> {
        let n = u16::from_le_bytes(self.take(2)?.try_into().ok()?) as usize;
        self.take(n)
    }
    fn bytes32(&mut self) -> Option<&'a [u8]> {
        let n = u32::from_le_bytes(self.take(4)?.try_into().ok()?) as usize;
        self.take(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(i: u8) -> OutRecord {
        OutRecord {
            stream: if i.is_multiple_of(2) {
                Stream::Events
            } else {
                Stream::DeadLetter
            },
            topic: (!i.is_multiple_of(5)).then(|| Arc::from(format!("topic-{i}"))),
            id: format!("id-{i}"),
            key: (!i.is_multiple_of(3)).then(|| format!("@TOA#_{i}")),
            headers: vec![("ce_id".into(), vec![i; 3]), ("empty".into(), vec![])],
            payload: vec![i; usize::from(i) * 10],
            timestamp_ms: 1_732_770_000_000 + i64::from(i),
        }
    }

    #[test]
    fn records_round_trip_through_frames() {
        let mut buf = Vec::new();
        for i in 0..20 {
            encode_frame(&sample(i), &mut buf);
        }
        let mut at = 0;
        for i in 0..20 {
            let Frame::Whole(payload, size) = read_frame(&buf[at..]) else {
                panic!("frame {i} unreadable")
            };
            assert_eq!(decode(payload), Some(sample(i)));
            at += size;
        }
        assert_eq!(read_frame(&buf[at..]), Frame::End);
    }

    /// Spools written by 0.1 bridges (version 1, no topic) are still read.
    #[test]
    fn version_1_records_decode_without_a_topic() {
        let mut record = sample(4);
        record.topic = Some(Arc::from("ignored"));
        let mut buf = Vec::new();
        encode_frame(&record, &mut buf);
        let Frame::Whole(payload, _) = read_frame(&buf) else {
            panic!("unreadable")
        };
        // Version 1 layout: the version 2 payload without the topic field.
        let topic_field = 1 + 2 + "ignored".len();
        let mut v1 = vec![1, payload[1]];
        v1.extend_from_slice(&payload[2 + topic_field..]);
        record.topic = None;
        assert_eq!(decode(&v1), Some(record));
    }

    #[test]
    fn every_truncation_and_any_flipped_bit_is_torn() {
        let mut buf = Vec::new();
        encode_frame(&sample(7), &mut buf);
        for cut in 1..buf.len() {
            assert_eq!(read_frame(&buf[..cut]), Frame::Torn, "cut at {cut}");
        }
        for i in 0..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 0x10;
            if let Frame::Whole(p, _) = read_frame(&bad) {
                panic!("flip at {i} still reads as a whole frame: {p:?}");
            }
        }
        // Zeroed space (pre-allocated but unwritten) is torn, not a record.
        assert_eq!(read_frame(&[0u8; 64]), Frame::Torn);
    }
}
