//! What the message list shows, in order: a line for each day, each message (marked
//! when it continues its sender's run), and each run of join and leave notices
//! collapsed into one line ("ana, bruno and 12 others joined"), so a room that
//! thousands join does not fill with notices.

use crate::protocol::{ChatMessage, MessageKind};

/// Messages from one person this close together read as one run: their name and face
/// are shown once, at its start, rather than over every line (as chats do; on a phone
/// it is most of the height of a short message).
pub const RUN_GAP_MS: i64 = 5 * 60 * 1000;

/// One line of the message list.
#[derive(Debug, Clone, PartialEq)]
pub enum Row {
    /// The first message of a day follows; `day` counts days since 1970 locally, and
    /// `today` is the day it was laid out on ("Today" becomes "Yesterday" overnight).
    Day { day: i64, today: i64 },
    /// `follows`: it continues a run of its sender's messages ([`RUN_GAP_MS`]).
    Message { message: ChatMessage, follows: bool },
    /// Consecutive join and leave notices.
    Notices(Vec<ChatMessage>),
}

impl Row {
    /// A key that stays the same while the row means the same thing, for keyed lists.
    pub fn key(&self) -> (u8, i64, i64) {
        match self {
            Row::Day { day, today } => (0, *day, *today),
            // Laid out again when it starts or stops continuing a run (a message
            // fetched later can land between two others).
            Row::Message { message, follows } => (1, message.seq, i64::from(*follows)),
            Row::Notices(notices) => {
                let first = notices.first().map_or(0, |n| n.seq);
                let last = notices.last().map_or(0, |n| n.seq);
                (2, first, last)
            }
        }
    }
}

/// Lays out messages (in sequence order) as rows, with `day_of` giving each message's
/// local day, on the local day `today`.
pub fn rows<'a>(messages: impl IntoIterator<Item = &'a ChatMessage>, day_of: impl Fn(&ChatMessage) -> i64, today: i64) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut current_day = None;
    for message in messages {
        let day = day_of(message);
        if current_day != Some(day) {
            current_day = Some(day);
            rows.push(Row::Day { day, today });
        }
        let is_notice = message.kind != MessageKind::Text;
        match rows.last_mut() {
            Some(Row::Notices(run)) if is_notice => run.push(message.clone()),
            _ if is_notice => rows.push(Row::Notices(vec![message.clone()])),
            _ => {
                let follows = matches!(
                    rows.last(),
                    Some(Row::Message { message: previous, .. })
                        if previous.sender.id == message.sender.id && message.sent_at.saturating_sub(previous.sent_at).saturating_abs() < RUN_GAP_MS
                );
                rows.push(Row::Message { message: message.clone(), follows });
            }
        }
    }
    rows
}

/// Names shown before "and N others".
const NAMES_SHOWN: usize = 2;

/// The one line for a run of notices: who joined, then who left, each person once and
/// by what they did last (someone who left and came back is in the room).
pub fn notices_summary(notices: &[ChatMessage]) -> String {
    let mut named = std::collections::HashSet::new();
    let mut last_actions: Vec<&ChatMessage> = notices.iter().rev().filter(|n| named.insert(n.sender.id)).collect();
    last_actions.reverse();
    let parts: Vec<String> = [(MessageKind::Joined, "joined"), (MessageKind::Left, "left")]
        .into_iter()
        .filter_map(|(kind, verb)| {
            let names: Vec<&str> =
                last_actions.iter().filter(|n| n.kind == kind).map(|n| n.sender.display_name.as_str()).collect();
            (!names.is_empty()).then(|| format!("{} {verb}", people(&names)))
        })
        .collect();
    parts.join(" · ")
}

/// "ana", "ana and bruno", "ana, bruno and carla", "ana, bruno and 3 others".
fn people(names: &[&str]) -> String {
    match names {
        [] => String::new(),
        [one] => one.to_string(),
        [first, second] => format!("{first} and {second}"),
        [first, second, third] => format!("{first}, {second} and {third}"),
        _ => format!("{} and {} others", names[..NAMES_SHOWN].join(", "), names.len() - NAMES_SHOWN),
    }
}

#[cfg(test)]
mod tests {
    use proptest::strategy::Strategy;

    use super::*;
    use crate::protocol::UserRef;

    fn message(seq: i64, kind: MessageKind, who: &str, day: i64) -> ChatMessage {
        ChatMessage {
            id: seq,
            room_id: 1,
            seq,
            kind,
            sender: UserRef { id: who.bytes().map(i64::from).sum(), username: who.into(), display_name: who.into() },
            client_id: None,
            text: String::new(),
            sent_at: day * 86_400_000,
        }
    }

    fn day_of(message: &ChatMessage) -> i64 {
        message.sent_at / 86_400_000
    }

    #[test]
    fn runs_of_notices_collapse_and_days_are_marked() {
        use MessageKind::{Joined, Left, Text};
        let messages = [
            message(1, Joined, "ana", 0),
            message(2, Joined, "bruno", 0),
            message(3, Text, "ana", 0),
            message(4, Left, "bruno", 0),
            message(5, Joined, "carla", 1),
            message(6, Joined, "davi", 1),
        ];
        let laid_out = rows(&messages, day_of, 1);
        let keys: Vec<(u8, i64, i64)> = laid_out.iter().map(Row::key).collect();
        assert_eq!(keys, [(0, 0, 1), (2, 1, 2), (1, 3, 0), (2, 4, 4), (0, 1, 1), (2, 5, 6)]);
        let next_day: Vec<(u8, i64, i64)> = rows(&messages, day_of, 2).iter().map(Row::key).collect();
        assert_eq!(next_day[0], (0, 0, 2), "a day's line is laid out again when the day turns");
    }

    #[test]
    fn a_person_s_messages_close_together_make_one_run() {
        use MessageKind::{Joined, Text};
        let at = |seq: i64, who: &str, minutes: i64| ChatMessage { sent_at: minutes * 60_000, ..message(seq, Text, who, 0) };
        let messages = [
            at(1, "ana", 0),
            at(2, "ana", 4),
            at(3, "ana", 9),
            at(4, "bruno", 9),
            at(5, "ana", 10),
            ChatMessage { sent_at: 10 * 60_000, ..message(6, Joined, "carla", 0) },
            ChatMessage { sent_at: 10 * 60_000, ..message(7, Joined, "davi", 0) },
            at(8, "ana", 11),
            at(9, "ana", 11),
        ];
        let follows: Vec<(i64, bool)> = rows(&messages, |_| 0, 0)
            .iter()
            .filter_map(|row| match row {
                Row::Message { message, follows } => Some((message.seq, *follows)),
                _ => None,
            })
            .collect();
        assert_eq!(
            follows,
            [(1, false), (2, true), (3, false), (4, false), (5, false), (8, false), (9, true)],
            "four minutes apart is a run, five is not; another person or a notice between ends it"
        );
        let around_midnight = [ChatMessage { sent_at: 86_400_000 - 60_000, ..at(1, "ana", 0) }, ChatMessage { sent_at: 86_400_000 + 60_000, ..at(2, "ana", 0) }];
        let next_day = rows(&around_midnight, day_of, 1);
        assert!(next_day.iter().all(|row| !matches!(row, Row::Message { follows: true, .. })), "a new day starts a new run");
        // Two servers' clocks a little apart still make one run.
        let skewed = rows(&[at(1, "ana", 3), at(2, "ana", 2)], |_| 0, 0);
        assert!(matches!(skewed[2], Row::Message { follows: true, .. }));
        let far_back = rows(&[at(1, "ana", 10), at(2, "ana", 2)], |_| 0, 0);
        assert!(matches!(far_back[2], Row::Message { follows: false, .. }));
    }

    proptest::proptest! {
        #[test]
        fn any_names_make_a_summary(
            names in proptest::collection::vec(crate::test_text::any_text().prop_filter("a name", |n| !n.is_empty()), 1..8)
        ) {
            let notices: Vec<ChatMessage> = names
                .iter()
                .enumerate()
                .map(|(n, name)| ChatMessage {
                    sender: UserRef { id: n as i64, username: format!("u{n}"), display_name: name.clone() },
                    ..message(n as i64, if n % 3 == 2 { MessageKind::Left } else { MessageKind::Joined }, "x", 0)
                })
                .collect();
            let summary = notices_summary(&notices);
            proptest::prop_assert!(summary.contains(names[0].as_str()));
            proptest::prop_assert!(summary.ends_with("joined") || summary.ends_with("left"));
        }
    }

    #[test]
    fn summaries_name_a_few_and_count_the_rest() {
        use MessageKind::{Joined, Left};
        let names = ["ana", "bruno", "carla", "davi", "eva"];
        let joins: Vec<ChatMessage> = names.iter().enumerate().map(|(n, who)| message(n as i64, Joined, who, 0)).collect();
        assert_eq!(notices_summary(&joins[..1]), "ana joined");
        assert_eq!(notices_summary(&joins[..2]), "ana and bruno joined");
        assert_eq!(notices_summary(&joins[..3]), "ana, bruno and carla joined");
        assert_eq!(notices_summary(&joins), "ana, bruno and 3 others joined");
        let mixed = [message(1, Joined, "ana", 0), message(2, Left, "bruno", 0), message(3, Joined, "ana", 0)];
        assert_eq!(notices_summary(&mixed), "ana joined · bruno left", "each person once");
    }

    #[test]
    fn each_person_is_named_by_what_they_did_last() {
        use MessageKind::{Joined, Left};
        let back = [message(1, Left, "ana", 0), message(2, Joined, "ana", 0)];
        assert_eq!(notices_summary(&back), "ana joined", "left and came back: in the room");
        let gone = [message(1, Joined, "ana", 0), message(2, Joined, "bruno", 0), message(3, Left, "ana", 0)];
        assert_eq!(notices_summary(&gone), "bruno joined · ana left");
    }
}
