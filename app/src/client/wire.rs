//! Frames between the page and the server, encoded by the browser's own JSON.
//!
//! The server reads and writes frames with serde_json. In the page, `JSON.parse` and
//! `JSON.stringify` do the text and serde-wasm-bindgen only maps the values to and from
//! the protocol's types, which keeps serde_json's parser, its number formatting and
//! its error messages out of the WASM (see docs/benchmarks.md, Page weight).

use serde::Serialize;

use crate::protocol::{ClientMsg, ServerMsg};

/// The frame the server expects for `msg`: what serde_json would write, an absent
/// option as `null` included (the default would drop the field).
pub fn encode(msg: &ClientMsg) -> String {
    let serializer = serde_wasm_bindgen::Serializer::new().serialize_missing_as_null(true);
    let value = msg.serialize(&serializer).expect("client messages always map to JavaScript values");
    // `stringify` fails only on cycles and BigInts, which these values never hold.
    js_sys::JSON::stringify(&value).map(String::from).unwrap_or_default()
}

/// The message in a frame from the server, or `None` when this page cannot read it
/// (a server of another version).
pub fn decode(frame: &str) -> Option<ServerMsg> {
    let value = js_sys::JSON::parse(frame).ok()?;
    serde_wasm_bindgen::from_value(value).ok()
}
