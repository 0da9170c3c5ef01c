//! One room's messages as the browser holds them: ordered by sequence number, each
//! once, however they arrived (history page, live event, own acknowledgement, resend).

use std::collections::BTreeMap;

use crate::protocol::{ChatMessage, Seq};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Timeline {
    messages: BTreeMap<Seq, ChatMessage>,
    /// Older messages exist on the server before the first one held.
    pub has_more_before: bool,
    /// The newest page has been loaded at least once.
    pub loaded: bool,
    /// A request for an older page is in flight.
    pub loading_older: bool,
}

impl Timeline {
    /// Adds one message; false if it was already there.
    pub fn insert(&mut self, message: ChatMessage) -> bool {
        self.messages.insert(message.seq, message).is_none()
    }

    /// Merges the newest page (on open or after reconnecting). If the page does not
    /// reach back to what is already held, the messages in between are unknown, so the
    /// held ones are dropped rather than shown with a hole in the middle: the person
    /// can scroll up to load them. Messages held from before the page (live ones that
    /// came while it was on its way) are kept; if they leave a hole after the page,
    /// the position after which it starts is returned, to be caught up.
    pub fn merge_latest(&mut self, page: Vec<ChatMessage>, has_more_before: bool) -> Option<Seq> {
        let page_start = page.first().map(|m| m.seq);
        let page_end = page.last().map(|m| m.seq);
        let held_end = self.last_seq();
        let connected = match (page_start, held_end) {
            (Some(start), Some(end)) => start <= end + 1,
            _ => true,
        };
        if !connected {
            self.messages.clear();
        }
        let keeps_older =
            connected && self.loaded && matches!((self.first_seq(), page_start), (Some(held), Some(start)) if held < start);
        for message in page {
            self.insert(message);
        }
        if !keeps_older {
            self.has_more_before = has_more_before;
        }
        self.loaded = true;
        let end = page_end?;
        let next_held = self.messages.range(end + 1..).next().map(|(seq, _)| *seq)?;
        (next_held > end + 1).then_some(end)
    }

    /// Merges a page of messages older than those held.
    pub fn merge_older(&mut self, page: Vec<ChatMessage>, has_more_before: bool) {
        for message in page {
            self.insert(message);
        }
        self.has_more_before = has_more_before;
        self.loading_older = false;
    }

    pub fn first_seq(&self) -> Option<Seq> {
        self.messages.keys().next().copied()
    }

    pub fn last_seq(&self) -> Option<Seq> {
        self.messages.keys().next_back().copied()
    }

    pub fn messages(&self) -> impl Iterator<Item = &ChatMessage> {
        self.messages.values()
    }

    pub fn len(&self) -> usize {
        self.messages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{MessageKind, UserRef};

    fn message(seq: Seq) -> ChatMessage {
        ChatMessage {
            id: seq,
            room_id: 1,
            seq,
            kind: MessageKind::Text,
            sender: UserRef { id: 1, username: "a".into(), display_name: "A".into() },
            client_id: None,
            text: format!("m{seq}"),
            sent_at: 0,
        }
    }

    fn seqs(timeline: &Timeline) -> Vec<Seq> {
        timeline.messages().map(|m| m.seq).collect()
    }

    #[test]
    fn messages_are_ordered_and_unique_whatever_the_arrival_order() {
        let mut timeline = Timeline::default();
        assert!(timeline.insert(message(3)));
        assert!(timeline.insert(message(1)));
        assert!(!timeline.insert(message(3)), "a second copy is not added");
        assert_eq!(seqs(&timeline), [1, 3]);
    }

    #[test]
    fn older_pages_go_in_front() {
        let mut timeline = Timeline::default();
        timeline.merge_latest((51..=100).map(message).collect(), true);
        timeline.loading_older = true;
        timeline.merge_older((1..=50).map(message).collect(), false);
        assert_eq!(seqs(&timeline), (1..=100).collect::<Vec<_>>());
        assert!(!timeline.has_more_before && !timeline.loading_older);
    }

    #[test]
    fn a_reconnect_page_that_overlaps_extends_the_timeline() {
        let mut timeline = Timeline::default();
        timeline.merge_latest((1..=10).map(message).collect(), false);
        timeline.merge_latest((8..=15).map(message).collect(), true);
        assert_eq!(seqs(&timeline), (1..=15).collect::<Vec<_>>());
        assert!(!timeline.has_more_before, "what is held already reaches the start");
    }

    #[test]
    fn live_messages_that_beat_the_first_page_are_kept() {
        let mut timeline = Timeline::default();
        timeline.insert(message(11));
        assert_eq!(timeline.merge_latest((1..=10).map(message).collect(), false), None);
        assert_eq!(seqs(&timeline), (1..=11).collect::<Vec<_>>());

        let mut timeline = Timeline::default();
        timeline.insert(message(14));
        assert_eq!(timeline.merge_latest((1..=10).map(message).collect(), false), Some(10), "11 to 13 are missing");
        assert_eq!(seqs(&timeline), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 14]);
    }

    #[test]
    fn a_reconnect_page_with_a_gap_replaces_the_timeline() {
        let mut timeline = Timeline::default();
        timeline.merge_latest((1..=10).map(message).collect(), false);
        timeline.merge_latest((100..=149).map(message).collect(), true);
        assert_eq!(seqs(&timeline), (100..=149).collect::<Vec<_>>());
        assert!(timeline.has_more_before);
    }
}
