//! Arbitrary text for property tests of everything that reads what people type, on
//! both sides: any Unicode scalar from every plane, mixed with the characters that
//! break code which counts bytes (accents, emoji and their modifier and joiner
//! sequences, combining marks, right-to-left and invisible marks, NUL) and with the
//! fragments the parsers look for (`@names`, web addresses, brackets).
//!
//! Compiled for the crate's own tests and, with the `test-support` feature, for the
//! server's.

use proptest::prelude::*;

/// Characters and fragments that are easy to get wrong.
const TRICKY: &[&str] = &[
    "\0", "\t", "\n", "\r\n", " ", "\u{a0}", "@", "@@", "h", "H", ".", "-", "_", ":", "/", "\\", "(", ")", "[", "]", "<", ">",
    "\"", "'", "Ó", "ç", "ã", "ação", "Ótimo", "¡", "«", "»", "ß", "İ", "\u{301}", "e\u{301}", "\u{308}", "\u{20dd}",
    "\u{200b}", "\u{200c}", "\u{200d}", "\u{200e}", "\u{200f}", "\u{202a}", "\u{202e}", "\u{2066}", "\u{2069}", "\u{2028}",
    "\u{feff}", "\u{fe0f}", "\u{fffd}", "\u{e000}", "\u{10ffff}", "😀", "👍🏽", "👨\u{200d}👩\u{200d}👧", "🇧🇷", "❤\u{fe0f}",
    "𝕏", "中文", "العربية", "עברית", "@alice", "@Bob_2.", "@ação", "http://", "https://", "HTTPS://", "https://example.com",
    "https://ação.example/ç", "bob@example.com", "%", "%2F", "//",
];

/// One piece of arbitrary text: a tricky fragment, or any character at all.
fn piece() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(TRICKY).prop_map(str::to_string),
        2 => any::<char>().prop_map(String::from),
        1 => "[a-zA-Z0-9_.-]{1,8}",
    ]
}

/// Arbitrary text, up to a few dozen pieces long.
pub fn any_text() -> impl Strategy<Value = String> {
    prop::collection::vec(piece(), 0..40).prop_map(|pieces| pieces.concat())
}
