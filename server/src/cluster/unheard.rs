//! Tells when a node that spoke another protocol version has gone, or come back
//! speaking this one, so that this node catches its sockets up from the database.
//!
//! Events go out on a channel named by the browser protocol's version, so while a
//! deploy that changes the protocol rolls across the nodes, the two halves do not hear
//! each other: they share only the list of live nodes (and the database). A node
//! listed alive but never heard on this channel speaks another version (or has said
//! nothing since this node started). What its pages posted reached this node's pages
//! only if a later message showed them the gap. Once it leaves the list, or restarts
//! under its name speaking this version (its `NodeUp` is heard), nothing more can come
//! from the other half through it: catching up then brings every page here the rest.

use std::collections::HashSet;

/// The other nodes as this one knows them: listed alive, and heard on this channel.
#[derive(Debug, Default)]
pub(super) struct Unheard {
    /// The other nodes listed alive at the last heartbeat.
    listed: HashSet<String>,
    /// The other nodes whose events this node has heard on its channel.
    heard: HashSet<String>,
}

impl Unheard {
    /// Takes the other nodes listed alive now; true if one that was listed and never
    /// heard has left the list.
    pub(super) fn listed_now(&mut self, alive: HashSet<String>) -> bool {
        let unheard_left = self.listed.iter().any(|node| !alive.contains(node) && !self.heard.contains(node));
        // A node heard before its first listing registered before it spoke, so it is
        // in this list already.
        self.heard.retain(|node| alive.contains(node));
        self.listed = alive;
        unheard_left
    }

    /// Notes an event heard from `node` (`node_up`: it has just started); true if it
    /// is a listed node never heard before that has restarted speaking this version.
    pub(super) fn heard(&mut self, node: &str, node_up: bool) -> bool {
        if self.heard.contains(node) {
            return false;
        }
        self.heard.insert(node.to_owned());
        node_up && self.listed.contains(node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(names: &[&str]) -> HashSet<String> {
        names.iter().map(|name| name.to_string()).collect()
    }

    #[test]
    fn a_node_never_heard_that_leaves_means_catching_up() {
        let mut unheard = Unheard::default();
        assert!(!unheard.listed_now(nodes(&["old", "new"])));
        assert!(!unheard.heard("new", false));
        assert!(!unheard.listed_now(nodes(&["old", "new"])), "nobody left");
        assert!(unheard.listed_now(nodes(&["new"])), "the other half's node left");
        assert!(!unheard.listed_now(nodes(&[])), "a node heard on this channel left: nothing missed");
    }

    #[test]
    fn a_node_never_heard_that_restarts_speaking_this_version_means_catching_up() {
        let mut unheard = Unheard::default();
        unheard.listed_now(nodes(&["node-2"]));
        assert!(unheard.heard("node-2", true), "restarted under its name, now on this channel");
        assert!(!unheard.heard("node-2", true), "a later restart of a node heard before");
    }

    #[test]
    fn a_node_joining_or_heard_before_its_listing_is_nothing_missed() {
        let mut unheard = Unheard::default();
        unheard.listed_now(nodes(&["node-1"]));
        assert!(!unheard.heard("node-1", false));
        assert!(!unheard.heard("node-3", true), "a new node, not listed yet");
        assert!(!unheard.listed_now(nodes(&["node-1", "node-3"])));
        assert!(!unheard.listed_now(nodes(&["node-1"])), "it was heard");
    }
}
