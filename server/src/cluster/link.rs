//! The Redis side of the cluster: one connection for commands and publishing, one
//! subscribed to the events channel, and three tasks.
//!
//! - The *sender* task owns every write, in order: events from the hub (queued by
//!   [`RedisRelay`] without blocking the hub), this node's presence hash, and the
//!   heartbeat that keeps this node listed as alive. Doing them all in one task keeps
//!   the presence hash in the same order as the presence events.
//! - The *receiver* task hands other nodes' events to the hub, reads a node's presence
//!   hash whole when it (re)appears, and asks for a catch-up when events may have
//!   been lost.
//! - The *catch-up* task brings this node's sockets up to date from the database,
//!   one catch-up at a time however many are asked for meanwhile.
//!
//! Redis must be a single server (or a replicated primary), not Redis Cluster: the
//! heartbeat script touches keys it derives from node names.
//!
//! Both reconnect by themselves (the `redis` connection manager retries, the heartbeat
//! keeps trying), so Redis going away only degrades the node: its own sockets are
//! served as before, and everyone catches up once Redis is back.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use app::protocol::{MemberReceipt, RoomId, RoomKind, Seq, ServerMsg, UserRef};
use axum::extract::ws::Utf8Bytes;
use redis::{
    aio::{ConnectionManager, ConnectionManagerConfig},
    AsyncCommands, Client, Msg, PushInfo, PushKind,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use super::{
    other_half::OtherHalf,
    wire::{self, Event, NodeId, EVENTS_VERSION},
    Cluster, ClusterHealth,
};
use crate::{
    hub::{Following, Hub, MembershipCheck, NodePresence, Relay},
    metrics::{self, ClusterFlow},
    storage::Store,
};

/// The channel every node publishes to and listens on. Named by the version of what
/// nodes tell each other ([`EVENTS_VERSION`]: the browser protocol's, since events carry
/// frames encoded for pages): during a deploy that changes it, nodes of the two
/// versions do not hand each other events the other would misread (their pages meet
/// again in the database, and a gap in a room's numbers makes a page catch up).
static CHANNEL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| format!("parley:events:v{EVENTS_VERSION}"));
/// Sorted set of nodes, scored by their last heartbeat (Unix milliseconds).
const NODES: &str = "parley:nodes";
/// Events waiting to be published, at most. Past this the hub is not held up: the
/// event is dropped and the other nodes are told to catch up once this one can.
const OUTBOX_EVENTS: usize = 65_536;
/// Events received from Redis waiting to be handled, at most. Past this they are
/// dropped and this node catches up from the database, rather than hold memory
/// without bound while it cannot keep up.
const PUSHES_WAITING: usize = 65_536;
/// Events sent to Redis in one round trip, at most.
const BATCH: usize = 512;
/// How long one Redis round trip may take before the link counts as broken.
const ROUND_TRIP: Duration = Duration::from_secs(2);
/// Missed messages a node sends a room's sockets itself, at most; past this it sends
/// the newest only, and clients fetch the rest (see [`Shared::catch_up_room`]).
const RESENT_AT_MOST: u32 = 256;

/// This node's presence hash: user id → [`PresenceEntry`].
fn presence_key(node: &str) -> String {
    format!("{PRESENCE_PREFIX}{node}")
}

/// One person's rooms and sockets on a node, as kept in its presence hash.
#[derive(Debug, Serialize, Deserialize)]
struct PresenceEntry {
    user: UserRef,
    rooms: Vec<RoomId>,
    sockets: u32,
}

fn presence_entry(user: &UserRef, rooms: &[RoomId], sockets: u32) -> String {
    serde_json::to_string(&PresenceEntry { user: user.clone(), rooms: rooms.to_vec(), sockets }).expect("presence entries always serialise")
}

/// What may go wrong while linking up at start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot reach Redis at {url}: {source}")]
    Connect { url: String, source: redis::RedisError },
}

/// What the cluster link needs to know.
pub struct Settings {
    pub redis_url: String,
    pub node: NodeId,
    /// A node not heard from for this long is taken for gone.
    pub presence_ttl: Duration,
}

/// Something for the sender task to write.
enum Outgoing {
    Event { event: Event, frame: Option<Utf8Bytes> },
    /// Everyone with sockets here, taken under the hub's lock: it replaces this node's
    /// presence hash, between the events that came before and after it.
    Presence(Vec<NodePresence>),
}

/// State the tasks share.
struct Shared {
    node: NodeId,
    hub: Arc<Hub>,
    store: Arc<dyn Store>,
    commands: ConnectionManager,
    health: Arc<ClusterHealth>,
    /// Events from here were lost on the way to Redis: the others must catch up.
    lost: Arc<AtomicBool>,
    /// This node's presence must be written whole again (Redis lost it, others may
    /// have taken this node for gone, or a change never left this node).
    reannounce: Arc<AtomicBool>,
    ttl: Duration,
    /// Set when this node's sockets must be brought up to date from the database.
    catch_up_wanted: Notify,
    /// The other nodes listed at the last heartbeat and the protocol each speaks.
    other_half: std::sync::Mutex<OtherHalf>,
}

/// Queues the hub's events for the sender task, never waiting.
struct RedisRelay {
    outbox: mpsc::Sender<Outgoing>,
    lost: Arc<AtomicBool>,
    reannounce: Arc<AtomicBool>,
}

impl RedisRelay {
    fn queue(&self, outgoing: Outgoing) {
        if self.outbox.try_send(outgoing).is_err() {
            // The other nodes miss this; they catch up from the database once told,
            // and hear this node's presence whole again.
            self.lost.store(true, Ordering::Release);
            self.reannounce.store(true, Ordering::Release);
            metrics::cluster_events(ClusterFlow::Dropped, 1);
        }
    }
}

impl Relay for RedisRelay {
    fn relay(&self, event: Event, frame: Option<Utf8Bytes>) {
        self.queue(Outgoing::Event { event, frame });
    }

    fn presence_snapshot(&self, people: Vec<NodePresence>) {
        self.queue(Outgoing::Presence(people));
    }
}

/// Asks for RESP3, which the subscription needs to share a connection manager's
/// reconnects (Redis 6 or newer; the shared limits need 7).
fn with_resp3(url: &str) -> String {
    if url.contains("protocol=") {
        url.to_string()
    } else if url.contains('?') {
        format!("{url}&protocol=resp3")
    } else {
        format!("{url}?protocol=resp3")
    }
}

/// The URL without its password, for messages.
fn redacted(url: &str) -> String {
    match url.split_once("://").and_then(|(scheme, rest)| rest.rsplit_once('@').map(|(_, host)| (scheme, host))) {
        Some((scheme, host)) => format!("{scheme}://***@{host}"),
        None => url.to_string(),
    }
}

/// Connects to Redis, announces this node, reads who is on the others, and starts
/// relaying. Fails with a clear error if Redis cannot be reached now; once running,
/// Redis going away only degrades the node.
pub async fn start(settings: Settings, hub: Arc<Hub>, store: Arc<dyn Store>, stop: CancellationToken) -> Result<Cluster, ClusterError> {
    let url = settings.redis_url.trim();
    let failed = |source| ClusterError::Connect { url: redacted(url), source };
    let client = Client::open(with_resp3(url)).map_err(failed)?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(ROUND_TRIP))
        .set_response_timeout(Some(ROUND_TRIP))
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_secs(2))
        .set_number_of_retries(4);
    let commands = ConnectionManager::new_with_config(client.clone(), config.clone()).await.map_err(failed)?;
    let (pushes, pushed) = mpsc::channel(PUSHES_WAITING);
    let overflowed = Arc::new(AtomicBool::new(false));
    let push_sender = {
        let overflowed = overflowed.clone();
        // Never waits (that would stall the connection): past the bound an event is
        // dropped, and the receiver catches up as after a break.
        move |push: PushInfo| -> Result<(), std::convert::Infallible> {
            if pushes.try_send(push).is_err() {
                overflowed.store(true, Ordering::Release);
            }
            Ok(())
        }
    };
    let mut subscriber = ConnectionManager::new_with_config(client, config.set_push_sender(push_sender).set_automatic_resubscription())
        .await
        .map_err(failed)?;
    subscriber.subscribe(CHANNEL.as_str()).await.map_err(failed)?;

    let health = Arc::new(ClusterHealth::default());
    let (outbox, queued) = mpsc::channel(OUTBOX_EVENTS);
    let lost = Arc::new(AtomicBool::new(false));
    let reannounce = Arc::new(AtomicBool::new(false));
    let shared = Arc::new(Shared {
        node: settings.node.clone(),
        hub: hub.clone(),
        store,
        commands,
        health: health.clone(),
        lost: lost.clone(),
        reannounce: reannounce.clone(),
        ttl: settings.presence_ttl,
        catch_up_wanted: Notify::new(),
        other_half: std::sync::Mutex::new(OtherHalf::default()),
    });
    // Listed as alive, with an empty presence hash, before anyone can hear of its
    // people; a node restarted under the same name says so, and the others forget
    // whoever it had before.
    shared.beat().await.map_err(failed)?;
    let mut commands = shared.commands.clone();
    let _: () = redis::pipe()
        .del(presence_key(&shared.node))
        .ignore()
        .publish(CHANNEL.as_str(), wire::encode(&shared.node, &Event::NodeUp, ""))
        .ignore()
        .query_async(&mut commands)
        .await
        .map_err(failed)?;
    shared.read_every_node().await.map_err(failed)?;
    hub.attach_relay(Arc::new(RedisRelay { outbox, lost, reannounce }));
    health.set_subscribed(true);
    health.set_connected(true);
    tokio::spawn(send_loop(shared.clone(), queued, subscriber, stop.clone()));
    tokio::spawn(receive_loop(shared.clone(), Pushed { pushed, overflowed }, stop.clone()));
    tokio::spawn(catch_up_loop(shared.clone(), stop));
    tracing::info!(node = %settings.node, redis = %redacted(url), "joined the cluster");
    Ok(Cluster { node: settings.node, health, limits: super::SharedLimits::new(shared.commands.clone()) })
}

/// One heartbeat, as one atomic step on Redis's own clock (the nodes' clocks may
/// disagree): list this node as alive, keep its presence hash and the protocol version
/// it speaks from expiring, drop the nodes that stopped beating (and their hashes and
/// versions), and answer whether this node had itself been dropped (it stalled for
/// longer than the expiry) and which nodes are alive, each with its version ('' if
/// none is recorded: a build from before versions were, or one that stopped saying).
const BEAT: &str = r"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local ttl = tonumber(ARGV[2])
local added = redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('PEXPIRE', KEYS[2], ttl)
redis.call('SET', KEYS[3], ARGV[4], 'PX', ttl)
for _, node in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - ttl)) do
  redis.call('ZREM', KEYS[1], node)
  redis.call('DEL', ARGV[3] .. node, ARGV[5] .. node)
end
local listed = {}
for _, node in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  listed[#listed + 1] = node
  listed[#listed + 1] = redis.call('GET', ARGV[5] .. node) or ''
end
return {added, listed}
";

/// Prefix of every node's presence hash key, for the heartbeat script.
const PRESENCE_PREFIX: &str = "parley:presence:";
/// Prefix of the key holding the version a node speaks ([`EVENTS_VERSION`]). A key per
/// node that expires with its heartbeat, so that a build which does not write it
/// (an older one, after a rollback under the same name) is soon read as saying none.
const PROTOCOL_PREFIX: &str = "parley:protocol:";

/// [`BEAT`], hashed once (it is sent by hash, and whole only when Redis lacks it).
static BEAT_SCRIPT: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| redis::Script::new(BEAT));

impl Shared {
    /// Lists this node as alive now, keeps its presence hash from expiring, and
    /// forgets the nodes that stopped beating. True if this node had been taken for
    /// gone: the others forgot its people, who must be announced again.
    async fn beat(&self) -> redis::RedisResult<bool> {
        let mut commands = self.commands.clone();
        let (added, listed): (i64, Vec<String>) = BEAT_SCRIPT
            .key(NODES)
            .key(presence_key(&self.node))
            .key(format!("{PROTOCOL_PREFIX}{}", &*self.node))
            .arg(&*self.node)
            .arg(self.ttl.as_millis() as i64)
            .arg(PRESENCE_PREFIX)
            .arg(EVENTS_VERSION)
            .arg(PROTOCOL_PREFIX)
            .invoke_async(&mut commands)
            .await?;
        let others: HashMap<String, Option<u32>> = listed
            .chunks_exact(2)
            .filter(|pair| *pair[0] != *self.node)
            .map(|pair| (pair[0].clone(), pair[1].parse().ok()))
            .collect();
        // Any node this one still counts people on but that is listed no more.
        for node in self.hub.remote_nodes() {
            if !others.contains_key(&*node) {
                tracing::warn!(%node, "a node stopped beating: its people go offline");
                self.hub.forget_remote_node(&node);
            }
        }
        if self.other_half().listed_now(others, EVENTS_VERSION) {
            tracing::info!("a node of another protocol version left or came over to this one (a deploy's other half): catching up");
            self.catch_up_wanted.notify_one();
        }
        Ok(added == 1)
    }

    fn other_half(&self) -> std::sync::MutexGuard<'_, OtherHalf> {
        // A map replaced in one step: still sound after a panic elsewhere.
        self.other_half.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Reads every listed node's presence hash whole (one that stopped beating has no
    /// hash left: it expires with its heartbeat).
    async fn read_every_node(&self) -> redis::RedisResult<()> {
        let mut commands = self.commands.clone();
        let nodes: Vec<String> = commands.zrange(NODES, 0, -1).await?;
        for node in nodes.into_iter().filter(|node| **node != *self.node) {
            self.read_node(&NodeId::from(node)).await?;
        }
        Ok(())
    }

    /// Reads one node's presence hash whole, replacing what this node knew of it.
    async fn read_node(&self, node: &NodeId) -> redis::RedisResult<()> {
        let mut commands = self.commands.clone();
        let entries: HashMap<String, String> = commands.hgetall(presence_key(node)).await?;
        let people: Vec<NodePresence> = entries
            .into_iter()
            .filter_map(|(_, entry)| serde_json::from_str::<PresenceEntry>(&entry).ok())
            .map(|entry| (entry.user, entry.rooms, entry.sockets))
            .collect();
        self.hub.replace_remote_node(node, &people);
        Ok(())
    }

    /// Writes one batch: events (and the presence hash changes they carry) in order,
    /// then, if events were lost since the last batch, the word to catch up.
    async fn write(&self, batch: &[Outgoing]) -> redis::RedisResult<()> {
        let key = presence_key(&self.node);
        let mut pipe = redis::pipe();
        for outgoing in batch {
            match outgoing {
                Outgoing::Event { event, frame } => {
                    if let Event::Presence { user, rooms, sockets } = event {
                        if *sockets == 0 {
                            pipe.hdel(&key, user.id).ignore();
                        } else {
                            pipe.hset(&key, user.id, presence_entry(user, rooms, *sockets)).ignore();
                        }
                    }
                    let frame = frame.as_ref().map_or("", |frame| frame.as_str());
                    pipe.publish(CHANNEL.as_str(), wire::encode(&self.node, event, frame)).ignore();
                }
                Outgoing::Presence(people) => {
                    pipe.del(&key).ignore();
                    for (user, rooms, sockets) in people {
                        pipe.hset(&key, user.id, presence_entry(user, rooms, *sockets)).ignore();
                    }
                    pipe.pexpire(&key, self.ttl.as_millis() as i64).ignore();
                    pipe.publish(CHANNEL.as_str(), wire::encode(&self.node, &Event::NodeUp, "")).ignore();
                }
            }
        }
        let lost = self.lost.swap(false, Ordering::AcqRel);
        if lost {
            pipe.publish(CHANNEL.as_str(), wire::encode(&self.node, &Event::CatchUp, "")).ignore();
        }
        let mut commands = self.commands.clone();
        let written = match tokio::time::timeout(ROUND_TRIP, pipe.exec_async(&mut commands)).await {
            Ok(result) => result,
            Err(_) => Err(redis::RedisError::from(std::io::Error::new(std::io::ErrorKind::TimedOut, "Redis did not answer in time"))),
        };
        if written.is_err() && lost {
            self.lost.store(true, Ordering::Release);
        }
        written
    }

    /// Brings this node's sockets up to date with the database after events from other
    /// nodes may have been lost: memberships (each room where the database and the
    /// sockets here disagree is checked as after another node's join or leave), each
    /// room's messages from where its sockets' unbroken run ends, and read positions in
    /// direct conversations.
    async fn catch_up(&self) {
        metrics::cluster_catch_up();
        let mut direct = HashSet::new();
        for (user_id, heard) in self.hub.local_memberships() {
            match self.store.rooms_of(user_id).await {
                Ok(rooms) => {
                    direct.extend(rooms.iter().filter(|room| room.kind == RoomKind::Direct).map(|room| room.id));
                    let in_database: HashSet<RoomId> = rooms.iter().map(|room| room.id).collect();
                    for room_id in memberships_to_check(&in_database, &heard) {
                        self.hub.check_membership_later(MembershipCheck::of(user_id, room_id));
                    }
                }
                Err(err) => tracing::error!(user = user_id, error = %err, "cannot check memberships after a break in the cluster link"),
            }
        }
        for (room_id, heard) in self.hub.rooms_heard() {
            self.catch_up_room(room_id, heard, direct.contains(&room_id)).await;
        }
    }

    /// Sends a room's sockets what was stored after `heard` that they were not sent.
    /// A long run is not sent whole (it would fill every socket's queue at once): its
    /// newest message shows clients the gap, and each fetches what it lacks.
    async fn catch_up_room(&self, room_id: RoomId, heard: Seq, is_direct: bool) {
        let missed = match self.store.history_after(room_id, heard, RESENT_AT_MOST + 1).await {
            Ok(missed) if missed.len() <= RESENT_AT_MOST as usize => missed,
            Ok(_) => self.store.history_before(room_id, None, 1).await.unwrap_or_else(|err| {
                tracing::error!(room = room_id, error = %err, "cannot read a room's newest message");
                Vec::new()
            }),
            Err(err) => {
                tracing::error!(room = room_id, error = %err, "cannot catch a room up after a break in the cluster link");
                return;
            }
        };
        self.hub.resend(room_id, &missed);
        // Two people's ticks ("delivered", "read"); in public rooms "Seen by" comes
        // back with the next receipt, and a client's own catch-up brings positions.
        if is_direct {
            match self.store.receipts(room_id, 2).await {
                Ok(receipts) => {
                    for MemberReceipt { user, delivered_seq, read_seq } in receipts {
                        self.hub.publish_here(room_id, &ServerMsg::Receipt { room_id, user, delivered_seq, read_seq });
                    }
                }
                Err(err) => tracing::error!(room = room_id, error = %err, "cannot read receipts after a break in the cluster link"),
            }
        }
    }
}

/// The rooms where a person's sockets here (`heard`: each room some of them hear, and
/// how many) disagree with the database (`in_database`, read after): in it but not
/// heard by every socket, or heard by some but not in it.
fn memberships_to_check(in_database: &HashSet<RoomId>, heard: &[(RoomId, Following)]) -> Vec<RoomId> {
    let mut differ: Vec<RoomId> = in_database
        .iter()
        .copied()
        .filter(|room_id| !heard.iter().any(|(heard_id, following)| heard_id == room_id && *following == Following::All))
        .collect();
    differ.extend(heard.iter().map(|(room_id, _)| *room_id).filter(|room_id| !in_database.contains(room_id)));
    differ.sort_unstable();
    differ
}

/// Publishes what the hub queues, and beats every third of the presence expiry. After
/// a failure the link counts as broken until a heartbeat gets through; then this node
/// writes its presence whole again and the others are told to catch up.
async fn send_loop(shared: Arc<Shared>, mut queued: mpsc::Receiver<Outgoing>, subscriber: ConnectionManager, stop: CancellationToken) {
    let mut every_beat = tokio::time::interval(shared.ttl / 3);
    every_beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut batch = Vec::with_capacity(BATCH);
    let mut announce_again = false;
    loop {
        tokio::select! {
            received = queued.recv_many(&mut batch, BATCH) => {
                if received == 0 {
                    return;
                }
                match shared.write(&batch).await {
                    Ok(()) => metrics::cluster_events(ClusterFlow::Published, batch.len()),
                    Err(err) => {
                        tracing::warn!(error = %err, events = batch.len(), "cannot publish to Redis");
                        metrics::cluster_events(ClusterFlow::Dropped, batch.len());
                        shared.lost.store(true, Ordering::Release);
                        shared.reannounce.store(true, Ordering::Release);
                        shared.health.set_connected(false);
                        // Not once per event while Redis is away: what queues up meanwhile
                        // goes in the next, bigger batch.
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                }
                batch.clear();
            }
            _ = every_beat.tick() => heartbeat(&shared, &subscriber, &mut announce_again).await,
            () = stop.cancelled() => return,
        }
    }
}

async fn heartbeat(shared: &Shared, subscriber: &ConnectionManager, announce_again: &mut bool) {
    // The subscriber's connection manager gives up reconnecting after a few tries;
    // a command on it starts it again.
    let mut subscriber = subscriber.clone();
    let ping_command = redis::cmd("PING");
    let ping = ping_command.query_async::<String>(&mut subscriber);
    let subscribed = matches!(tokio::time::timeout(ROUND_TRIP, ping).await, Ok(Ok(_)));
    let beat = tokio::time::timeout(ROUND_TRIP, shared.beat()).await;
    match beat {
        Ok(Ok(dropped)) if subscribed => {
            if shared.reannounce.swap(false, Ordering::AcqRel) {
                tracing::info!("Redis is back: announcing this node's people again");
                shared.lost.store(true, Ordering::Release);
                shared.hub.announce_presence();
            } else if dropped || std::mem::take(announce_again) {
                // Nothing was lost, only this node's people forgotten by the others.
                // Announced twice, a beat apart: a node that read the list just before
                // this one was back on it may forget them after hearing them again.
                if dropped {
                    tracing::warn!("this node was missing from the list of nodes (it stalled past the expiry): announcing its people again");
                }
                shared.hub.announce_presence();
            }
            *announce_again |= dropped;
            shared.health.set_connected(true);
        }
        Ok(Ok(_)) => shared.health.set_connected(false),
        Ok(Err(err)) => {
            tracing::debug!(error = %err, "heartbeat failed");
            shared.reannounce.store(true, Ordering::Release);
            shared.health.set_connected(false);
        }
        Err(_) => {
            shared.reannounce.store(true, Ordering::Release);
            shared.health.set_connected(false);
        }
    }
}

/// What the subscription receives, waiting to be handled: at most [`PUSHES_WAITING`],
/// and whether more came and were dropped.
struct Pushed {
    pushed: mpsc::Receiver<PushInfo>,
    overflowed: Arc<AtomicBool>,
}

/// Hands other nodes' events to the hub. A break in the subscription, or events
/// dropped because this node fell behind, means events were missed: this node reads
/// every node's presence again and catches its sockets up.
async fn receive_loop(shared: Arc<Shared>, mut pushed: Pushed, stop: CancellationToken) {
    let mut broken = false;
    let mut behind = false;
    loop {
        let push = tokio::select! {
            push = pushed.pushed.recv() => match push {
                Some(push) => push,
                None => return,
            },
            () = stop.cancelled() => return,
        };
        if pushed.overflowed.swap(false, Ordering::AcqRel) {
            tracing::warn!("fell behind the other nodes' events: catching up once the backlog is handled");
            metrics::cluster_events(ClusterFlow::Dropped, 1);
            behind = true;
        }
        match push.kind {
            PushKind::Disconnection => {
                broken = true;
                shared.health.set_subscribed(false);
                shared.reannounce.store(true, Ordering::Release);
                shared.health.set_connected(false);
            }
            PushKind::Subscribe if broken => {
                broken = false;
                shared.health.set_subscribed(true);
                tracing::info!("resubscribed to Redis: catching up");
                if let Err(err) = shared.read_every_node().await {
                    tracing::warn!(error = %err, "cannot read the other nodes' presence");
                }
                shared.catch_up_wanted.notify_one();
            }
            PushKind::Message => {
                if let Some(message) = Msg::from_push_info(push) {
                    receive(&shared, message.get_payload_bytes()).await;
                }
            }
            _ => {}
        }
        // Only once what was queued before is applied: older events must not
        // overwrite what is read fresh. (A dropped push may have said the subscription
        // broke or came back; either way, reading everything again settles it.)
        if behind && pushed.pushed.is_empty() {
            behind = false;
            broken = false;
            shared.health.set_subscribed(true);
            if let Err(err) = shared.read_every_node().await {
                tracing::warn!(error = %err, "cannot read the other nodes' presence");
            }
            shared.catch_up_wanted.notify_one();
        }
    }
}

async fn receive(shared: &Arc<Shared>, payload: &[u8]) {
    let received = match wire::decode(payload) {
        Ok(received) => received,
        Err(err) => {
            tracing::warn!(error = %err, "ignoring an event that is not Parley's");
            return;
        }
    };
    if *received.node == *shared.node {
        return;
    }
    metrics::cluster_events(ClusterFlow::Received, 1);
    let node = NodeId::from(received.node);
    match received.event {
        // Read in line: events after it are applied after the hash they follow.
        Event::NodeUp => {
            if let Err(err) = shared.read_node(&node).await {
                tracing::warn!(%node, error = %err, "cannot read a node's presence");
            }
        }
        Event::CatchUp => shared.catch_up_wanted.notify_one(),
        event => shared.hub.apply_remote(&node, event, Utf8Bytes::from(received.frame)),
    }
}

/// Catches up whenever asked, one catch-up at a time: asks that come while one runs
/// make one more after it, not one each (every node says "catch up" after Redis comes
/// back, and each would otherwise re-read the same rooms).
async fn catch_up_loop(shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = shared.catch_up_wanted.notified() => shared.catch_up().await,
            () = stop.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memberships_are_checked_where_any_socket_disagrees_with_the_database() {
        let in_database: HashSet<RoomId> = [1, 2, 3].into();
        let heard = [(1, Following::All), (2, Following::Some), (4, Following::Some), (5, Following::All)];
        assert_eq!(memberships_to_check(&in_database, &heard), [2, 3, 4, 5]);
    }

    #[test]
    fn urls_ask_for_resp3_once() {
        assert_eq!(with_resp3("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379?protocol=resp3");
        assert_eq!(with_resp3("redis://h/0?x=1"), "redis://h/0?x=1&protocol=resp3");
        assert_eq!(with_resp3("redis://h?protocol=resp3"), "redis://h?protocol=resp3");
    }

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(redacted("redis://user:s3cr@t@host:6379/0"), "redis://***@host:6379/0");
        assert_eq!(redacted("redis://host:6379"), "redis://host:6379");
        assert_eq!(redacted("ação"), "ação");
    }
}
