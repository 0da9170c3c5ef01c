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

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
}

/// 3–32 characters of `A-Z a-z 0-9 _ . -`.
pub fn check_username(username: &str) -> Result<(), String> {
    let len = username.chars().count();
    if !(USERNAME_MIN..=USERNAME_MAX).contains(&len) {
        return Err(format!("Username must be {USERNAME_MIN} to {USERNAME_MAX} characters long."));
    }
    if !username.chars().all(is_name_char) {
        return Err("Username may only use letters, digits, '_', '.' and '-'.".into());
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
    Ok(())
}

/// A message must have something besides whitespace and fit the configured limit
/// (counted in characters, as people count them, not bytes).
pub fn check_message_text(text: &str, max_chars: usize) -> Result<(), String> {
    if text.trim().is_empty() {
        return Err("Message is empty.".into());
    }
    if text.contains('\0') {
        return Err("Message may not contain NUL characters.".into());
    }
    let len = text.chars().count();
    if len > max_chars {
        return Err(format!("Message is {len} characters; the limit is {max_chars}."));
    }
    Ok(())
}

/// Where to go after logging in: only paths on this site, never `//evil.example` or a
/// full URL, so the login page cannot be used to bounce people to another site.
pub fn safe_return_path(next: Option<&str>) -> String {
    match next {
        Some(path) if path.starts_with('/') && !path.starts_with("//") && !path.contains('\\') => path.to_string(),
        _ => "/".to_string(),
    }
}

/// Splits text into plain runs and `@name` mentions, in order, so the UI can highlight
/// mentions while still inserting every part as text. A mention is `@` at the start or
/// after a character that cannot be in a name, followed by 3–32 name characters;
/// trailing `.` or `-` (end of a sentence) are not part of it.
pub fn split_mentions(text: &str) -> Vec<(bool, &str)> {
    let mut parts = Vec::new();
    let mut plain_start = 0;
    let mut chars = text.char_indices().peekable();
    let mut previous: Option<char> = None;
    while let Some((at, c)) = chars.next() {
        let starts_mention = c == '@' && !previous.is_some_and(is_name_char);
        previous = Some(c);
        if !starts_mention {
            continue;
        }
        let name_start = at + 1;
        let mut name_end = name_start;
        while let Some(&(i, next)) = chars.peek() {
            if !is_name_char(next) {
                break;
            }
            name_end = i + next.len_utf8();
            previous = Some(next);
            chars.next();
        }
        let name = text[name_start..name_end].trim_end_matches(['.', '-']);
        if (USERNAME_MIN..=USERNAME_MAX).contains(&name.len()) {
            if plain_start < at {
                parts.push((false, &text[plain_start..at]));
            }
            let end = name_start + name.len();
            parts.push((true, &text[at..end]));
            plain_start = end;
        }
    }
    if plain_start < text.len() {
        parts.push((false, &text[plain_start..]));
    }
    parts
}

/// Most distinct users one message can mention. A message naming hundreds of people
/// would cost a database write for each; no real message needs more than a handful.
pub const MAX_MENTIONS_PER_MESSAGE: usize = 20;

/// The usernames `@mentioned` in a text (without the `@`), each once, the first
/// [`MAX_MENTIONS_PER_MESSAGE`] of them. Server and client both use it, so a mention
/// is highlighted exactly when it is counted.
pub fn mentioned_usernames(text: &str) -> Vec<&str> {
    let mut names: Vec<&str> = Vec::new();
    for (is_mention, part) in split_mentions(text) {
        let name = &part[1..];
        if is_mention && !names.iter().any(|n| n.eq_ignore_ascii_case(name)) {
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
    initials.to_uppercase()
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
    }

    #[test]
    fn message_text() {
        assert!(check_message_text("", 10).is_err());
        assert!(check_message_text(" \n\t ", 10).is_err());
        assert!(check_message_text("hi", 10).is_ok());
        assert!(check_message_text("ééééé", 5).is_ok(), "limit counts characters, not bytes");
        assert!(check_message_text("ééééé!", 5).is_err());
        assert!(check_message_text("a\0b", 10).is_err());
    }

    #[test]
    fn return_paths_stay_on_site() {
        assert_eq!(safe_return_path(Some("/r/general")), "/r/general");
        assert_eq!(safe_return_path(Some("//evil.example")), "/");
        assert_eq!(safe_return_path(Some("https://evil.example")), "/");
        assert_eq!(safe_return_path(Some("/\\evil.example")), "/");
        assert_eq!(safe_return_path(None), "/");
    }

    #[test]
    fn mentions_are_found_at_word_starts() {
        assert_eq!(
            split_mentions("hi @alice, see @Bob_2."),
            vec![(false, "hi "), (true, "@alice"), (false, ", see "), (true, "@Bob_2"), (false, ".")]
        );
        assert_eq!(mentioned_usernames("mail me at bob@example.com"), Vec::<&str>::new(), "not after a name character");
        assert_eq!(mentioned_usernames("@al is too short, @alice @ALICE twice"), vec!["alice"]);
        assert!(mentions("thanks @Alice!", "alice"));
        assert!(!mentions("thanks @alice2", "alice"));
        assert_eq!(split_mentions("no mentions"), vec![(false, "no mentions")]);
        assert_eq!(split_mentions("ünï @zoë"), vec![(false, "ünï @zoë")], "non-ASCII is not a name character");
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
    fn avatar_initials() {
        assert_eq!(initials("Alice Liddell"), "AL");
        assert_eq!(initials("bob"), "BO");
        assert_eq!(initials("mad_hatter"), "MH");
        assert_eq!(initials(""), "?");
    }
}
