//! Tells when a node of another version has gone, or come over to this one, so that
//! this node catches its sockets up from the database.
//!
//! Events go out on a channel named by their version (`wire::EVENTS_VERSION`, which
//! follows the browser protocol's), so while a deploy that changes it rolls across the
//! nodes (or is rolled back), the two halves do not hear each other: they share only
//! the list of live nodes, where each heartbeat also records the version its node
//! speaks, and the database. What a
//! node of the other half stored reached the pages here only if a later message showed
//! them the gap. Once it has left the list, or speaks this version (a restart under its
//! name), nothing more can come from the other half through it, and catching up brings
//! every page here the rest. Knowing the versions, this does not take a quiet node
//! that records this version for the other half.

use std::collections::HashMap;

/// The other nodes listed alive at the last heartbeat, with the protocol each speaks.
/// `None` (none recorded: a build from before versions were) counts as the other
/// half; while recording versions itself rolls out, that costs a needless catch-up.
#[derive(Debug, Default)]
pub(super) struct OtherHalf {
    listed: HashMap<String, Option<u32>>,
}

impl OtherHalf {
    /// Takes the other nodes listed alive now; true if one that spoke another version
    /// than `ours` has left the list or speaks `ours` now.
    pub(super) fn listed_now(&mut self, now: HashMap<String, Option<u32>>, ours: u32) -> bool {
        let gone_or_come_over = self
            .listed
            .iter()
            .any(|(node, was)| *was != Some(ours) && now.get(node).is_none_or(|is| *is == Some(ours)));
        self.listed = now;
        gone_or_come_over
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OURS: u32 = 3;

    fn listed(nodes: &[(&str, Option<u32>)]) -> HashMap<String, Option<u32>> {
        nodes.iter().map(|(name, version)| (name.to_string(), *version)).collect()
    }

    #[test]
    fn a_node_of_another_version_that_leaves_means_catching_up() {
        let mut half = OtherHalf::default();
        assert!(!half.listed_now(listed(&[("old", Some(2)), ("new", Some(OURS))]), OURS));
        assert!(!half.listed_now(listed(&[("old", Some(2)), ("new", Some(OURS))]), OURS), "nobody left");
        assert!(half.listed_now(listed(&[("new", Some(OURS))]), OURS), "the other half's node left");
        assert!(!half.listed_now(listed(&[]), OURS), "a node of this version left: nothing missed");
    }

    #[test]
    fn a_node_that_comes_over_to_this_version_means_catching_up() {
        let mut half = OtherHalf::default();
        half.listed_now(listed(&[("node-2", Some(2))]), OURS);
        assert!(half.listed_now(listed(&[("node-2", Some(OURS))]), OURS), "restarted under its name, updated");
        assert!(!half.listed_now(listed(&[("node-2", Some(OURS))]), OURS));
        assert!(!half.listed_now(listed(&[("node-2", Some(4))]), OURS), "this node is the old half now: nothing to catch up yet");
        assert!(half.listed_now(listed(&[]), OURS), "…until node-2 has gone");
    }

    #[test]
    fn a_node_from_before_versions_were_recorded_is_the_other_half() {
        let mut half = OtherHalf::default();
        half.listed_now(listed(&[("older", None)]), OURS);
        assert!(half.listed_now(listed(&[]), OURS));
    }

    #[test]
    fn a_node_rolled_back_under_its_name_is_the_other_half_once_its_version_has_expired() {
        let mut half = OtherHalf::default();
        half.listed_now(listed(&[("node-2", Some(OURS))]), OURS);
        assert!(!half.listed_now(listed(&[("node-2", None)]), OURS), "what it posts now is missed…");
        assert!(half.listed_now(listed(&[]), OURS), "…and caught up once it has gone");
    }

    #[test]
    fn quiet_nodes_of_this_version_coming_and_going_are_nothing_missed() {
        let mut half = OtherHalf::default();
        assert!(!half.listed_now(listed(&[("a", Some(OURS))]), OURS));
        assert!(!half.listed_now(listed(&[("a", Some(OURS)), ("b", Some(OURS))]), OURS));
        assert!(!half.listed_now(listed(&[("b", Some(OURS))]), OURS));
    }
}
