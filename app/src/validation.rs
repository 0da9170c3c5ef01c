//! Rules for what people type, shared by the forms (instant feedback) and the server
//! (the authority). Each check returns the sentence to show when input breaks a rule.

/// Usernames: what appears in `@mentions` and URLs, so a small safe alphabet.
pub const USERNAME_MIN: usize = 3;
pub const USERNAME_MAX: usize = 32;
/// Display names: free text, but bounded so a name cannot swamp the layout.
pub const DISPLAY_NAME_MAX: usize = 64;
pub const PASSWORD_MIN: usize = 8;
/// Far above any real passphrase; stops a megabyte "password" from costing argon2 time.
pub const PASSWORD_MAX: usize = 1024;
pub const ROOM_NAME_MIN: usize = 2;
pub const ROOM_NAME_MAX: usize = 32;

use crate::text::is_name_char;

/// 3–32 characters of `A-Z a-z 0-9 _ . -`.
pub fn check_username(username: &str) -> Result<(), String> {
    let len = username.chars().count();
    if !(USERNAME_MIN..=USERNAME_MAX).contains(&len) {
        return Err(format!("Username must be {USERNAME_MIN} to {USERNAME_MAX} characters long."));
    }
    if !username.chars().all(is_name_char) {
        return Err("Username may only use letters, digits, '_', '.' and '-'.".into());
    }
    if only_dots(username) {
        return Err("Username needs a letter, a digit, '_' or '-'.".into());
    }
    Ok(())
}

/// The display name with surrounding spaces removed; empty means "use the username".
pub fn normalize_display_name(display_name: &str, username: &str) -> Result<String, String> {
    let trimmed = display_name.trim();
    if trimmed.chars().count() > DISPLAY_NAME_MAX {
        return Err(format!("Display name must be at most {DISPLAY_NAME_MAX} characters."));
    }
    if trimmed.chars().any(char::is_control) {
        return Err("Display name may not contain control characters.".into());
    }
    Ok(if trimmed.is_empty() { username.to_string() } else { trimmed.to_string() })
}

pub fn check_password(password: &str) -> Result<(), String> {
    let len = password.chars().count();
    if len < PASSWORD_MIN {
        return Err(format!("Password must be at least {PASSWORD_MIN} characters."));
    }
    if len > PASSWORD_MAX {
        return Err(format!("Password must be at most {PASSWORD_MAX} characters."));
    }
    Ok(())
}

/// 2–32 characters of `a-z A-Z 0-9 _ . -`, so a room name is also a clean URL segment.
pub fn check_room_name(name: &str) -> Result<(), String> {
    let len = name.chars().count();
    if !(ROOM_NAME_MIN..=ROOM_NAME_MAX).contains(&len) {
        return Err(format!("Room name must be {ROOM_NAME_MIN} to {ROOM_NAME_MAX} characters long."));
    }
    if !name.chars().all(is_name_char) {
        return Err("Room name may only use letters, digits, '_', '.' and '-'.".into());
    }
    if only_dots(name) {
        return Err("Room name needs a letter, a digit, '_' or '-'.".into());
    }
    Ok(())
}

/// Names are addresses (`/r/<room>`, `/dm/<username>`), and an address made only of
/// dots is read as a step up (`/r/..` is `/`).
fn only_dots(name: &str) -> bool {
    name.chars().all(|c| c == '.')
}

/// A message must have something besides whitespace and fit the configured limit
/// (counted in characters, as people count them, not bytes). Anything else is a valid
/// message, control characters included: it is stored and shown exactly as sent.
pub fn check_message_text(text: &str, max_chars: usize) -> Result<(), String> {
    if text.trim().is_empty() {
        return Err("Message is empty.".into());
    }
    let len = text.chars().count();
    if len > max_chars {
        return Err(format!("Message is {len} characters; the limit is {max_chars}."));
    }
    Ok(())
}

/// Where to go after logging in: only a path on this site, so the login page cannot be
/// used to bounce people to another site. Browsers read `//host`, `/\\host` and even
/// `/<tab>/host` (they drop tabs and newlines from addresses) as another site, so only
/// visible ASCII is accepted, starting with exactly one `/` and with no `\\` anywhere;
/// anything else becomes `/`. What passes is also always a valid `Location` header.
pub fn safe_return_path(next: Option<&str>) -> String {
    match next {
        Some(path) if is_local_path(path) => path.to_string(),
        _ => "/".to_string(),
    }
}

fn is_local_path(path: &str) -> bool {
    let mut chars = path.chars();
    chars.next() == Some('/')
        && chars.next() != Some('/')
        && path.chars().all(|c| c.is_ascii_graphic() && c != '\\')
}

/// Percent-encodes a query value (the same on server and browser, so hydration matches).
pub fn urlencode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        assert!(check_username("al").is_err());
        assert!(check_username("alice").is_ok());
        assert!(check_username("a.b-c_9").is_ok());
        assert!(check_username(&"x".repeat(32)).is_ok());
        assert!(check_username(&"x".repeat(33)).is_err());
        assert!(check_username("al ice").is_err());
        assert!(check_username("alïce").is_err());
        assert!(check_username("bob'; DROP TABLE users;--").is_err());
    }

    #[test]
    fn display_names_fall_back_to_the_username() {
        assert_eq!(normalize_display_name("  ", "alice").unwrap(), "alice");
        assert_eq!(normalize_display_name(" Alice Liddell ", "alice").unwrap(), "Alice Liddell");
        assert!(normalize_display_name("a\u{0007}b", "alice").is_err());
        assert!(normalize_display_name(&"n".repeat(65), "alice").is_err());
    }

    #[test]
    fn passwords() {
        assert!(check_password("1234567").is_err());
        assert!(check_password("12345678").is_ok());
        assert!(check_password(&"p".repeat(1025)).is_err());
    }

    #[test]
    fn room_names() {
        assert!(check_room_name("g").is_err());
        assert!(check_room_name("general").is_ok());
        assert!(check_room_name("rust-lang.dev_2").is_ok());
        assert!(check_room_name("two words").is_err());
        assert!(check_room_name(&"r".repeat(33)).is_err());
        assert!(check_room_name("..").is_err(), "an address that would read as a step up");
        assert!(check_room_name("...").is_err());
        assert!(check_room_name("..a").is_ok());
        assert!(check_username("...").is_err());
        assert!(check_username("a.b").is_ok());
    }

    #[test]
    fn message_text() {
        assert!(check_message_text("", 10).is_err());
        assert!(check_message_text(" \n\t ", 10).is_err());
        assert!(check_message_text("hi", 10).is_ok());
        assert!(check_message_text("ééééé", 5).is_ok(), "limit counts characters, not bytes");
        assert!(check_message_text("ééééé!", 5).is_err());
        assert!(check_message_text(&"😀".repeat(4000), 4000).is_ok(), "an emoji is one character");
        assert!(check_message_text(&"😀".repeat(4001), 4000).is_err());
        for any_text in ["a\0b", "\u{202e}abc", "Ótimo, tudo bem?", "\u{200b}"] {
            assert!(check_message_text(any_text, 20).is_ok(), "{any_text:?}");
        }
    }

    #[test]
    fn return_paths_stay_on_site() {
        assert_eq!(safe_return_path(Some("/r/general")), "/r/general");
        assert_eq!(safe_return_path(Some("//evil.example")), "/");
        assert_eq!(safe_return_path(Some("https://evil.example")), "/");
        assert_eq!(safe_return_path(Some("/\\evil.example")), "/");
        assert_eq!(safe_return_path(None), "/");
        assert_eq!(safe_return_path(Some("/r/general?x=%2F%2Fy")), "/r/general?x=%2F%2Fy", "encoded slashes are path text");
        assert_eq!(safe_return_path(Some("/")), "/");
        for hostile in ["/\t/evil.example", "/\n/evil.example", "/\r\n/evil", "\t//evil.example", "/\\/evil", "/a\\b", "/ /evil",
            "///evil.example", "evil.example", "", "%2F%2Fevil.example", "/r/ação", "/\u{0}x", "/\u{2028}/evil"]
        {
            assert_eq!(safe_return_path(Some(hostile)), "/", "{hostile:?}");
        }
    }

    mod any_text {
        use proptest::prelude::*;

        use super::super::*;
        use crate::test_text::any_text;

        proptest! {
            #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

            #[test]
            fn checks_never_panic_and_agree_with_their_rules(text in any_text(), other in any_text()) {
                // Names are addresses, where one made only of dots is a step up.
                let not_only_dots = text.chars().any(|c| c != '.');
                prop_assert_eq!(check_username(&text).is_ok(),
                    (USERNAME_MIN..=USERNAME_MAX).contains(&text.chars().count()) && text.chars().all(is_name_char) && not_only_dots);
                prop_assert_eq!(check_room_name(&text).is_ok(),
                    (ROOM_NAME_MIN..=ROOM_NAME_MAX).contains(&text.chars().count()) && text.chars().all(is_name_char) && not_only_dots);
                let _ = check_password(&text);
                if let Ok(display) = normalize_display_name(&text, &other) {
                    prop_assert!(display == other || display == text.trim());
                }
                let limit = 1 + other.chars().count();
                prop_assert_eq!(check_message_text(&text, limit).is_ok(),
                    !text.trim().is_empty() && text.chars().count() <= limit);
            }

            #[test]
            fn return_paths_are_the_input_or_home_and_always_a_valid_location(text in any_text()) {
                let path = safe_return_path(Some(&text));
                prop_assert!(path == "/" || path == text);
                prop_assert!(path.starts_with('/') && !path.starts_with("//") && !path.contains('\\'));
                prop_assert!(http::HeaderValue::from_str(&path).is_ok());
                let prefixed = format!("/{text}");
                let path = safe_return_path(Some(&prefixed));
                prop_assert!(path == "/" || path == prefixed);
            }

            #[test]
            fn any_next_address_survives_the_round_trip(text in any_text()) {
                let encoded = urlencode(&text);
                prop_assert!(encoded.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.~%".contains(&b)));
                prop_assert_eq!(decode(&encoded), Some(text));
            }
        }

        /// Reverses `urlencode`, refusing anything it would not have written.
        fn decode(encoded: &str) -> Option<String> {
            let mut bytes = Vec::new();
            let mut rest = encoded.as_bytes();
            while let Some((&first, tail)) = rest.split_first() {
                if first == b'%' {
                    let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
                    bytes.push(u8::from_str_radix(hex, 16).ok()?);
                    rest = &tail[2..];
                } else {
                    bytes.push(first);
                    rest = tail;
                }
            }
            String::from_utf8(bytes).ok()
        }
    }
}
