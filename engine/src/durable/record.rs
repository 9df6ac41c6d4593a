//! What one event-log entry holds, and its bytes.
//!
//! An entry is `[format u8][seq u64 LE][rkyv archive of LogRecord]`. The sequence number is
//! node-wide and increases with every logged publish, watermark mark and dataflow install, so
//! a replay can merge the shards of every topic back into the order the workers first saw
//! them (which decides which events were late). It sits in a fixed header, outside the
//! archive, so the ingest path can stamp it under the ingest lock after encoding the batch
//! outside it.

use rkyv::rancor;
use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize, Serialize};

use starling_operators::flat::{
    push_value, row_from_wire, row_to_wire, value_from_wire, WireValue,
};
use starling_operators::Event;

/// One logged event, flat. The log's own type, not the QUIC wire's: the on-disk format must
/// not change when the protocol does. Its archive has the same layout as the wire event it
/// replaced (same fields, same order), so logs written before the split read unchanged.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct LogEvent {
    /// The key, one flat value.
    pub key: Vec<WireValue>,
    /// Event time, milliseconds since the Unix epoch.
    pub time: u64,
    /// The event's row, flat.
    pub row: Vec<WireValue>,
}

impl LogEvent {
    /// An engine event in log form.
    pub fn from_event(e: &Event) -> LogEvent {
        let mut key = Vec::with_capacity(1);
        push_value(&e.key, &mut key);
        LogEvent {
            key,
            time: e.time,
            row: row_to_wire(&e.row),
        }
    }

    /// Back to an engine event; an error names what is malformed.
    pub fn to_event(&self) -> Result<Event, String> {
        Ok(Event::new(
            value_from_wire(&self.key)?,
            self.time,
            row_from_wire(&self.row)?,
        ))
    }
}

/// The only entry format so far; a reader refuses others instead of guessing.
const FORMAT: u8 = 1;
const HEADER: usize = 9;

/// A logged change to a topic.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum LogRecord {
    /// Events of one published batch that hash to this entry's shard, in batch order.
    Events(Vec<LogEvent>),
    /// An explicit watermark mark on the topic (`POST /v1/topics/{t}/watermark`).
    Watermark(u64),
    /// Events like `Events`, from publish `batch` of the cluster node `producer`: a node
    /// retrying a forward whose first attempt reached the log (an owner that died before it
    /// answered) is recognised by the shard's next owner, which holds this entry as a
    /// replica, and not logged twice.
    Tagged {
        producer: u64,
        batch: u64,
        events: Vec<LogEvent>,
    },
}

/// A decoded entry: its sequence number and what it records.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    /// Events, back in engine form.
    Events(Vec<Event>),
    /// A watermark mark.
    Watermark(u64),
}

/// Encodes events as an entry with sequence number 0; [`stamp`] sets the real one.
pub fn encode_events<'a>(events: impl Iterator<Item = &'a Event>) -> Result<Vec<u8>, String> {
    encode(&LogRecord::Events(
        events.map(LogEvent::from_event).collect(),
    ))
}

/// Encodes events tagged with the publish they came from (see [`LogRecord::Tagged`]).
pub fn encode_tagged<'a>(
    (producer, batch): (u64, u64),
    events: impl Iterator<Item = &'a Event>,
) -> Result<Vec<u8>, String> {
    encode(&LogRecord::Tagged {
        producer,
        batch,
        events: events.map(LogEvent::from_event).collect(),
    })
}

/// Encodes a watermark mark with sequence number 0; [`stamp`] sets the real one.
pub fn encode_watermark(time: u64) -> Result<Vec<u8>, String> {
    encode(&LogRecord::Watermark(time))
}

fn encode(record: &LogRecord) -> Result<Vec<u8>, String> {
    let body = rkyv::to_bytes::<rancor::Error>(record).map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(HEADER + body.len());
    out.push(FORMAT);
    out.extend_from_slice(&0u64.to_le_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Sets the sequence number of an encoded entry.
pub fn stamp(entry: &mut [u8], seq: u64) {
    if entry.len() >= HEADER {
        entry[1..HEADER].copy_from_slice(&seq.to_le_bytes());
    }
}

/// Decodes an entry read back from the log. Every failure is an error with the reason: the
/// log's own checksum has passed by then, so a failure here means a format this build does
/// not know or a bug, never something to skip silently.
pub fn decode(bytes: &[u8]) -> Result<(u64, Entry), String> {
    decode_tagged(bytes).map(|(seq, entry, _)| (seq, entry))
}

/// The (producer node, publish batch) a tagged entry came from.
pub type Origin = (u64, u64);

/// Like [`decode`], also giving the origin of a tagged entry.
pub fn decode_tagged(bytes: &[u8]) -> Result<(u64, Entry, Option<Origin>), String> {
    if bytes.len() < HEADER {
        return Err(format!("entry of {} bytes has no header", bytes.len()));
    }
    if bytes[0] != FORMAT {
        return Err(format!(
            "entry format {} is not known to this build (expected {FORMAT})",
            bytes[0]
        ));
    }
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&bytes[1..HEADER]);
    let mut aligned = AlignedVec::<16>::with_capacity(bytes.len() - HEADER);
    aligned.extend_from_slice(&bytes[HEADER..]);
    let record =
        rkyv::from_bytes::<LogRecord, rancor::Error>(&aligned).map_err(|e| e.to_string())?;
    let events = |events: Vec<LogEvent>| -> Result<Entry, String> {
        Ok(Entry::Events(
            events
                .iter()
                .map(LogEvent::to_event)
                .collect::<Result<_, _>>()?,
        ))
    };
    let (entry, origin) = match record {
        LogRecord::Events(e) => (events(e)?, None),
        LogRecord::Watermark(t) => (Entry::Watermark(t), None),
        LogRecord::Tagged {
            producer,
            batch,
            events: e,
        } => (events(e)?, Some((producer, batch))),
    };
    Ok((u64::from_le_bytes(seq), entry, origin))
}

#[cfg(test)]
mod tests {
    use super::*;
    use starling_operators::Value;

    #[test]
    fn entries_round_trip_with_their_sequence_number() {
        let events = vec![
            Event::new(
                Value::str("k"),
                5,
                vec![Value::str("k"), Value::Timestamp(5)],
            ),
            Event::new(Value::Int(2), 9, vec![Value::Int(2), Value::Null]),
        ];
        let mut bytes = encode_events(events.iter()).unwrap();
        stamp(&mut bytes, 42);
        assert_eq!(decode(&bytes).unwrap(), (42, Entry::Events(events)));
        let mut w = encode_watermark(77).unwrap();
        stamp(&mut w, 7);
        assert_eq!(decode(&w).unwrap(), (7, Entry::Watermark(77)));
    }

    #[test]
    fn damaged_entries_are_errors_not_panics() {
        let mut bytes = encode_watermark(1).unwrap();
        assert!(decode(&bytes[..5]).is_err());
        bytes[0] = 9;
        assert!(decode(&bytes).unwrap_err().contains("format 9"));
        let mut bytes = encode_events([Event::new(Value::Null, 1, vec![])].iter()).unwrap();
        let n = bytes.len();
        bytes.truncate(n - 3);
        assert!(decode(&bytes).is_err());
        for i in 9..n - 3 {
            let mut b = encode_events([Event::new(Value::Null, 1, vec![])].iter()).unwrap();
            b[i] ^= 0xff;
            let _ = decode(&b);
        }
    }
}
