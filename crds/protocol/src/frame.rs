//! The agent channel as one connection: `GET /v1/channel` upgraded (HTTP/1.1 `Upgrade:
//! netslo-channel/1`) to length-prefixed frames both ways, for the agent's life.
//!
//! Why not HTTP requests: at cluster sizes every agent held two HTTP connections (the
//! assignment long-poll and the result posts), and each kept about 32 KiB of HTTP and TLS
//! buffers for its life: 320 MB at 5,000 nodes on the operator. After the upgrade a
//! connection keeps only its TLS state; a frame's body is allocated when it arrives and freed
//! once handled.
//!
//! A frame is a 5-byte header, the body's length (`u32`, big-endian) and its [`FrameKind`],
//! then the body (JSON, or nothing). Each kind has its own bound ([`FrameKind::max_body`]),
//! checked before a byte of the body is read.
//!
//! * operator → agent: [`FrameKind::Assignment`] (an
//!   [`AssignmentEnvelope`](crate::channel::AssignmentEnvelope), sent at once and whenever the
//!   version changes), [`FrameKind::BatchAnswer`] (a [`BatchAnswer`]), [`FrameKind::Ping`]
//!   (every [`PING_INTERVAL`]), [`FrameKind::Closing`] (a [`Closing`], then the operator
//!   closes);
//! * agent → operator: [`FrameKind::Batch`] (a [`ResultBatch`](crate::channel::ResultBatch);
//!   the next one only once the last is answered), [`FrameKind::Pong`] (to each ping).
//!
//! Either side that hears nothing for [`SILENCE_LIMIT`] takes the connection for dead. The
//! agent dials again within [`MAX_CHANNEL_AGE`] (its token is checked once per connection; the
//! kubelet rotates it), and the operator closes connections older than that.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::channel::{BatchAck, MAX_ASSIGNMENT_RESPONSE_BYTES, MAX_BATCH_BYTES};

/// Path of the channel endpoint (`GET` with `Upgrade: netslo-channel/1`).
pub const CHANNEL_PATH: &str = "/v1/channel";
/// The `Upgrade` token of the framed channel.
pub const CHANNEL_UPGRADE: &str = "netslo-channel/1";
/// Bytes of a frame header: the body's length (`u32`, big-endian) and the kind.
pub const FRAME_HEADER_BYTES: usize = 5;
/// How often the operator pings an agent's channel.
pub const PING_INTERVAL: Duration = Duration::from_secs(30);
/// Silence after which either side takes the channel for dead (three pings missed).
pub const SILENCE_LIMIT: Duration = Duration::from_secs(95);
/// Longest an agent's channel lives; agents dial again at a random point of its second half.
pub const MAX_CHANNEL_AGE: Duration = Duration::from_secs(60 * 60);
/// Largest answer or closing body.
const MAX_ANSWER_BYTES: usize = 256 * 1024;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// Agent → operator: a result batch.
    Batch,
    /// Agent → operator: the answer to a ping (no body).
    Pong,
    /// Operator → agent: the agent's assignment envelope.
    Assignment,
    /// Operator → agent: what became of a batch.
    BatchAnswer,
    /// Operator → agent: are you there (no body).
    Ping,
    /// Operator → agent: why the operator closes the channel.
    Closing,
}

/// Which side sends a kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sender {
    Agent,
    Operator,
}

impl FrameKind {
    fn code(self) -> u8 {
        match self {
            FrameKind::Batch => 1,
            FrameKind::Pong => 2,
            FrameKind::Assignment => 16,
            FrameKind::BatchAnswer => 17,
            FrameKind::Ping => 18,
            FrameKind::Closing => 19,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            1 => FrameKind::Batch,
            2 => FrameKind::Pong,
            16 => FrameKind::Assignment,
            17 => FrameKind::BatchAnswer,
            18 => FrameKind::Ping,
            19 => FrameKind::Closing,
            _ => return None,
        })
    }

    pub fn sender(self) -> Sender {
        match self {
            FrameKind::Batch | FrameKind::Pong => Sender::Agent,
            _ => Sender::Operator,
        }
    }

    /// Largest body of this kind.
    pub fn max_body(self) -> usize {
        match self {
            FrameKind::Batch => MAX_BATCH_BYTES,
            FrameKind::Assignment => MAX_ASSIGNMENT_RESPONSE_BYTES,
            FrameKind::BatchAnswer | FrameKind::Closing => MAX_ANSWER_BYTES,
            FrameKind::Pong | FrameKind::Ping => 0,
        }
    }
}

/// A frame header the reading side must refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("{kind:?} frames come from the other side")]
    WrongSender { kind: FrameKind },
    #[error("{kind:?} frame of {len} bytes, above its bound of {max}")]
    TooLarge {
        kind: FrameKind,
        len: usize,
        max: usize,
    },
}

impl FrameError {
    pub fn reason(&self) -> &'static str {
        match self {
            FrameError::UnknownKind(_) => "FrameKindUnknown",
            FrameError::WrongSender { .. } => "FrameMisdirected",
            FrameError::TooLarge { .. } => "FrameTooLarge",
        }
    }
}

/// A checked frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub kind: FrameKind,
    pub len: usize,
}

impl FrameHeader {
    /// The header of a frame from `from`, checked: a kind that side sends, within its bound.
    pub fn decode(bytes: [u8; FRAME_HEADER_BYTES], from: Sender) -> Result<Self, FrameError> {
        let [a, b, c, d, code] = bytes;
        let len = u32::from_be_bytes([a, b, c, d]) as usize;
        let kind = FrameKind::from_code(code).ok_or(FrameError::UnknownKind(code))?;
        if kind.sender() != from {
            return Err(FrameError::WrongSender { kind });
        }
        let max = kind.max_body();
        if len > max {
            return Err(FrameError::TooLarge { kind, len, max });
        }
        Ok(FrameHeader { kind, len })
    }

    /// The header of a frame with a `len`-byte body; `None` above the kind's bound.
    pub fn encode(kind: FrameKind, len: usize) -> Option<[u8; FRAME_HEADER_BYTES]> {
        if len > kind.max_body() {
            return None;
        }
        let [a, b, c, d] = u32::try_from(len).ok()?.to_be_bytes();
        Some([a, b, c, d, kind.code()])
    }
}

/// The operator's answer to a [`FrameKind::Batch`]: the status an HTTP post of the same batch
/// would have had (200, 400, 403, 413, 503), with the acknowledgement or the error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BatchAnswer {
    /// The batch's `seqTo`.
    pub seq_to: u64,
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack: Option<BatchAck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<crate::channel::ErrorBody>,
}

/// Why the operator closes a channel (the status an HTTP request would have had).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Closing {
    pub status: u16,
    pub reason: String,
    pub message: String,
}

#[cfg(feature = "io")]
pub use io::{read_body, read_header, write_frame};

#[cfg(feature = "io")]
mod io {
    use std::time::Duration;

    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

    use super::{FRAME_HEADER_BYTES, FrameHeader, FrameKind, Sender};

    /// Why a frame could not be read or written.
    #[derive(Debug, thiserror::Error)]
    pub enum FrameIoError {
        #[error(transparent)]
        Frame(#[from] super::FrameError),
        #[error("connection: {0}")]
        Io(#[from] std::io::Error),
        #[error("a frame body took longer than {0:?}")]
        BodyTimeout(Duration),
    }

    impl FrameIoError {
        pub fn reason(&self) -> &'static str {
            match self {
                FrameIoError::Frame(e) => e.reason(),
                FrameIoError::Io(_) => "ConnectionLost",
                FrameIoError::BodyTimeout(_) => "FrameTimeout",
            }
        }
    }

    /// Reads the next header from `from`, waiting as long as it takes; `None` when the other
    /// side closed between frames. Takes the reader and gives it back, so that the read can
    /// wait inside a `select!` loop across iterations without a half-read frame being lost.
    pub async fn read_header<R: AsyncRead + Unpin>(
        mut reader: R,
        from: Sender,
    ) -> (R, Result<Option<FrameHeader>, FrameIoError>) {
        let mut bytes = [0u8; FRAME_HEADER_BYTES];
        let first = match reader.read(&mut bytes[..1]).await {
            Ok(0) => return (reader, Ok(None)),
            Ok(_) => reader.read_exact(&mut bytes[1..]).await.map(|_| ()),
            Err(e) => Err(e),
        };
        let header = first
            .map_err(FrameIoError::from)
            .and_then(|()| Ok(FrameHeader::decode(bytes, from)?));
        (reader, header.map(Some))
    }

    /// Reads a body of `header.len` bytes within `deadline` (a header promises its body at
    /// once: a slow one is a stalled or hostile peer).
    pub async fn read_body<R: AsyncRead + Unpin>(
        mut reader: R,
        header: FrameHeader,
        deadline: Duration,
    ) -> (R, Result<Vec<u8>, FrameIoError>) {
        let mut body = vec![0u8; header.len];
        let read = tokio::time::timeout(deadline, reader.read_exact(&mut body)).await;
        let body = match read {
            Ok(Ok(_)) => Ok(body),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(FrameIoError::BodyTimeout(deadline)),
        };
        (reader, body)
    }

    /// Writes one frame and flushes it; gives the writer back like [`read_header`].
    pub async fn write_frame<W: AsyncWrite + Unpin>(
        mut writer: W,
        kind: FrameKind,
        body: &[u8],
    ) -> (W, Result<(), FrameIoError>) {
        let written = async {
            let header = FrameHeader::encode(kind, body.len()).ok_or_else(|| {
                super::FrameError::TooLarge {
                    kind,
                    len: body.len(),
                    max: kind.max_body(),
                }
            })?;
            // One write: a header and body written apart are two TLS records, two packets
            // and two wake-ups on the other side, for every batch and answer.
            let mut frame = Vec::with_capacity(FRAME_HEADER_BYTES + body.len());
            frame.extend_from_slice(&header);
            frame.extend_from_slice(body);
            writer.write_all(&frame).await?;
            writer.flush().await?;
            Ok(())
        }
        .await;
        (writer, written)
    }
}

#[cfg(feature = "io")]
pub use io::FrameIoError;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_refuse_what_the_side_does_not_send() {
        for kind in [
            FrameKind::Batch,
            FrameKind::Pong,
            FrameKind::Assignment,
            FrameKind::BatchAnswer,
            FrameKind::Ping,
            FrameKind::Closing,
        ] {
            let len = kind.max_body();
            let bytes = FrameHeader::encode(kind, len).unwrap();
            assert_eq!(
                FrameHeader::decode(bytes, kind.sender()),
                Ok(FrameHeader { kind, len })
            );
            let other = match kind.sender() {
                Sender::Agent => Sender::Operator,
                Sender::Operator => Sender::Agent,
            };
            assert_eq!(
                FrameHeader::decode(bytes, other),
                Err(FrameError::WrongSender { kind })
            );
            assert_eq!(FrameHeader::encode(kind, len + 1), None);
        }
        assert_eq!(
            FrameHeader::decode([0, 0, 0, 1, FrameKind::Ping.code()], Sender::Operator),
            Err(FrameError::TooLarge {
                kind: FrameKind::Ping,
                len: 1,
                max: 0
            }),
            "a ping has no body"
        );
        let huge = FrameHeader::decode([0xff, 0xff, 0xff, 0xff, 1], Sender::Agent);
        assert!(
            matches!(
                huge,
                Err(FrameError::TooLarge {
                    len: 0xffff_ffff,
                    ..
                })
            ),
            "refused before a byte is allocated: {huge:?}"
        );
        assert_eq!(
            FrameHeader::decode([0, 0, 0, 0, 3], Sender::Agent),
            Err(FrameError::UnknownKind(3))
        );
    }

    #[test]
    fn answers_read_as_written() {
        let answer = BatchAnswer {
            seq_to: 7,
            status: 200,
            ack: Some(BatchAck {
                accepted: 3,
                duplicates: 1,
                refused: Vec::new(),
            }),
            error: None,
        };
        let json = serde_json::to_string(&answer).unwrap();
        assert_eq!(
            json,
            r#"{"seqTo":7,"status":200,"ack":{"accepted":3,"duplicates":1}}"#
        );
        assert_eq!(serde_json::from_str::<BatchAnswer>(&json).unwrap(), answer);
        assert!(serde_json::from_str::<BatchAnswer>(r#"{"seqTo":1,"status":200,"x":1}"#).is_err());
    }
}
