//! What the generator writes into each message so that any receiver, of any of the
//! servers, can tell who sent it, which of theirs it is, and when it was meant to go:
//! `#B<sender>.<number>.<intended send time in µs>#`, ASCII so that every server passes
//! it through JSON unchanged. Found by a text search, so no server's envelope has to
//! be parsed and every server costs the generator the same.

/// One benchmark message, as read back from a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    pub sender: u32,
    /// 0, 1, 2, … per sender: a gap is a loss, a repeat a duplicate, a step back a
    /// reordering.
    pub number: u64,
    /// When the open-loop schedule meant it to be sent (µs on the generator's clock),
    /// so a late send counts against latency instead of hiding.
    pub intended_us: u64,
}

const START: &str = "#B";

impl Marker {
    /// The message text: the marker, then `padding` to reach the run's message size.
    pub fn text(&self, padding: &str) -> String {
        format!(
            "{START}{}.{}.{}# {padding}",
            self.sender, self.number, self.intended_us
        )
    }

    /// The first marker in `frame`, if any.
    pub fn find(frame: &str) -> Option<Marker> {
        let at = frame.find(START)?;
        let rest = frame.get(at + START.len()..)?;
        let end = rest.find('#')?;
        let mut fields = rest.get(..end)?.split('.');
        let marker = Marker {
            sender: fields.next()?.parse().ok()?,
            number: fields.next()?.parse().ok()?,
            intended_us: fields.next()?.parse().ok()?,
        };
        fields.next().is_none().then_some(marker)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Any text around a marker (a message's envelope, a user's words) neither
        /// hides it nor makes the search panic, unless the text itself holds one first.
        #[test]
        fn found_in_any_text(before in "\\PC*", after in "\\PC*", sender: u32, number: u64, intended_us: u64) {
            let marker = Marker { sender, number, intended_us };
            let frame = format!("{before}{}{after}", marker.text(""));
            let found = Marker::find(&frame);
            if !before.contains("#B") {
                prop_assert_eq!(found, Some(marker));
            }
        }

        #[test]
        fn any_text_is_searched_without_panicking(frame in "\\PC*") {
            let _ = Marker::find(&frame);
        }
    }

    #[test]
    fn a_marker_is_found_inside_any_envelope() {
        let marker = Marker {
            sender: 7,
            number: 42,
            intended_us: 1_700_000_000_000_000,
        };
        let text = marker.text("Ótimo! ação 🎉");
        for frame in [
            format!(r#"{{"message":{{"message":{{"text":"{text}"}}}}}}"#),
            format!(r#"42["chat",{{"room":"r1","text":"{text}"}}]"#),
            text.clone(),
        ] {
            assert_eq!(Marker::find(&frame), Some(marker));
        }
    }

    #[test]
    fn frames_without_a_whole_marker_have_none() {
        for frame in [
            "",
            "#B",
            "#B1.2#",
            "#B1.2.3",
            "#Bx.2.3#",
            "#B1.2.3.4#",
            "Ó#B",
            "{\"pong\":{\"id\":1}}",
        ] {
            assert_eq!(Marker::find(frame), None, "{frame}");
        }
    }
}
