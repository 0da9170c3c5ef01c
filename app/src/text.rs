//! Reading what people write: `@mentions`, web links, avatar initials, and letter case
//! for sorting names.
//!
//! Both sides run this on any text a person can type (Portuguese accents, emoji,
//! right-to-left marks, NUL…), the server inside its post transaction and the browser
//! in the WASM, where a panic would end the whole app. So nothing here slices a `str`
//! by byte arithmetic: positions come from `char_indices` or from `str` methods that
//! only split on character boundaries, and the property tests at the end feed every
//! function arbitrary Unicode.

use crate::validation::{USERNAME_MAX, USERNAME_MIN};

/// One run of a message's text. Concatenating a message's segments gives back the
/// message exactly, so the UI can insert every part as text and lose nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Segment<'a> {
    Plain(&'a str),
    /// `@name`, with its `@`.
    Mention(&'a str),
    /// An `http://` or `https://` address, shown as a link.
    Link(&'a str),
}

impl<'a> Segment<'a> {
    /// The text this segment covers.
    pub fn as_str(&self) -> &'a str {
        match self {
            Segment::Plain(text) | Segment::Mention(text) | Segment::Link(text) => text,
        }
    }

    /// For a mention, the username it names (without the `@`).
    pub fn mentioned(&self) -> Option<&'a str> {
        match self {
            Segment::Mention(text) => text.strip_prefix('@'),
            _ => None,
        }
    }
}

/// Characters a username can have; also what may not come right before a mention's
/// `@` (so `bob@example.com` is not a mention of `example.com`).
pub fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
}

/// Splits text into plain runs, mentions and links, in order.
///
/// A mention is `@` at the start or after a character that cannot be in a name,
/// followed by 3–32 name characters; a trailing `.` or `-` (the end of a sentence) is
/// not part of it. A link starts with `http://` or `https://` (any letter case) at the
/// start or after a character that is not a letter or digit, and runs to whitespace
/// or a quote or angle bracket; punctuation that ends a sentence or closes an
/// unopened bracket is left out. An `@` inside a link is part of the link.
pub fn segments(text: &str) -> Vec<Segment<'_>> {
    let mut found = Vec::new();
    let mut plain_start = 0;
    let mut previous: Option<char> = None;
    let mut chars = text.char_indices();
    while let Some((at, c)) = chars.next() {
        let rest = &text[at..];
        let special = match c {
            '@' if !previous.is_some_and(is_name_char) => mention_at(rest).map(Segment::Mention),
            'h' | 'H' if !previous.is_some_and(char::is_alphanumeric) => link_at(rest).map(Segment::Link),
            _ => None,
        };
        let Some(segment) = special else {
            previous = Some(c);
            continue;
        };
        if plain_start < at {
            found.push(Segment::Plain(&text[plain_start..at]));
        }
        let covered = segment.as_str();
        found.push(segment);
        plain_start = at + covered.len();
        previous = covered.chars().next_back();
        // Skip what the segment covered; `plain_start` is a boundary inside `text`.
        while chars.offset() < plain_start {
            chars.next();
        }
    }
    if plain_start < text.len() {
        found.push(Segment::Plain(&text[plain_start..]));
    }
    found
}

/// The mention starting at the `@` that begins `rest`, if it is one.
fn mention_at(rest: &str) -> Option<&str> {
    let after_at = rest.strip_prefix('@')?;
    let name_end = after_at.find(|c: char| !is_name_char(c)).unwrap_or(after_at.len());
    let name = after_at.split_at(name_end).0.trim_end_matches(['.', '-']);
    let length = name.chars().count();
    (USERNAME_MIN..=USERNAME_MAX).contains(&length).then(|| rest.split_at(1 + name.len()).0)
}

/// The link that begins `rest`, if it starts with a web address.
fn link_at(rest: &str) -> Option<&str> {
    let scheme_len = ["https://", "http://"]
        .into_iter()
        .find(|scheme| rest.get(..scheme.len()).is_some_and(|start| start.eq_ignore_ascii_case(scheme)))?
        .len();
    let run_end = rest.find(ends_a_link).unwrap_or(rest.len());
    let link = trim_link_end(rest.split_at(run_end).0);
    // Something must follow the scheme: "https://" alone is not an address.
    let host = link.split_at(scheme_len.min(link.len())).1;
    (link.len() > scheme_len && host.starts_with(|c: char| c.is_alphanumeric())).then_some(link)
}

/// Where a link stops: whitespace, controls, quotes and angle brackets (which commonly
/// wrap an address), and the invisible marks that change text direction (inside a
/// link they could make its address read differently from what it opens).
fn ends_a_link(c: char) -> bool {
    c.is_whitespace()
        || c.is_control()
        || matches!(c, '<' | '>' | '"' | '\u{200e}' | '\u{200f}' | '\u{61c}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Leaves out what ends a sentence after an address ("see https://example.com.") and
/// closing brackets that were opened before it ("(see https://example.com)"), keeping
/// balanced ones ("https://en.wikipedia.org/wiki/Rust_(language)"). One pass from the
/// end, with the brackets counted once, so no input makes it slow.
fn trim_link_end(link: &str) -> &str {
    const PAIRS: [(char, char); 3] = [('(', ')'), ('[', ']'), ('{', '}')];
    let mut unmatched = [0isize; 3];
    for c in link.chars() {
        for (n, (open, close)) in PAIRS.iter().enumerate() {
            if c == *close {
                unmatched[n] += 1;
            } else if c == *open {
                unmatched[n] -= 1;
            }
        }
    }
    let mut end = link.len();
    for (at, c) in link.char_indices().rev() {
        let dropped = match PAIRS.iter().position(|(_, close)| *close == c) {
            Some(n) if unmatched[n] > 0 => {
                unmatched[n] -= 1;
                true
            }
            Some(_) => false,
            None => matches!(c, '.' | ',' | ':' | ';' | '!' | '?' | '\'' | '*' | '_' | '~'),
        };
        if !dropped {
            break;
        }
        end = at;
    }
    link.split_at(end).0
}

/// Most distinct users one message can mention. A message naming hundreds of people
/// would cost a database write for each; no real message needs more than a handful.
pub const MAX_MENTIONS_PER_MESSAGE: usize = 20;

/// The usernames `@mentioned` in a text (without the `@`), each once, the first
/// [`MAX_MENTIONS_PER_MESSAGE`] of them. Server and client both use it, so a mention
/// is highlighted exactly when it is counted.
pub fn mentioned_usernames(text: &str) -> Vec<&str> {
    let mut names: Vec<&str> = Vec::new();
    for name in segments(text).iter().filter_map(Segment::mentioned) {
        if !names.iter().any(|n| n.eq_ignore_ascii_case(name)) {
            names.push(name);
            if names.len() == MAX_MENTIONS_PER_MESSAGE {
                break;
            }
        }
    }
    names
}

/// Whether `text` mentions `username` (letter case ignored).
pub fn mentions(text: &str, username: &str) -> bool {
    mentioned_usernames(text).iter().any(|name| name.eq_ignore_ascii_case(username))
}

/// Up to two initials for an avatar: first letters of the first two words, or the
/// first two letters of a single word.
pub fn initials(name: &str) -> String {
    let mut words = name.split(|c: char| c.is_whitespace() || matches!(c, '_' | '.' | '-')).filter(|w| !w.is_empty());
    let first = words.next().unwrap_or("?");
    let initials: String = match words.next() {
        Some(second) => first.chars().take(1).chain(second.chars().take(1)).collect(),
        None => first.chars().take(2).collect(),
    };
    uppercase(&initials)
}

/// `text` in lower case by Unicode's default case mapping, for sorting names without
/// regard to case. Rust's `str::to_lowercase` and the browser's `toLowerCase` both do
/// exactly this (one character to several, final sigma and all), so in the browser the
/// browser's own tables do it: Rust's case tables would add about 10 KB to the
/// compressed WASM. The two can differ only on letters newer than one side's Unicode
/// version.
pub fn lowercase(text: &str) -> String {
    #[cfg(feature = "hydrate")]
    return js_sys::JsString::from(text).to_lower_case().into();
    #[cfg(not(feature = "hydrate"))]
    text.to_lowercase()
}

/// `text` in upper case, as [`lowercase`] does the other way (for initials).
pub fn uppercase(text: &str) -> String {
    #[cfg(feature = "hydrate")]
    return js_sys::JsString::from(text).to_upper_case().into();
    #[cfg(not(feature = "hydrate"))]
    text.to_uppercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<(char, &str)> {
        segments(text)
            .into_iter()
            .map(|segment| match segment {
                Segment::Plain(t) => ('p', t),
                Segment::Mention(t) => ('m', t),
                Segment::Link(t) => ('l', t),
            })
            .collect()
    }

    #[test]
    fn mentions_are_found_at_word_starts() {
        assert_eq!(kinds("hi @alice, see @Bob_2."), [('p', "hi "), ('m', "@alice"), ('p', ", see "), ('m', "@Bob_2"), ('p', ".")]);
        assert_eq!(mentioned_usernames("mail me at bob@example.com"), Vec::<&str>::new(), "not after a name character");
        assert_eq!(mentioned_usernames("@al is too short, @alice @ALICE twice"), vec!["alice"]);
        assert!(mentions("thanks @Alice!", "alice"));
        assert!(!mentions("thanks @alice2", "alice"));
        assert_eq!(kinds("no mentions"), [('p', "no mentions")]);
        assert_eq!(kinds("ünï @zoë"), [('p', "ünï @zoë")], "non-ASCII is not a name character");
    }

    #[test]
    fn text_that_starts_with_a_wide_character_is_read_safely() {
        for text in ["Ótimo, tudo bem?", "😀 hi", "¡Hola!", "« citação »", "\u{200f}@alice", "ação @bob!"] {
            let rebuilt: String = segments(text).iter().map(Segment::as_str).collect();
            assert_eq!(rebuilt, text);
            let _ = mentioned_usernames(text);
        }
        assert_eq!(mentioned_usernames("\u{200f}@alice"), ["alice"], "a right-to-left mark is not a name character");
        assert_eq!(mentioned_usernames("ação @bob!"), ["bob"]);
        assert_eq!(mentioned_usernames("Ótimo @carol"), ["carol"]);
    }

    #[test]
    fn mentions_per_message_are_capped() {
        let crowd: Vec<String> = (0..30).map(|n| format!("@user{n:02}")).collect();
        let text = crowd.join(" ");
        let named = mentioned_usernames(&text);
        assert_eq!(named.len(), MAX_MENTIONS_PER_MESSAGE);
        assert_eq!(named.last(), Some(&"user19"));
        assert!(mentions(&text, "user19"));
        assert!(!mentions(&text, "user20"), "past the cap a name is neither counted nor highlighted");
    }

    #[test]
    fn web_addresses_become_links_without_their_trailing_punctuation() {
        assert_eq!(kinds("see https://example.com."), [('p', "see "), ('l', "https://example.com"), ('p', ".")]);
        assert_eq!(kinds("(https://example.com/a_(b))"), [('p', "("), ('l', "https://example.com/a_(b)"), ('p', ")")]);
        assert_eq!(kinds("HTTP://EXAMPLE.COM/x?y=1&z=2"), [('l', "HTTP://EXAMPLE.COM/x?y=1&z=2")]);
        assert_eq!(kinds("https://site.example/@alice"), [('l', "https://site.example/@alice")], "an @ in a link is no mention");
        assert_eq!(kinds("<https://example.com>"), [('p', "<"), ('l', "https://example.com"), ('p', ">")]);
        assert_eq!(kinds("https://ação.example/ç ok"), [('l', "https://ação.example/ç"), ('p', " ok")]);
        assert_eq!(kinds("https:// nothing"), [('p', "https:// nothing")]);
        assert_eq!(kinds("xhttps://example.com"), [('p', "xhttps://example.com")], "not inside a word");
        assert_eq!(kinds("javascript:alert(1) ftp://x.example"), [('p', "javascript:alert(1) ftp://x.example")]);
        assert_eq!(kinds("@alice: https://a.example"), [('m', "@alice"), ('p', ": "), ('l', "https://a.example")]);
        assert_eq!(kinds("https://a.example/x)).)"), [('l', "https://a.example/x"), ('p', ")).)")]);
        assert_eq!(kinds("https://a.example/(x))"), [('l', "https://a.example/(x)"), ('p', ")")]);
        assert_eq!(
            kinds("https://a.example/\u{202e}gpj.exe"),
            [('l', "https://a.example/"), ('p', "\u{202e}gpj.exe")],
            "a direction mark ends a link"
        );
    }

    /// Each position is looked at a bounded number of times: a message built to make
    /// link scanning slow (many failed starts, thousands of closing brackets) is read
    /// in moments, not the seconds a rescan per bracket would take.
    #[test]
    fn hostile_link_text_is_read_quickly() {
        let hostile = format!("{}{}", "https://-".repeat(222), ")".repeat(2_000));
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let parts = segments(&hostile).len();
            let _ = done.send(parts);
        });
        assert!(finished.recv_timeout(std::time::Duration::from_secs(10)).is_ok(), "segmenting took over 10 s");
    }

    #[test]
    fn avatar_initials() {
        assert_eq!(initials("Alice Liddell"), "AL");
        assert_eq!(initials("bob"), "BO");
        assert_eq!(initials("mad_hatter"), "MH");
        assert_eq!(initials(""), "?");
        assert_eq!(initials("Ótimo ação"), "ÓA");
        assert_eq!(initials("😀 party"), "😀P");
    }

    mod any_text {
        use proptest::prelude::*;

        use super::super::*;
        use crate::test_text::any_text;

        proptest! {
            #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

            #[test]
            fn segments_join_back_to_the_text(text in any_text()) {
                let parts = segments(&text);
                let rebuilt: String = parts.iter().map(Segment::as_str).collect();
                prop_assert_eq!(&rebuilt, &text);
                prop_assert!(parts.iter().all(|part| !part.as_str().is_empty()));
                for part in &parts {
                    match part {
                        Segment::Mention(mention) => {
                            let name = part.mentioned().unwrap();
                            prop_assert!(mention.starts_with('@'));
                            prop_assert!(name.chars().all(is_name_char));
                            prop_assert!((USERNAME_MIN..=USERNAME_MAX).contains(&name.chars().count()));
                        }
                        Segment::Link(link) => {
                            let lower = link.to_ascii_lowercase();
                            prop_assert!(lower.starts_with("http://") || lower.starts_with("https://"));
                            prop_assert!(!link.chars().any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | '"')));
                        }
                        Segment::Plain(_) => {}
                    }
                }
            }

            #[test]
            fn mentions_and_initials_never_panic(text in any_text(), name in any_text()) {
                let named = mentioned_usernames(&text);
                prop_assert!(named.len() <= MAX_MENTIONS_PER_MESSAGE);
                for username in &named {
                    prop_assert!(mentions(&text, username));
                }
                let _ = mentions(&text, &name);
                let initials = initials(&name);
                prop_assert!(!initials.is_empty());
            }

            #[test]
            fn lowercase_ignores_case_and_is_stable(text in any_text()) {
                let lower = lowercase(&text);
                prop_assert_eq!(lowercase(&lower), lower.clone());
                prop_assert_eq!(lowercase(&text.to_ascii_uppercase()), lowercase(&text.to_ascii_lowercase()));
                prop_assert_eq!(lower.is_empty(), text.is_empty());
                prop_assert_eq!(uppercase(&text).is_empty(), text.is_empty());
            }
        }
    }
}
