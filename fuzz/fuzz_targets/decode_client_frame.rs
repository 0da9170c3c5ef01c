//! Whatever bytes arrive in a text frame, decoding must answer with a message or an
//! error, never panic; and an error must keep any request id the frame had.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(frame) = std::str::from_utf8(data) else { return };
    match app::protocol::ClientMsg::decode(frame) {
        Ok(msg) => {
            // What decodes must encode and decode to the same message.
            let again = serde_json::to_string(&msg).expect("client messages serialise");
            assert_eq!(app::protocol::ClientMsg::decode(&again).expect("round trip"), msg);
        }
        Err(err) => {
            let _ = err.into_reply().encode();
        }
    }
});
