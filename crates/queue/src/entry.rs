//! Stream entries as this crate stores them, and parsing of Redis replies into them.

use redis::Value;

use crate::error::{Error, Result};

/// One job as read from the stream.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// The stream entry id (changes on every retry).
    pub entry_id: String,
    /// The stable job id chosen by the producer.
    pub job_id: String,
    /// The JSON payload.
    pub payload: Vec<u8>,
    /// Attempts already spent before this entry was added.
    pub spent: u32,
    /// Attempts allowed in total.
    pub max_attempts: u32,
    /// How many times this entry has been delivered (1 on a first read; more after reclaims).
    pub deliveries: u32,
}

impl Entry {
    /// The 1-based number of the attempt this delivery is.
    pub fn attempt(&self) -> u32 {
        self.spent + self.deliveries
    }
}

fn text(v: &Value) -> Result<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).map_err(|e| Error::Protocol(e.to_string())),
        Value::SimpleString(s) => Ok(s.clone()),
        Value::Int(i) => Ok(i.to_string()),
        other => Err(Error::Protocol(format!("expected a string, got {other:?}"))),
    }
}

fn int(v: &Value) -> Result<i64> {
    match v {
        Value::Int(i) => Ok(*i),
        other => text(other)?.parse().map_err(|_| Error::Protocol(format!("expected an integer, got {other:?}"))),
    }
}

fn array(v: &Value) -> Result<&[Value]> {
    match v {
        Value::Array(items) => Ok(items),
        other => Err(Error::Protocol(format!("expected an array, got {other:?}"))),
    }
}

/// Parses `[id, [field, value, …]]`; `None` for entries deleted since (fields are nil).
pub(crate) fn parse_entry(v: &Value, deliveries: u32) -> Result<Option<Entry>> {
    let parts = array(v)?;
    let (Some(id), Some(fields)) = (parts.first(), parts.get(1)) else {
        return Err(Error::Protocol("stream entry without id and fields".into()));
    };
    let fields = match fields {
        Value::Nil => return Ok(None),
        f => array(f)?,
    };
    let mut entry = Entry {
        entry_id: text(id)?,
        job_id: String::new(),
        payload: Vec::new(),
        spent: 0,
        max_attempts: 1,
        deliveries,
    };
    for pair in fields.chunks_exact(2) {
        let name = match &pair[0] {
            Value::BulkString(b) => b.as_slice(),
            Value::SimpleString(s) => s.as_bytes(),
            _ => continue,
        };
        match name {
            b"j" => entry.job_id = text(&pair[1])?,
            b"p" => {
                entry.payload = match &pair[1] {
                    Value::BulkString(b) => b.clone(),
                    other => text(other)?.into_bytes(),
                }
            }
            b"a" => entry.spent = int(&pair[1])? as u32,
            b"m" => entry.max_attempts = int(&pair[1])? as u32,
            _ => {}
        }
    }
    Ok(Some(entry))
}

/// Parses an `XREADGROUP` reply for one stream (nil when the block timed out).
pub(crate) fn parse_read(v: &Value) -> Result<Vec<Entry>> {
    let streams = match v {
        Value::Nil => return Ok(Vec::new()),
        v => array(v)?,
    };
    let mut out = Vec::new();
    for stream in streams {
        let parts = array(stream)?;
        let Some(entries) = parts.get(1) else { continue };
        for e in array(entries)? {
            if let Some(entry) = parse_entry(e, 1)? {
                out.push(entry);
            }
        }
    }
    Ok(out)
}

/// Parses the reclaim script's reply: next cursor, entries with delivery counts, dead count.
pub(crate) fn parse_reclaim(v: &Value) -> Result<(String, Vec<Entry>, u64)> {
    let parts = array(v)?;
    if parts.len() < 3 {
        return Err(Error::Protocol("short reclaim reply".into()));
    }
    let cursor = text(&parts[0])?;
    let mut out = Vec::new();
    for item in array(&parts[1])? {
        let triple = array(item)?;
        if triple.len() < 3 {
            continue;
        }
        let deliveries = int(&triple[2])? as u32;
        let pair = Value::Array(vec![triple[0].clone(), triple[1].clone()]);
        if let Some(entry) = parse_entry(&pair, deliveries)? {
            out.push(entry);
        }
    }
    Ok((cursor, out, int(&parts[2])? as u64))
}

/// A job that ended in the dead stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadJob {
    /// The dead-stream entry id.
    pub entry_id: String,
    /// The stable job id.
    pub job_id: String,
    /// The JSON payload.
    pub payload: String,
    /// Attempts spent.
    pub attempts: u32,
    /// The last error.
    pub error: String,
    /// When it died, ms since the epoch.
    pub failed_at_ms: u64,
}

/// Parses an `XRANGE`/`XREVRANGE` reply of the dead stream.
pub(crate) fn parse_dead(v: &Value) -> Result<Vec<DeadJob>> {
    let mut out = Vec::new();
    for e in array(v)? {
        let parts = array(e)?;
        let (Some(id), Some(fields)) = (parts.first(), parts.get(1)) else { continue };
        let mut job = DeadJob {
            entry_id: text(id)?,
            job_id: String::new(),
            payload: String::new(),
            attempts: 0,
            error: String::new(),
            failed_at_ms: 0,
        };
        for pair in array(fields)?.chunks_exact(2) {
            match text(&pair[0])?.as_str() {
                "j" => job.job_id = text(&pair[1])?,
                "p" => job.payload = text(&pair[1])?,
                "a" => job.attempts = int(&pair[1])? as u32,
                "e" => job.error = text(&pair[1])?,
                "t" => job.failed_at_ms = int(&pair[1])? as u64,
                _ => {}
            }
        }
        out.push(job);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn parses_a_read_reply_and_skips_deleted_entries() {
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("nimbus:q:{x}"),
            Value::Array(vec![
                Value::Array(vec![
                    bulk("1-0"),
                    Value::Array(vec![
                        bulk("j"),
                        bulk("job-1"),
                        bulk("p"),
                        bulk("{}"),
                        bulk("a"),
                        bulk("2"),
                        bulk("m"),
                        bulk("5"),
                    ]),
                ]),
                Value::Array(vec![bulk("2-0"), Value::Nil]),
            ]),
        ])]);
        let entries = parse_read(&reply).unwrap();
        assert_eq!(entries.len(), 1);
        let e = &entries[0];
        assert_eq!((e.entry_id.as_str(), e.job_id.as_str(), e.payload.as_slice()), ("1-0", "job-1", &b"{}"[..]));
        assert_eq!((e.spent, e.max_attempts, e.attempt()), (2, 5, 3));
        assert!(parse_read(&Value::Nil).unwrap().is_empty());
    }
}
