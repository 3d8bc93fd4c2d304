//! The messages between members that are ours, not openraft's, in one
//! place: the pre-vote exchange ([`crate::election`]), the answer to a
//! forwarded write or read-index call ([`crate::node`]), and the framing of
//! a snapshot chunk on the wire ([`crate::network`] sends it,
//! [`crate::http`] reads it). openraft's own requests travel as its serde
//! types.

use openraft::raft::InstallSnapshotRequest;
use openraft::LogId;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::{NodeId, TypeConfig};

/// "Would you vote for me now?", sent before a candidate raises its term.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PreVoteRequest {
    pub candidate: NodeId,
    /// The candidate's last log entry (what a real vote request carries).
    pub last_log_id: Option<LogId<NodeId>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PreVoteResponse {
    pub granted: bool,
    /// Why not, when not granted.
    pub reason: Option<String>,
}

/// The answer to a forwarded write or read-index call.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ForwardReply<T> {
    Ok(T),
    NotLeader(Option<(NodeId, String)>),
    Unavailable(String),
    /// Refused, not proposed: the leader's queue is full.
    Overloaded(String),
}

/// A snapshot chunk on the wire: the request without its data as JSON,
/// prefixed by that JSON's length (u32, little-endian), then the data as
/// raw bytes. serde writes a `Vec<u8>` in JSON as an array of decimal
/// numbers, about 3.6 bytes per byte of snapshot (the file format changed
/// for the same reason, see `state_machine`).
pub(crate) fn encode_chunk(
    mut req: InstallSnapshotRequest<TypeConfig>,
) -> Result<Vec<u8>, serde_json::Error> {
    let data = std::mem::take(&mut req.data);
    let header = serde_json::to_vec(&req)?;
    let mut out = Vec::with_capacity(4 + header.len() + data.len());
    // A header over 4 GiB cannot be built: it holds only the snapshot's
    // meta (ids, membership) and the chunk offset.
    out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(&data);
    Ok(out)
}

/// The inverse of [`encode_chunk`]; says what is wrong with a bad body.
pub(crate) fn decode_chunk(body: &[u8]) -> Result<InstallSnapshotRequest<TypeConfig>, String> {
    let (len, rest) = body
        .split_first_chunk::<4>()
        .ok_or("snapshot chunk shorter than its 4-byte header length")?;
    let len = u32::from_le_bytes(*len) as usize;
    if rest.len() < len {
        return Err(format!(
            "snapshot chunk header says {len} bytes, body has {}",
            rest.len()
        ));
    }
    let (header, data) = rest.split_at(len);
    let mut req: InstallSnapshotRequest<TypeConfig> = serde_json::from_slice(header)
        .map_err(|e| format!("snapshot chunk header is not a valid request: {e}"))?;
    if !req.data.is_empty() {
        return Err("snapshot chunk header carries data of its own".into());
    }
    req.data = data.to_vec();
    Ok(req)
}

/// JSON `null`, the answer of a command that has none.
pub(crate) fn json_null() -> Box<RawValue> {
    RawValue::from_string("null".to_string()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(data: Vec<u8>) -> InstallSnapshotRequest<TypeConfig> {
        use openraft::{CommittedLeaderId, LogId, SnapshotMeta, StoredMembership, Vote};
        InstallSnapshotRequest {
            vote: Vote::new_committed(3, 1),
            meta: SnapshotMeta {
                last_log_id: Some(LogId::new(CommittedLeaderId::new(3, 1), 42)),
                last_membership: StoredMembership::default(),
                snapshot_id: "3-1-42-1".into(),
            },
            offset: 1 << 20,
            data,
            done: false,
        }
    }

    #[test]
    fn a_snapshot_chunk_travels_as_header_and_raw_bytes() {
        let data: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
        let body = encode_chunk(chunk(data.clone())).unwrap();
        let header = u32::from_le_bytes(body[..4].try_into().unwrap()) as usize;
        assert_eq!(body.len(), 4 + header + data.len(), "data sent as is");
        assert!(header < 300, "header holds meta only: {header} bytes");
        let back = decode_chunk(&body).unwrap();
        assert_eq!(back, chunk(data));
        // An empty last chunk too.
        let empty = decode_chunk(&encode_chunk(chunk(Vec::new())).unwrap()).unwrap();
        assert!(empty.data.is_empty());
    }

    #[test]
    fn a_bad_snapshot_chunk_is_refused_with_the_reason() {
        let good = encode_chunk(chunk(b"snapshot bytes".to_vec())).unwrap();
        let header = u32::from_le_bytes(good[..4].try_into().unwrap()) as usize;
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![1, 0], "shorter than its 4-byte header"),
            (good[..4 + header - 1].to_vec(), "body has"),
            ([&[2u8, 0, 0, 0][..], b"{}"].concat(), "not a valid request"),
            (
                {
                    let mut with_data = serde_json::to_vec(&chunk(vec![7])).unwrap();
                    let mut b = (with_data.len() as u32).to_le_bytes().to_vec();
                    b.append(&mut with_data);
                    b
                },
                "carries data of its own",
            ),
        ];
        for (body, why) in cases {
            let err = decode_chunk(&body).unwrap_err();
            assert!(err.contains(why), "{err:?} should say {why:?}");
        }
    }
}
