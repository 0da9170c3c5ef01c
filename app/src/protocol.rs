//! The wire protocol between the browser and the server.
//!
//! Both sides compile this one module, so a message cannot be spelled one way by the
//! client and another by the server. Frames are JSON text; every enum is internally
//! tagged by `type` so a frame reads like `{"type":"ping","id":7}`.

use serde::{Deserialize, Serialize};

/// Bumped whenever a change would confuse an older client; sent in [`ServerMsg::Hello`].
pub const PROTOCOL_VERSION: u32 = 1;

/// Chosen by the client for each request; every reply to that request carries it back
/// so the client can match answers to questions even when events interleave.
pub type RequestId = u64;

/// Everything a browser may say to the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMsg {
    /// Liveness and latency probe; answered by [`ServerMsg::Pong`] with the same id.
    Ping { id: RequestId },
}

/// Everything the server may say to a browser.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMsg {
    /// First frame on every connection, so the client knows what it is talking to
    /// before it sends anything.
    Hello {
        protocol: u32,
        /// Server clock in Unix milliseconds, for showing times relative to the server.
        server_time: i64,
    },
    /// Answer to [`ClientMsg::Ping`].
    Pong { id: RequestId },
    /// A request could not be carried out; nothing changed on the server.
    Error {
        /// The request this answers, when the frame was readable enough to have one.
        id: Option<RequestId>,
        code: ErrorCode,
        /// A sentence for people; clients branch on `code`, not on this.
        message: String,
    },
}

/// Machine-readable reason carried by [`ServerMsg::Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame was not valid JSON, named an unknown type, or missed a field.
    BadRequest,
    /// The server failed; the request may be retried.
    Internal,
}

impl ClientMsg {
    /// Decodes one text frame. On failure the error keeps whatever request id could be
    /// read from the frame, so the client can still match the error to its request.
    pub fn decode(frame: &str) -> Result<Self, DecodeError> {
        let value: serde_json::Value = serde_json::from_str(frame).map_err(|err| DecodeError {
            id: None,
            reason: format!("not valid JSON: {err}"),
        })?;
        let id = value.get("id").and_then(serde_json::Value::as_u64);
        serde_json::from_value(value).map_err(|err| DecodeError {
            id,
            reason: err.to_string(),
        })
    }
}

impl ServerMsg {
    /// Encodes a frame. Serialising these types cannot fail (no maps with non-string
    /// keys, no foreign `Serialize` impls), so this returns the text directly.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("server messages always serialise")
    }
}

/// Why a client frame was refused, in words fit to send back to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct DecodeError {
    pub id: Option<RequestId>,
    pub reason: String,
}

impl DecodeError {
    /// The error frame the server answers an undecodable frame with.
    pub fn into_reply(self) -> ServerMsg {
        ServerMsg::Error {
            id: self.id,
            code: ErrorCode::BadRequest,
            message: self.reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_has_a_stable_wire_form() {
        let ping = ClientMsg::Ping { id: 7 };
        let text = serde_json::to_string(&ping).unwrap();
        assert_eq!(text, r#"{"type":"ping","id":7}"#);
        assert_eq!(ClientMsg::decode(&text).unwrap(), ping);
    }

    #[test]
    fn server_messages_round_trip() {
        let samples = [
            ServerMsg::Hello { protocol: PROTOCOL_VERSION, server_time: 1_700_000_000_000 },
            ServerMsg::Pong { id: 3 },
            ServerMsg::Error { id: Some(4), code: ErrorCode::BadRequest, message: "nope".into() },
        ];
        for msg in samples {
            let back: ServerMsg = serde_json::from_str(&msg.encode()).unwrap();
            assert_eq!(back, msg);
        }
    }

    #[test]
    fn malformed_json_is_named_and_has_no_id() {
        let err = ClientMsg::decode("{not json").unwrap_err();
        assert_eq!(err.id, None);
        assert!(err.reason.starts_with("not valid JSON"), "{}", err.reason);
    }

    #[test]
    fn unknown_type_keeps_the_request_id() {
        let err = ClientMsg::decode(r#"{"type":"teleport","id":9}"#).unwrap_err();
        assert_eq!(err.id, Some(9));
        assert!(err.reason.contains("unknown variant `teleport`"), "{}", err.reason);
    }

    #[test]
    fn missing_field_is_named() {
        let err = ClientMsg::decode(r#"{"type":"ping"}"#).unwrap_err();
        assert!(err.reason.contains("missing field `id`"), "{}", err.reason);
    }
}
