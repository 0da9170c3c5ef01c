//! What each socket request does: rooms, membership, posting and history.
//!
//! Every request is checked against the database (membership is authoritative there,
//! not in the hub), and every change is stored before anyone hears of it: the ack and
//! the broadcast both go out only after the transaction commits.

use std::{sync::Arc, time::Instant};

use app::{
    protocol::{
        ChatMessage, ClientMsg, Limits, RequestId, RoomId, RoomKind, RoomSummary, Seq, ServerMsg, UserId, UserRef, MAX_CLIENT_ID_LEN,
        PROTOCOL_VERSION,
    },
    validation,
};
use tokio::sync::{Mutex, MutexGuard, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::{
    error::AppError,
    hub::{ConnId, Connection, Following, Hub, MembershipCheck, MembershipKey, TellJoin},
    metrics::{self, MembershipOutcome},
    storage::{NewPost, Posted, Store, StoreError, StoreResult},
    time::unix_millis,
};

/// A fixed set of async locks shared out by id, so memory does not grow with the
/// number of rooms or users.
struct Stripes(Vec<Mutex<()>>);

impl Stripes {
    const COUNT: usize = 64;

    fn new() -> Self {
        Stripes((0..Self::COUNT).map(|_| Mutex::new(())).collect())
    }

    fn index(id: i64) -> usize {
        id.rem_euclid(Self::COUNT as i64) as usize
    }

    async fn lock(&self, id: i64) -> MutexGuard<'_, ()> {
        self.0[Self::index(id)].lock().await
    }

    /// Locks the stripes of two ids in index order (once if they share one), so two
    /// tasks locking the same pair cannot deadlock.
    async fn lock_pair(&self, a: i64, b: i64) -> (MutexGuard<'_, ()>, Option<MutexGuard<'_, ()>>) {
        let (low, high) = if Self::index(a) <= Self::index(b) { (a, b) } else { (b, a) };
        let first = self.lock(low).await;
        let second = if Self::index(low) == Self::index(high) { None } else { Some(self.lock(high).await) };
        (first, second)
    }
}

/// Membership checks (see [`Chat::run_membership_checks`]) reading the database at once.
const CHECKS_AT_ONCE: usize = 8;
/// How long a membership check that failed first waits before it is tried again.
const CHECK_RETRY: std::time::Duration = std::time::Duration::from_secs(1);
/// The longest a failed membership check waits between tries.
const CHECK_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(30);
/// Summaries read, at most, to join a person's sockets to a room without a message
/// slipping in between (see [`Chat::join_here_told`]).
const JOIN_READS: usize = 3;
/// Messages sent, at most, to sockets just joined to a room: those stored since the
/// join, on another node or here while the summary was read
/// ([`Chat::send_messages_since_join`]).
const SENT_SINCE_JOIN: u32 = 20;

/// How long each person and room whose membership check failed waits before the next
/// try: doubling from [`CHECK_RETRY`] to [`CHECK_RETRY_MAX`], less a random part of up
/// to a half, so that checks that failed together (the database was down) do not all
/// come back at the same moment.
#[derive(Default)]
struct CheckRetries(std::sync::Mutex<std::collections::HashMap<MembershipKey, std::time::Duration>>);

impl CheckRetries {
    fn failed(&self, check: MembershipCheck) -> std::time::Duration {
        use std::hash::BuildHasher;
        let mut pauses = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let pause = pauses.get(&check.key()).map_or(CHECK_RETRY, |last| (*last * 2).min(CHECK_RETRY_MAX));
        pauses.insert(check.key(), pause);
        // A randomly seeded hash of the pair and its pause: a random part without a
        // random number generator.
        let random = std::collections::hash_map::RandomState::new().hash_one((check.key(), pause));
        pause.mul_f64(0.5 + (random % 1_000) as f64 / 2_000.0)
    }

    fn succeeded(&self, check: MembershipCheck) {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(&check.key());
    }
}
/// A catch-up page is this many history pages long.
const CATCHUP_PAGES: u32 = 4;
/// Most rooms "Browse rooms" lists: the ones most people are in. Rooms are never
/// deleted, and one account can make and leave them one after another: listing every
/// one would grow the reply past what a socket may hold, closing the socket of each
/// person who browses. Any room can still be opened by its address.
pub const DIRECTORY_ROOMS: u32 = 500;
/// Most users one search returns.
const USER_SEARCH_LIMIT: u32 = 20;
/// People per page of a room's online list.
const ONLINE_PAGE: usize = 50;
/// Most member positions sent with history. The furthest readers come first: they are
/// the ones a "seen by" on recent messages names; in a room of thousands the rest
/// would be bytes nobody looks at.
const RECEIPTS_SENT: u32 = 500;
/// What a message's fields other than its texts take in JSON, at most: five numbers,
/// the kind's name, the field names and their punctuation.
const MESSAGE_FIELDS_BOUND: usize = 256;
/// JSON writes one byte of text as at most six (`\u001f`).
const JSON_ESCAPE_BOUND: usize = 6;

/// With the `test-hooks` feature (integration tests only), sending this text makes
/// the request panic, to show that a panic costs one error reply and nothing more.
#[cfg(feature = "test-hooks")]
pub const PANIC_FOR_TESTS: &str = "\u{1f4a5} test hook: panic while handling this request";

/// With the `test-hooks` feature (integration tests only): the greeting of a person
/// whose username starts with [`greeting_hook::PREFIX`] holds between reading their
/// rooms and registering the socket until the test lets it go on, so that the test can
/// store a message in between, as a busy server sometimes does.
#[cfg(feature = "test-hooks")]
pub mod greeting_hook {
    use std::{
        collections::HashMap,
        sync::{Arc, LazyLock, Mutex},
    };

    use tokio::sync::Notify;

    pub const PREFIX: &str = "slow-greeting";

    /// One username's hold: `held` once the rooms are read, `go_on` from the test.
    #[derive(Default)]
    pub struct Hold {
        pub held: Notify,
        pub go_on: Notify,
    }

    static HOLDS: LazyLock<Mutex<HashMap<String, Arc<Hold>>>> = LazyLock::new(Default::default);

    /// The hold for a username, made by whichever asks first (the test or the greeting).
    pub fn hold(username: &str) -> Arc<Hold> {
        HOLDS.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).entry(username.to_string()).or_default().clone()
    }
}

/// The connection a request came from.
#[derive(Debug, Clone)]
pub struct Caller {
    pub conn: ConnId,
    pub user: UserRef,
}

impl Caller {
    /// A join this socket asked for with request `id`: every tab of the person is
    /// told, this one with the answer.
    fn answering(&self, id: RequestId) -> TellJoin {
        TellJoin::EverySocketAnswering { conn: self.conn, id }
    }
}

pub struct Chat {
    store: Arc<dyn Store>,
    hub: Arc<Hub>,
    /// Orders what is numbered in a room, so events leave in sequence order and
    /// clients never see message 8 before message 7. A post holds it only while it
    /// joins the commit queue (posts are numbered and announced in that queue's
    /// order); joining and leaving hold it from waiting for the posts queued before
    /// them until their notice is announced (a join, until the person's tabs are
    /// told).
    room_locks: Stripes,
    /// A user's memberships change, and their sockets are registered with the hub,
    /// under this lock: a socket reads the user's rooms and subscribes to them as one
    /// step, so a join or leave racing with a new connection cannot leave that socket
    /// hearing a room it left or deaf to one it joined. Taken after a room lock.
    user_locks: Stripes,
    /// Pauses before the next try of membership checks that failed.
    check_retries: CheckRetries,
    limits: Limits,
    /// Most bytes of messages one page of history or catch-up carries, as
    /// [`encoded_bound`] counts them. Fifty of the longest texts escape to more than a
    /// socket may hold for its reader, and a reply too large to write dropped the
    /// socket of everyone who opened that room, again on each return.
    page_bytes: usize,
    /// Most public rooms one user may be in.
    rooms_per_user: u32,
    /// The room every account starts in.
    default_room: RoomId,
}

impl Chat {
    pub fn new(store: Arc<dyn Store>, hub: Arc<Hub>, limits: Limits, page_bytes: usize, rooms_per_user: u32, default_room: RoomId) -> Self {
        Chat {
            store,
            hub,
            room_locks: Stripes::new(),
            user_locks: Stripes::new(),
            check_retries: CheckRetries::default(),
            limits,
            page_bytes,
            rooms_per_user,
            default_room,
        }
    }

    /// The room every new account joins.
    pub fn default_room(&self) -> RoomId {
        self.default_room
    }

    /// Refuses joining or creating one more public room beyond the limit.
    async fn require_room_allowance(&self, user: &UserRef) -> Result<(), AppError> {
        let public = self.store.rooms_of(user.id).await?.iter().filter(|r| r.kind == RoomKind::Public).count();
        if public >= self.rooms_per_user as usize {
            return Err(AppError::Invalid(format!("You are in {public} rooms, the most allowed. Leave one to join another.")));
        }
        Ok(())
    }

    /// Registers a new socket with the hub, subscribed to the user's rooms, and
    /// returns the greeting listing those same rooms. Frames for the socket queue up
    /// from this moment, behind the greeting the caller writes first.
    pub async fn connect(&self, user: &UserRef, session_id: i64) -> Result<(ServerMsg, Connection), AppError> {
        let _memberships = self.user_locks.lock(user.id).await;
        let rooms = self.store.rooms_of(user.id).await?;
        #[cfg(feature = "test-hooks")]
        if user.username.starts_with(greeting_hook::PREFIX) {
            let hold = greeting_hook::hold(&user.username);
            hold.held.notify_one();
            hold.go_on.notified().await;
        }
        let room_ids: Vec<RoomId> = rooms.iter().map(|room| room.id).collect();
        // What the greeting shows is where catching up after a lost event starts.
        let greeted: Vec<(RoomId, i64)> = rooms.iter().map(|room| (room.id, room.last_seq)).collect();
        let (connection, missed) = self.hub.connect_greeted(user, session_id, &greeted);
        // A message announced after the rooms were read reached neither the greeting
        // nor this socket. Read now, anything later reaches the socket.
        let rooms = if missed {
            match self.store.rooms_of(user.id).await {
                Ok(rooms) => rooms,
                Err(err) => {
                    self.hub.disconnect(connection.id);
                    return Err(err.into());
                }
            }
        } else {
            rooms
        };
        let hello = ServerMsg::Hello {
            protocol: PROTOCOL_VERSION,
            server_time: unix_millis(),
            me: user.clone(),
            default_room: room_ids.contains(&self.default_room).then_some(self.default_room),
            rooms,
            limits: self.limits.clone(),
        };
        Ok((hello, connection))
    }

    /// Brings this node's sockets into line with the joins and leaves other nodes
    /// make, until `stop`. Each is read back from the database under the person's lock
    /// ([`Chat::check_membership`]): a leave in a tab on one node and a join in a tab on
    /// another reach the two nodes in opposite orders, and following each as it
    /// arrived left one node's tabs out of a room the person is in (or in one they
    /// left) until they reconnected. A few run at once, so one slow read does not hold
    /// up everyone else's; one that fails is queued again after a pause that grows with
    /// each failure of that person and room ([`CheckRetries`]).
    pub async fn run_membership_checks(self: Arc<Self>, stop: CancellationToken) {
        let running = Arc::new(Semaphore::new(CHECKS_AT_ONCE));
        loop {
            let (check, permit) = tokio::select! {
                () = stop.cancelled() => return,
                next = async {
                    let check = self.hub.next_membership_check().await;
                    (check, running.clone().acquire_owned().await)
                } => next,
            };
            let Ok(permit) = permit else { return };
            let (chat, stop) = (self.clone(), stop.clone());
            tokio::spawn(async move {
                let checked = chat.check_membership(check).await;
                drop(permit);
                match checked {
                    Ok(()) => chat.check_retries.succeeded(check),
                    Err(err) => {
                        metrics::membership_checked(MembershipOutcome::Failed);
                        let pause = chat.check_retries.failed(check);
                        let (user_id, room_id) = check.key();
                        tracing::warn!(user_id, room_id, error = %err, retry_in = ?pause, "could not check a membership changed on another node");
                        tokio::select! {
                            () = stop.cancelled() => {}
                            // Queued again: merged with any check of the pair waiting,
                            // and run within the limit like any other.
                            () = tokio::time::sleep(pause) => chat.hub.check_membership_later(check),
                        }
                    }
                }
            });
        }
    }

    /// Tells each of the person's sockets here that does not hear the room as the
    /// database has them (a member or not) of the join or leave, and makes it hear the
    /// room or not. Under the person's lock, so in order with what this node does for
    /// them (joins, leaves, greetings), each of which tells their sockets too.
    async fn check_membership(&self, check: MembershipCheck) -> StoreResult<()> {
        let MembershipCheck { user_id, room_id, joined_after, tell_every_socket: everyone } = check;
        let _memberships = self.user_locks.lock(user_id).await;
        let Some(following) = self.hub.following_here(user_id, room_id) else { return Ok(()) };
        let member = self.store.is_member(room_id, user_id).await?;
        match (member, following) {
            (true, Following::All) | (false, Following::None) if !everyone => {
                metrics::membership_checked(MembershipOutcome::Unchanged);
                Ok(())
            }
            (false, _) => {
                metrics::membership_checked(MembershipOutcome::Left);
                let mut left = self.hub.leave_here(user_id, room_id);
                if everyone {
                    left = self.hub.sockets_here(user_id);
                }
                self.hub.send_to_each(&left, &ServerMsg::RoomLeft { id: None, room_id });
                Ok(())
            }
            (true, _) => {
                let tell = if everyone { TellJoin::EverySocket } else { TellJoin::SocketsJoined };
                if self.join_here_told(user_id, room_id, joined_after, tell).await?.is_some() {
                    metrics::membership_checked(MembershipOutcome::Joined);
                }
                Ok(())
            }
        }
    }

    /// Makes the person's sockets here hear a room they are a member of and tells
    /// their tabs (as `tell` says) in one step, with a summary no older than the newest
    /// message announced here: a message between the two would reach a tab that does
    /// not show the room yet (and drops it), and miss the summary too. A room so busy
    /// that every read is overtaken: told with the last, and sent what came since. The
    /// summary told; `None` if they are not a member. Called under their lock.
    async fn join_here_told(&self, user_id: UserId, room_id: RoomId, joined_after: Option<Seq>, tell: TellJoin) -> StoreResult<Option<RoomSummary>> {
        let mut read = 1;
        loop {
            let Some(summary) = self.store.room_summary(room_id, user_id).await? else { return Ok(None) };
            if let Some((joined, not_live)) = self.hub.join_here_told(user_id, room_id, &summary, read == JOIN_READS, tell) {
                let after = joined_after.unwrap_or(summary.last_seq).min(summary.last_seq);
                self.send_messages_since_join(&joined, room_id, after, not_live).await;
                return Ok(Some(summary));
            }
            read += 1;
        }
    }

    /// Sends sockets just joined to a room the messages after `after` (the join) up to
    /// `through` (the last that will not reach them live), the newest
    /// [`SENT_SINCE_JOIN`] of them: they went out before these sockets heard the room,
    /// and a page notifies only of messages it is sent (the summary only counts them).
    /// A page fetches anything older it lacks when it opens the room.
    async fn send_messages_since_join(&self, joined: &[ConnId], room_id: RoomId, after: Seq, through: Seq) {
        if joined.is_empty() || through <= after {
            return;
        }
        match self.store.history_before(room_id, Some(through + 1), SENT_SINCE_JOIN).await {
            Ok(messages) => {
                for message in messages.into_iter().filter(|message| message.seq > after) {
                    self.hub.send_to_each(joined, &ServerMsg::Message { message });
                }
            }
            // The summary they were sent counts them.
            Err(err) => tracing::warn!(room_id, error = %err, "could not read the messages since a join"),
        }
    }

    /// Answers one request: the reply to send, if any (receipts and typing notices have
    /// none when they succeed; a sent message is acknowledged once it is committed). Failures become an error reply carrying the request id;
    /// nothing is changed by a request that fails.
    pub async fn handle(&self, caller: &Caller, msg: ClientMsg) -> Option<ServerMsg> {
        let id = msg.id();
        match self.dispatch(caller, msg).await {
            Ok(reply) => reply,
            Err(err) => Some(err.into_reply(id)),
        }
    }

    async fn dispatch(&self, caller: &Caller, msg: ClientMsg) -> Result<Option<ServerMsg>, AppError> {
        #[cfg(feature = "test-hooks")]
        if matches!(&msg, ClientMsg::Send { text, .. } if text == PANIC_FOR_TESTS) {
            panic!("test hook: a request that panics");
        }
        let reply = match msg {
            ClientMsg::Ping { id } => ServerMsg::Pong { id },
            ClientMsg::ListRooms { id } => ServerMsg::Rooms { id, rooms: self.store.public_rooms(caller.user.id, DIRECTORY_ROOMS).await? },
            // Answered from inside, in order with what the person's other tabs hear.
            ClientMsg::CreateRoom { id, name } => {
                self.create_room(caller, id, name.trim()).await?;
                return Ok(None);
            }
            ClientMsg::JoinRoom { id, room_id } => {
                self.join_room(caller, id, room_id).await?;
                return Ok(None);
            }
            ClientMsg::LeaveRoom { id, room_id } => {
                self.leave_room(caller, id, room_id).await?;
                return Ok(None);
            }
            ClientMsg::History { id, room_id, before_seq } => self.history(caller, id, room_id, before_seq).await?,
            ClientMsg::Catchup { id, room_id, after_seq } => self.catch_up(caller, id, room_id, after_seq).await?,
            ClientMsg::OpenDirect { id, user_id } => {
                self.open_direct(caller, id, user_id).await?;
                return Ok(None);
            }
            ClientMsg::FindUsers { id, query } => self.find_users(caller, id, &query).await?,
            ClientMsg::Online { id, room_id, after } => {
                // Answered from inside the hub, in order with presence notices.
                self.hub
                    .send_online_page(caller.conn, id, room_id, after.as_ref(), ONLINE_PAGE)
                    .map_err(|_| AppError::Forbidden("You are not a member of this room."))?;
                return Ok(None);
            }
            ClientMsg::Send { id, room_id, client_id, text } => {
                self.send(caller, id, room_id, &client_id, &text).await?;
                return Ok(None);
            }
            ClientMsg::Receipt { room_id, delivered_seq, read_seq, .. } => {
                self.receipt(caller, room_id, delivered_seq, read_seq).await?;
                return Ok(None);
            }
            ClientMsg::Typing { room_id, .. } => {
                self.typing(caller, room_id)?;
                return Ok(None);
            }
        };
        Ok(Some(reply))
    }

    async fn create_room(&self, caller: &Caller, id: u64, name: &str) -> Result<(), AppError> {
        validation::check_room_name(name).map_err(AppError::Invalid)?;
        self.require_room_allowance(&caller.user).await?;
        let _memberships = self.user_locks.lock(caller.user.id).await;
        let (room, notice) = match self.store.create_room(name, &caller.user, unix_millis()).await {
            Ok(created) => created,
            Err(StoreError::Conflict) => return Err(AppError::Conflict("A room with that name already exists.")),
            Err(err) => return Err(err.into()),
        };
        metrics::notice_stored();
        // Only the creator is in the room, and the notice is in its history, so
        // there is nobody to broadcast it to yet.
        self.hub.relay_join(caller.user.id, room.id, notice.seq);
        self.tell_tabs_joined(caller.user.id, room.id, Some(notice.seq), caller.answering(id)).await
    }

    async fn join_room(&self, caller: &Caller, id: u64, room_id: RoomId) -> Result<(), AppError> {
        let room = self.store.room(room_id).await?.ok_or(AppError::NotFound("No such room."))?;
        if room.kind != RoomKind::Public && !self.store.is_member(room_id, caller.user.id).await? {
            // Private conversations are not joinable, and do not admit they exist.
            return Err(AppError::NotFound("No such room."));
        }
        if !self.store.is_member(room_id, caller.user.id).await? {
            self.require_room_allowance(&caller.user).await?;
        }
        // Held until the tabs are told: no post of this node's is announced to the
        // room meanwhile, so a summary read is overtaken only by another node's.
        let _order = self.room_locks.lock(room_id).await;
        self.store.posts_settled().await?;
        let _memberships = self.user_locks.lock(caller.user.id).await;
        // `None`: a member already (joined on another node, whose event may not be
        // checked here yet, or in another tab). The tabs are told all the same.
        let joined_after = self.add_member_in_order(&caller.user, room_id).await?;
        self.tell_tabs_joined(caller.user.id, room_id, joined_after, caller.answering(id)).await
    }

    /// Makes `user` a member (if not already), announces the join to the room in
    /// sequence order with its other messages, and tells their tabs. Used for the
    /// default room of a new account.
    pub async fn add_member(&self, user: &UserRef, room_id: RoomId) -> Result<(), AppError> {
        let _order = self.room_locks.lock(room_id).await;
        self.store.posts_settled().await?;
        let _memberships = self.user_locks.lock(user.id).await;
        match self.add_member_in_order(user, room_id).await? {
            Some(joined_after) => self.tell_tabs_joined(user.id, room_id, Some(joined_after), TellJoin::EverySocket).await,
            None => Ok(()),
        }
    }

    /// Stores the membership and announces its notice, with the room's order and the
    /// person's memberships held: the notice, if they were not a member already.
    /// Their sockets do not hear it: they are told the room with it already in.
    async fn add_member_in_order(&self, user: &UserRef, room_id: RoomId) -> Result<Option<Seq>, AppError> {
        let Some(notice) = self.store.join(room_id, user, unix_millis()).await? else { return Ok(None) };
        let seq = notice.seq;
        metrics::notice_stored();
        self.hub.publish(room_id, &ServerMsg::Message { message: notice }, None);
        self.hub.relay_join(user.id, room_id, seq);
        Ok(Some(seq))
    }

    /// Tells the person's tabs here about a room they are in now, as they start to hear
    /// it ([`Chat::join_here_told`]). Called with their memberships locked where the
    /// room can be left, as [`Chat::leave_room`] tells its own: a join in one tab and
    /// a leave in another reach every tab here in the order they were done, so each
    /// shows what was done last (answered after the lock, the leave's reply could
    /// arrive after the join's notice, and that tab show the room left while the
    /// person is in it). If the room cannot be read, a membership check tells every
    /// socket once the database answers, with the messages after `joined_after`:
    /// otherwise their sockets would stay deaf to the room, and every later check find
    /// nothing to change.
    async fn tell_tabs_joined(&self, user_id: UserId, room_id: RoomId, joined_after: Option<Seq>, tell: TellJoin) -> Result<(), AppError> {
        if self.hub.following_here(user_id, room_id).is_none() {
            // No sockets here: each reads its rooms as it connects.
            return Ok(());
        }
        match self.join_here_told(user_id, room_id, joined_after, tell).await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(AppError::NotFound("No such room.")),
            Err(err) => {
                let check = MembershipCheck { tell_every_socket: true, ..MembershipCheck::joined(user_id, room_id, joined_after) };
                self.hub.check_membership_later(check);
                Err(err.into())
            }
        }
    }

    async fn leave_room(&self, caller: &Caller, id: u64, room_id: RoomId) -> Result<(), AppError> {
        if self.store.room(room_id).await?.is_some_and(|room| room.kind == RoomKind::Direct) {
            return Err(AppError::Invalid("A direct conversation cannot be left.".into()));
        }
        let order = self.room_locks.lock(room_id).await;
        // Posts queued before leaving are stored (or refused) before it.
        self.store.posts_settled().await?;
        let _memberships = self.user_locks.lock(caller.user.id).await;
        if let Some(notice) = self.store.leave(room_id, &caller.user, unix_millis()).await? {
            self.hub.leave(caller.user.id, room_id);
            metrics::notice_stored();
            self.hub.publish(room_id, &ServerMsg::Message { message: notice }, None);
        } else {
            // Not a member: left on another node, whose event may not be checked here
            // yet. The tabs are told below, so they must stop hearing the room now.
            self.hub.leave_here(caller.user.id, room_id);
        }
        drop(order);
        // See [`Chat::tell_tabs_joined`].
        self.hub.send_to_user_here(caller.user.id, &ServerMsg::RoomLeft { id: None, room_id }, Some(caller.conn));
        self.hub.send_to(caller.conn, &ServerMsg::RoomLeft { id: Some(id), room_id });
        Ok(())
    }

    /// Queues a message for storing; once it is committed it is broadcast and
    /// acknowledged to the sender (or refused), in the room's sequence order, so the
    /// sender never hears of message 8 before learning its own is number 7. Nothing
    /// here waits for the disk: the sender's next request is read meanwhile, and
    /// posts to one room share commits.
    async fn send(&self, caller: &Caller, id: u64, room_id: RoomId, client_id: &str, text: &str) -> Result<(), AppError> {
        let received = Instant::now();
        check_client_id(client_id)?;
        validation::check_message_text(text, self.limits.max_message_chars as usize).map_err(AppError::Invalid)?;
        let post = NewPost {
            room_id,
            sender: caller.user.clone(),
            client_id: client_id.to_owned(),
            text: text.to_owned(),
            now: unix_millis(),
        };
        let (hub, conn) = (self.hub.clone(), caller.conn);
        let announce = Box::new(move |outcome| announce_post(&hub, conn, id, room_id, received, outcome));
        // Membership is checked in the commit itself. Leaving takes this lock and waits
        // for posts queued before it, so a message cannot slip in after its sender left.
        let _order = self.room_locks.lock(room_id).await;
        self.store.queue_post(post, announce).await?;
        Ok(())
    }

    async fn history(&self, caller: &Caller, id: u64, room_id: RoomId, before_seq: Option<i64>) -> Result<ServerMsg, AppError> {
        let (messages, has_more) = self.history_page(&caller.user, room_id, before_seq).await?;
        let receipts = if before_seq.is_none() { self.store.receipts(room_id, RECEIPTS_SENT).await? } else { Vec::new() };
        Ok(ServerMsg::History { id, room_id, messages, has_more, receipts })
    }

    /// One page of a room's history for a member, oldest first, and whether older
    /// messages exist. Shared by the socket and the HTTP API.
    pub async fn history_page(&self, user: &UserRef, room_id: RoomId, before_seq: Option<i64>) -> Result<(Vec<ChatMessage>, bool), AppError> {
        self.require_member_id(user.id, room_id).await?;
        let page = self.limits.history_page;
        let mut messages = self.store.history_before(room_id, before_seq, page + 1).await?;
        let mut has_more = messages.len() > page as usize;
        if has_more {
            messages.remove(0);
        }
        let fitting = how_many_fit(messages.iter().rev(), self.page_bytes);
        if fitting < messages.len() {
            messages.drain(..messages.len() - fitting);
            has_more = true;
        }
        Ok((messages, has_more))
    }

    /// Pages of what a reconnecting client missed. Larger than history pages: catching
    /// up should take few round trips, and the client asks again while `has_more`.
    async fn catch_up(&self, caller: &Caller, id: u64, room_id: RoomId, after_seq: i64) -> Result<ServerMsg, AppError> {
        self.require_member(caller, room_id).await?;
        let page = self.limits.history_page * CATCHUP_PAGES;
        let mut messages = self.store.history_after(room_id, after_seq, page + 1).await?;
        let mut has_more = messages.len() > page as usize;
        messages.truncate(page as usize);
        let fitting = how_many_fit(messages.iter(), self.page_bytes);
        if fitting < messages.len() {
            messages.truncate(fitting);
            has_more = true;
        }
        // Positions that moved while the client was away come with the last page.
        let receipts = if has_more { Vec::new() } else { self.store.receipts(room_id, RECEIPTS_SENT).await? };
        metrics::caught_up(messages.len());
        Ok(ServerMsg::Catchup { id, room_id, messages, has_more, receipts })
    }

    async fn open_direct(&self, caller: &Caller, id: u64, peer_id: UserId) -> Result<(), AppError> {
        if peer_id == caller.user.id {
            return Err(AppError::Invalid("Pick someone else to talk to.".into()));
        }
        let peer = self.store.user(peer_id).await?.ok_or(AppError::NotFound("No such user."))?;
        let _memberships = self.user_locks.lock_pair(caller.user.id, peer.id).await;
        let (room, created) = self.store.open_direct(&caller.user, &peer, unix_millis()).await?;
        if created {
            self.hub.relay_join(caller.user.id, room.id, room.last_seq);
            self.hub.relay_join(peer.id, room.id, room.last_seq);
            // Told by a check if it cannot be read now; the caller is answered regardless.
            let _ = self.tell_tabs_joined(peer.id, room.id, Some(room.last_seq), TellJoin::EverySocket).await;
        }
        self.tell_tabs_joined(caller.user.id, room.id, created.then_some(room.last_seq), caller.answering(id)).await
    }

    async fn find_users(&self, caller: &Caller, id: u64, query: &str) -> Result<ServerMsg, AppError> {
        let query = query.trim();
        if query.is_empty() || query.chars().count() > app::validation::DISPLAY_NAME_MAX {
            return Ok(ServerMsg::Users { id, users: Vec::new() });
        }
        let mut users = self.store.find_users(query, USER_SEARCH_LIMIT + 1).await?;
        users.retain(|user| user.id != caller.user.id);
        users.truncate(USER_SEARCH_LIMIT as usize);
        Ok(ServerMsg::Users { id, users })
    }

    /// Moves the caller's positions forward and tells who needs to know: in a direct
    /// conversation both people (delivered and read ticks); in a room the caller's own
    /// other tabs (unread counts) and the authors of what was just read ("Seen by").
    /// Telling every member would cost members² frames when a room reads a message.
    async fn receipt(&self, caller: &Caller, room_id: RoomId, delivered: Option<i64>, read: Option<i64>) -> Result<(), AppError> {
        self.require_member(caller, room_id).await?;
        let room = self.store.room(room_id).await?.ok_or(AppError::NotFound("No such room."))?;
        let read_before = match room.kind {
            RoomKind::Public => self.store.member_positions(room_id, caller.user.id).await?.map_or(0, |(_, read)| read),
            RoomKind::Direct => 0,
        };
        let Some((delivered_seq, read_seq)) = self.store.advance_receipt(room_id, caller.user.id, delivered, read).await? else {
            return Ok(());
        };
        let event = ServerMsg::Receipt { room_id, user: caller.user.clone(), delivered_seq, read_seq };
        match room.kind {
            RoomKind::Direct => self.hub.publish(room_id, &event, None),
            RoomKind::Public => {
                let mut told = self.hub.authors_between(room_id, read_before, read_seq);
                told.push(caller.user.id);
                self.hub.send_to_users(&told, &event);
            }
        }
        Ok(())
    }

    fn typing(&self, caller: &Caller, room_id: RoomId) -> Result<(), AppError> {
        // The hub's subscriptions mirror membership, and typing is too frequent and too
        // unimportant for a database read each time.
        if !self.hub.is_subscribed(caller.conn, room_id) {
            return Err(AppError::Forbidden("You are not a member of this room."));
        }
        self.hub.typing(room_id, caller.user.id);
        Ok(())
    }

    async fn require_member(&self, caller: &Caller, room_id: RoomId) -> Result<(), AppError> {
        self.require_member_id(caller.user.id, room_id).await
    }

    async fn require_member_id(&self, user_id: UserId, room_id: RoomId) -> Result<(), AppError> {
        if self.store.is_member(room_id, user_id).await? {
            Ok(())
        } else {
            Err(AppError::Forbidden("You are not a member of this room."))
        }
    }
}

/// Tells the room about a committed message and its sender that it is stored, or
/// the sender why it was not. A retry (same client id) gets the original back; the
/// room is sent it again only if it never heard it (the hub skips what it sent): a
/// batch reported failed may have committed, and then its retry is the first anyone
/// hears of it.
fn announce_post(hub: &Hub, conn: ConnId, id: u64, room_id: RoomId, received: Instant, outcome: StoreResult<Posted>) {
    let committed_at = Instant::now();
    let message = match outcome {
        Ok(Posted::New(message)) => {
            metrics::text_stored(received);
            hub.publish_committed(room_id, &ServerMsg::Message { message: message.clone() }, Some(conn), Some(committed_at));
            message
        }
        Ok(Posted::Duplicate(message)) => {
            hub.publish_committed(room_id, &ServerMsg::Message { message: message.clone() }, Some(conn), None);
            message
        }
        Err(err) => {
            let refused = match err {
                StoreError::Conflict => AppError::Conflict("That client_id was already used for a message in another conversation."),
                // The room is gone or was never theirs.
                StoreError::NotMember | StoreError::NotFound => AppError::Forbidden("You are not a member of this room."),
                err => err.into(),
            };
            hub.send_to(conn, &refused.into_reply(id));
            return;
        }
    };
    hub.send_committed(conn, &ServerMsg::Sent { id, message }, Some(committed_at));
}

fn check_client_id(client_id: &str) -> Result<(), AppError> {
    if client_id.is_empty() || client_id.len() > MAX_CLIENT_ID_LEN || client_id.chars().any(char::is_control) {
        return Err(AppError::Invalid(format!(
            "client_id must be 1 to {MAX_CLIENT_ID_LEN} bytes without control characters."
        )));
    }
    Ok(())
}

/// At least the size of a message in JSON, whatever its texts hold, so a page
/// counted with it can never outgrow its budget. Cheaper than encoding the page
/// twice.
fn encoded_bound(message: &ChatMessage) -> usize {
    let sender = &message.sender;
    let texts = message.text.len() + sender.username.len() + sender.display_name.len() + message.client_id.as_ref().map_or(0, String::len);
    MESSAGE_FIELDS_BOUND + JSON_ESCAPE_BOUND * texts
}

/// How many of `messages`, taken in the order given, fit in `budget` bytes; at least
/// one when there is one, so a page always moves the reader on.
fn how_many_fit<'a>(messages: impl ExactSizeIterator<Item = &'a ChatMessage>, budget: usize) -> usize {
    let available = messages.len();
    let mut used = 0;
    let fitting = messages
        .take_while(|message| {
            used += encoded_bound(message);
            used <= budget
        })
        .count();
    fitting.max(available.min(1))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn client_ids_follow_their_rule_whatever_the_text(id in app::test_text::any_text()) {
            let allowed = !id.is_empty() && id.len() <= MAX_CLIENT_ID_LEN && !id.chars().any(char::is_control);
            prop_assert_eq!(check_client_id(&id).is_ok(), allowed);
        }

        #[test]
        fn no_message_encodes_larger_than_its_bound(
            text in app::test_text::any_text(),
            name in app::test_text::any_text(),
            client_id in proptest::option::of(app::test_text::any_text()),
        ) {
            let message = message_of(text, name, client_id);
            let encoded = serde_json::to_vec(&message).unwrap().len();
            prop_assert!(encoded <= encoded_bound(&message), "{encoded} > {}", encoded_bound(&message));
        }
    }

    fn message_of(text: String, name: String, client_id: Option<String>) -> ChatMessage {
        ChatMessage {
            id: i64::MIN,
            room_id: i64::MIN,
            seq: i64::MIN,
            kind: app::protocol::MessageKind::Joined,
            sender: UserRef { id: i64::MIN, username: name.clone(), display_name: name },
            client_id,
            text,
            sent_at: i64::MIN,
        }
    }

    #[test]
    fn the_longest_texts_escape_to_their_bound() {
        let message = message_of("\u{1}".repeat(4000), "\u{1f}".repeat(64), Some("\"".repeat(64)));
        let encoded = serde_json::to_vec(&message).unwrap().len();
        assert!(encoded <= encoded_bound(&message));
        assert!(encoded * 10 >= encoded_bound(&message) * 9, "the bound is not far above ({encoded})");
    }

    #[test]
    fn a_page_keeps_what_fits_and_always_one() {
        let short = message_of("a".into(), "ana".into(), None);
        let each = encoded_bound(&short);
        let page = vec![short.clone(), short.clone(), short];
        assert_eq!(how_many_fit(page.iter(), each * 3), 3);
        assert_eq!(how_many_fit(page.iter(), each * 3 - 1), 2);
        assert_eq!(how_many_fit(page.iter(), each - 1), 1, "one even when it alone is over");
        assert_eq!(how_many_fit(page[..0].iter(), 0), 0);
    }
}
