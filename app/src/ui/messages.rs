//! The message list: history that loads as you scroll up (without the view jumping),
//! follows new messages while you are at the bottom, and otherwise offers a
//! "new messages" button. Text is always inserted as text, never as HTML.

use leptos::{html::Div, prelude::*};

use super::{
    rows::{notices_summary, rows, Row},
    Avatar,
};
use crate::{
    client::{platform, ChatClient, Outgoing, Progress},
    protocol::{ChatMessage, MessageKind, RoomId, RoomKind, Seq, UserRef},
    text::{segments, Segment},
};

/// Within this many pixels of the bottom counts as "at the bottom".
const BOTTOM_SLACK_PX: i32 = 48;
/// Start loading older messages this close to the top.
const TOP_PREFETCH_PX: i32 = 200;

#[component]
pub fn MessageList(room_id: RoomId) -> impl IntoView {
    let chat = expect_context::<ChatClient>();
    let messages = Memo::new(move |_| {
        chat.timelines.with(|t| {
            t.get(&room_id).filter(|t| t.loaded).map(|t| t.messages().cloned().collect::<Vec<_>>()).unwrap_or_default()
        })
    });
    let shown_rows = Memo::new(move |_| {
        // Laid out again as messages come and as the person comes back to the page, each
        // time with the day it is now: on a page left open overnight, what said "Today"
        // says "Yesterday" by the time anyone looks or anything new arrives.
        chat.attentive.track();
        let today = Clock::now().local_day();
        messages.with(|m| rows(m, |message| Clock::from_millis(message.sent_at).local_day(), today))
    });
    let pending = Memo::new(move |_| chat.outbox.with(|o| o.iter().filter(|o| o.room_id == room_id).cloned().collect::<Vec<_>>()));
    let paging = Memo::new(move |_| {
        chat.timelines.with(|t| t.get(&room_id).map(|t| (t.loaded, t.has_more_before, t.loading_older)).unwrap_or_default())
    });
    let me = move || chat.me.with(|me| me.as_ref().map(|me| me.id));

    let list = NodeRef::<Div>::new();
    let at_bottom = RwSignal::new(true);
    let unseen = RwSignal::new(false);
    // Distance from the bottom before an older page was requested, restored after it
    // is drawn so the messages being read stay put.
    let anchor = StoredValue::new(None::<i32>);

    let scroll_to_bottom = move || {
        if let Some(el) = list.get_untracked() {
            el.set_scroll_top(el.scroll_height());
        }
        unseen.set(false);
        at_bottom.set(true);
    };
    let load_older = move || {
        let (loaded, has_more, loading) = paging.get_untracked();
        if loaded && has_more && !loading {
            if let Some(el) = list.get_untracked() {
                anchor.set_value(Some(el.scroll_height() - el.scroll_top()));
            }
            chat.load_older(room_id);
        }
    };
    // "At the bottom" changes only by the reader's hand: reaching the bottom sets it,
    // scrolling up clears it. Content growing under a programmatic scroll (a burst of
    // messages) can leave the view briefly short of the bottom; that must not count.
    let last_scroll_top = StoredValue::new(0);
    let on_scroll = move |_| {
        let Some(el) = list.get_untracked() else { return };
        let top = el.scroll_top();
        let scrolled_up = top < last_scroll_top.get_value();
        last_scroll_top.set_value(top);
        if el.scroll_height() - top - el.client_height() <= BOTTOM_SLACK_PX {
            at_bottom.set(true);
            unseen.set(false);
        } else if scrolled_up {
            at_bottom.set(false);
        }
        if top < TOP_PREFETCH_PX {
            load_older();
        }
    };

    // After each change to what is shown: keep the reading position when older
    // messages were added on top; follow the newest when at the bottom or when this tab
    // just sent something; otherwise point out that something new arrived. (A message
    // one wrote on another device does not yank this view.)
    let last_seen = StoredValue::new((None::<i64>, None::<i64>, 0usize));
    Effect::new(move |_| {
        let (first, last) = messages.with(|m| (m.first().map(|m| m.seq), m.last().map(|m| m.seq)));
        let pending_count = pending.with(Vec::len);
        let (old_first, old_last, old_pending) = last_seen.get_value();
        last_seen.set_value((first, last, pending_count));
        let Some(el) = list.get() else { return };
        // Measure and scroll once the new rows are laid out, before they are painted.
        if let Some(from_bottom) = anchor.get_value().filter(|_| first != old_first) {
            anchor.set_value(None);
            platform::before_next_paint(move || el.set_scroll_top(el.scroll_height() - from_bottom));
            return;
        }
        let grew = last != old_last;
        let sent_here = pending_count > old_pending;
        if sent_here || (grew && (at_bottom.get_untracked() || old_last.is_none())) {
            platform::before_next_paint(move || el.set_scroll_top(el.scroll_height()));
        } else if grew && old_last.is_some() {
            unseen.set(true);
        }
    });

    // What is on screen while the page has attention counts as read: the newest
    // message when the view is at the bottom.
    Effect::new(move |_| {
        let newest = messages.with(|m| m.last().map(|m| m.seq));
        if let (Some(seq), true, true, true) = (newest, at_bottom.get(), chat.attentive.get(), paging.get().0) {
            chat.mark_read(room_id, seq);
        }
    });

    let room = Memo::new(move |_| chat.rooms.with(|rooms| rooms.iter().find(|r| r.id == room_id).map(|r| (r.kind, r.peer.clone()))));
    let last_own = Memo::new(move |_| {
        let me = me();
        messages.with(|m| m.iter().rev().find(|m| Some(m.sender.id) == me && m.kind == MessageKind::Text).map(|m| m.seq))
    });
    let context = RowContext {
        me: Signal::derive(me),
        kind: Signal::derive(move || room.get().map_or(RoomKind::Public, |(kind, _)| kind)),
        peer: Signal::derive(move || room.get().and_then(|(_, peer)| peer)),
        last_own: last_own.into(),
    };

    view! {
        <div class="relative flex min-h-0 flex-1 flex-col">
            <div node_ref=list on:scroll=on_scroll class="min-h-0 flex-1 overflow-y-auto overscroll-contain px-3 py-4 sm:px-6" data-testid="message-scroller">
                <div class="mx-auto flex max-w-3xl flex-col gap-2">
                    {move || {
                        let (loaded, has_more, loading) = paging.get();
                        if !loaded {
                            view! { <p class="py-8 text-center text-sm text-slate-500">"Loading messages…"</p> }.into_any()
                        } else if has_more {
                            view! {
                                <button
                                    type="button"
                                    class="mx-auto rounded-full px-3 py-1 text-sm text-indigo-600 hover:bg-indigo-50 focus:outline-none focus-visible:ring-2 focus-visible:ring-indigo-500 dark:text-indigo-400 dark:hover:bg-slate-800"
                                    disabled=loading
                                    on:click=move |_| load_older()
                                >
                                    {if loading { "Loading older messages…" } else { "Load older messages" }}
                                </button>
                            }
                                .into_any()
                        } else {
                            view! { <p class="py-2 text-center text-xs text-slate-500">"This is the start of the room."</p> }.into_any()
                        }
                    }}
                    <div role="log" aria-live="polite" aria-relevant="additions" aria-label="Messages" class="flex flex-col gap-2">
                        <For each=move || shown_rows.get() key=Row::key let:row>
                            {match row {
                                Row::Day { day, today } => view! { <DaySeparator day=day today=today /> }.into_any(),
                                Row::Message { message, follows } => {
                                    view! { <MessageRow message=message follows=follows context=context /> }.into_any()
                                }
                                Row::Notices(notices) => view! { <NoticesRow notices=notices /> }.into_any(),
                            }}
                        </For>
                        <For each=move || pending.get() key=|o| (o.client_id.clone(), o.failed.clone()) let:item>
                            <PendingRow item=item />
                        </For>
                    </div>
                </div>
            </div>
            <Show when=move || unseen.get()>
                <button
                    type="button"
                    class="absolute bottom-3 left-1/2 -translate-x-1/2 rounded-full bg-indigo-600 px-4 py-1.5 text-sm font-medium text-white shadow-lg hover:bg-indigo-700 focus:outline-none focus-visible:ring-4 focus-visible:ring-indigo-400/60"
                    on:click=move |_| scroll_to_bottom()
                >
                    "New messages ↓"
                </button>
            </Show>
        </div>
    }
    .into_any()
}

/// What every row needs to know about the conversation it is in.
#[derive(Clone, Copy)]
struct RowContext {
    me: Signal<Option<i64>>,
    kind: Signal<RoomKind>,
    /// The other person, in a direct conversation.
    peer: Signal<Option<UserRef>>,
    /// The newest message from me, which carries "seen by" in a room.
    last_own: Signal<Option<Seq>>,
}

/// One message. Someone else's shows their name, time and face, or, continuing their
/// run (`follows`), only its time beside it, under the first one's name.
#[component]
fn MessageRow(message: ChatMessage, follows: bool, context: RowContext) -> impl IntoView {
    let chat = expect_context::<ChatClient>();
    let who = message.sender.display_name.clone();
    match message.kind {
        // Notices are shown by `NoticesRow`.
        MessageKind::Joined | MessageKind::Left => ().into_any(),
        MessageKind::Text => {
            let is_mine = context.me.get_untracked() == Some(message.sender.id);
            let time = Clock::from_millis(message.sent_at);
            let my_name = chat.me.with_untracked(|me| me.as_ref().map(|me| me.username.clone())).unwrap_or_default();
            let text = view! { <MessageText text=message.text.clone() my_username=my_name /> };
            if is_mine {
                let (room_id, seq, sender) = (message.room_id, message.seq, message.sender.id);
                view! {
                    <div data-testid="message" data-seq=message.seq data-own="true" class="flex justify-end">
                        <div class="max-w-[85%] rounded-2xl rounded-br-md bg-indigo-600 px-3 py-2 text-white shadow-sm sm:max-w-[75%]">
                            <span class="sr-only">"You said: "</span>
                            {text}
                            <p class="mt-0.5 flex items-center justify-end gap-1 text-[11px] text-indigo-100">
                                <MessageTime clock=time />
                                <OwnMessageStatus room_id=room_id seq=seq sender=sender context=context />
                            </p>
                        </div>
                    </div>
                }
                .into_any()
            } else if follows {
                view! {
                    <div data-testid="message" data-seq=message.seq data-own="false" data-follows="true" class="-mt-1 flex items-end gap-2">
                        // Where the face is on the run's first message.
                        <span aria-hidden="true" class="w-8 shrink-0"></span>
                        <div class="min-w-0 max-w-[85%] rounded-2xl rounded-bl-md bg-slate-100 px-3 py-2 text-slate-900 shadow-sm sm:max-w-[75%] dark:bg-slate-800 dark:text-slate-100">
                            <span class="sr-only">{format!("{who} said: ")}</span>
                            {text}
                        </div>
                        <span class="shrink-0 text-[11px] text-slate-500 dark:text-slate-400"><MessageTime clock=time /></span>
                    </div>
                }
                .into_any()
            } else {
                let sender_id = message.sender.id;
                let can_message = move || context.kind.get() == RoomKind::Public;
                view! {
                    <div data-testid="message" data-seq=message.seq data-own="false" class="flex items-end gap-2">
                        <Avatar name=who.clone() user_id=message.sender.id />
                        <div class="min-w-0 max-w-[85%] sm:max-w-[75%]">
                            <p class="mb-0.5 flex items-baseline gap-2 text-xs">
                                <button
                                    type="button"
                                    data-testid="sender"
                                    class="font-semibold text-slate-800 hover:underline focus:outline-none focus-visible:ring-2 focus-visible:ring-indigo-500 disabled:no-underline dark:text-slate-100"
                                    title=move || can_message().then(|| format!("Message {}", message.sender.display_name))
                                    disabled=move || !can_message()
                                    on:click=move |_| chat.open_direct(sender_id)
                                >
                                    {who.clone()}
                                </button>
                                <span class="text-slate-500 dark:text-slate-400"><MessageTime clock=time /></span>
                            </p>
                            <div class="rounded-2xl rounded-bl-md bg-slate-100 px-3 py-2 text-slate-900 shadow-sm dark:bg-slate-800 dark:text-slate-100">
                                <span class="sr-only">{format!("{who} said: ")}</span>
                                {text}
                            </div>
                        </div>
                    </div>
                }
                .into_any()
            }
        }
    }
}

/// A run of join and leave notices as one line.
#[component]
fn NoticesRow(notices: Vec<ChatMessage>) -> impl IntoView {
    let first_seq = notices.first().map_or(0, |n| n.seq);
    view! {
        <p data-testid="notice" data-seq=first_seq data-count=notices.len() class="my-1 text-center text-xs text-slate-500 dark:text-slate-400">
            <span class="rounded-full bg-slate-100 px-3 py-1 dark:bg-slate-800">{notices_summary(&notices)}</span>
        </p>
    }
}

/// "Today", "Yesterday" or the date, above a day's first message.
#[component]
fn DaySeparator(day: i64, today: i64) -> impl IntoView {
    let label = Clock::day_label(day, today);
    view! {
        <div role="separator" data-testid="day" class="my-2 flex items-center gap-3 text-xs font-medium text-slate-500 dark:text-slate-400">
            <span class="h-px flex-1 bg-slate-200 dark:bg-slate-700" aria-hidden="true"></span>
            <span>{label}</span>
            <span class="h-px flex-1 bg-slate-200 dark:bg-slate-700" aria-hidden="true"></span>
        </div>
    }
}

/// A message's time: hours and minutes, the full date and time on hover, and on a tap
/// (phones have no hover).
#[component]
fn MessageTime(clock: Clock) -> impl IntoView {
    let full = clock.full();
    let expanded = RwSignal::new(false);
    let short = clock.hh_mm();
    let long = full.clone();
    view! {
        <time
            datetime=clock.iso()
            title=full.clone()
            aria-label=full
            data-testid="time"
            class="cursor-default tabular-nums"
            on:click=move |_| expanded.update(|e| *e = !*e)
        >
            {move || if expanded.get() { long.clone() } else { short.clone() }}
        </time>
    }
}

/// Message text, with `@mentions` highlighted (one's own more strongly) and web
/// addresses as links. Every part is inserted as text, never parsed as HTML.
#[component]
fn MessageText(text: String, my_username: String) -> impl IntoView {
    let parts: Vec<_> = segments(&text)
        .into_iter()
        .map(|segment| {
            let part = segment.as_str().to_string();
            match segment {
                Segment::Plain(_) => view! { <span>{part}</span> }.into_any(),
                Segment::Mention(_) => {
                    let mine = segment.mentioned().is_some_and(|name| name.eq_ignore_ascii_case(&my_username));
                    let look = if mine {
                        "rounded bg-amber-300 px-0.5 font-semibold text-slate-900"
                    } else {
                        "rounded bg-black/10 px-0.5 font-medium dark:bg-white/10"
                    };
                    view! { <mark data-testid="mention" data-me=mine.to_string() class=look>{part}</mark> }.into_any()
                }
                Segment::Link(address) => view! {
                    <a
                        data-testid="link"
                        href=address.to_string()
                        target="_blank"
                        rel="noopener noreferrer nofollow"
                        class="underline decoration-1 underline-offset-2 break-all hover:decoration-2 [unicode-bidi:isolate]"
                    >
                        {part}
                    </a>
                }
                .into_any(),
            }
        })
        .collect();
    // `dir="auto"`: a message in Hebrew or Arabic reads right to left, and its marks
    // cannot spill into the rest of the page.
    view! { <p data-testid="text" dir="auto" class="whitespace-pre-wrap break-words">{parts}</p> }
}

/// Under one's own message: in a direct conversation, stored → delivered → read; in
/// a room, on the newest one, who has seen it.
#[component]
fn OwnMessageStatus(room_id: RoomId, seq: Seq, sender: i64, context: RowContext) -> impl IntoView {
    let chat = expect_context::<ChatClient>();
    move || match (context.kind.get(), context.peer.get()) {
        (RoomKind::Direct, Some(peer)) => {
            let progress = chat.progress(room_id, peer.id, seq);
            let (marker, label, look) = match progress {
                Progress::Stored => ("sent", "Sent", "text-indigo-200"),
                Progress::Delivered => ("delivered", "Delivered", "text-indigo-100"),
                Progress::Read => ("read", "Read", "text-sky-300"),
            };
            let ticks = if progress == Progress::Stored { "✓" } else { "✓✓" };
            view! {
                <span data-testid="receipt" data-receipt=marker class=format!("font-semibold {look}") title=label>
                    <span aria-hidden="true">{ticks}</span>
                    <span class="sr-only">{label}</span>
                </span>
            }
            .into_any()
        }
        _ if context.last_own.get() == Some(seq) => {
            let readers = chat.seen_by(room_id, sender, seq);
            if readers.is_empty() {
                return ().into_any();
            }
            let count = readers.len();
            view! {
                <details data-testid="seen-by" class="relative">
                    <summary class="cursor-pointer list-none underline decoration-dotted">{format!("Seen by {count}")}</summary>
                    <ul class="absolute right-0 z-10 mt-1 w-44 rounded-lg bg-white p-2 text-left text-xs text-slate-800 shadow-lg ring-1 ring-slate-200 dark:bg-slate-900 dark:text-slate-100 dark:ring-slate-700">
                        {readers.into_iter().map(|user| view! { <li class="truncate">{user.display_name}</li> }).collect_view()}
                    </ul>
                </details>
            }
            .into_any()
        }
        _ => ().into_any(),
    }
}

/// One's own message before the server has stored it.
#[component]
fn PendingRow(item: Outgoing) -> impl IntoView {
    let chat = expect_context::<ChatClient>();
    let failed = item.failed.clone();
    let colour = if failed.is_some() { "bg-rose-600" } else { "bg-indigo-400 dark:bg-indigo-700" };
    let client_id = item.client_id.clone();
    let retry_id = client_id.clone();
    view! {
        <div data-testid="pending" data-failed=item.failed.is_some().to_string() class="flex justify-end">
            <div class=format!(
                "max-w-[85%] rounded-2xl rounded-br-md px-3 py-2 text-white shadow-sm sm:max-w-[75%] {}",
                colour,
            )>
                <p dir="auto" class="whitespace-pre-wrap break-words">{item.text.clone()}</p>
                {match failed {
                    None => view! { <p class="mt-0.5 text-right text-[11px] text-indigo-50">"Sending…"</p> }.into_any(),
                    Some(reason) => view! {
                        <p class="mt-1 text-xs">{format!("Not sent: {reason}")}</p>
                        <div class="mt-1 flex justify-end gap-2 text-xs font-semibold">
                            <button type="button" class="underline" on:click=move |_| chat.retry(&retry_id)>"Retry"</button>
                            <button type="button" class="underline" on:click=move |_| chat.discard(&client_id)>"Discard"</button>
                        </div>
                    }
                        .into_any(),
                }}
            </div>
        </div>
    }
}

/// A message time: local time in the browser; UTC on the server (which never renders
/// messages, as they arrive over the socket after hydration).
#[derive(Debug, Clone, Copy)]
struct Clock {
    millis: i64,
}

const DAY_MS: i64 = 86_400_000;

impl Clock {
    fn from_millis(millis: i64) -> Self {
        Clock { millis }
    }

    fn now() -> Self {
        #[cfg(feature = "hydrate")]
        {
            Clock { millis: js_sys::Date::now() as i64 }
        }
        #[cfg(not(feature = "hydrate"))]
        {
            let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            Clock { millis: since_epoch.as_millis() as i64 }
        }
    }

    /// Minutes east of UTC at this moment, where the browser is.
    fn utc_offset_minutes(&self) -> i64 {
        #[cfg(feature = "hydrate")]
        {
            -(self.js_date().get_timezone_offset() as i64)
        }
        #[cfg(not(feature = "hydrate"))]
        {
            0
        }
    }

    #[cfg(feature = "hydrate")]
    fn js_date(&self) -> js_sys::Date {
        js_sys::Date::new(&wasm_bindgen::JsValue::from_f64(self.millis as f64))
    }

    /// The local day this time falls on, counted from 1970-01-01.
    fn local_day(&self) -> i64 {
        (self.millis + self.utc_offset_minutes() * 60_000).div_euclid(DAY_MS)
    }

    /// "Today", "Yesterday", or the date in the browser's language.
    fn day_label(day: i64, today: i64) -> String {
        match today - day {
            0 => "Today".to_string(),
            1 => "Yesterday".to_string(),
            _ => {
                // Noon of that day, so the offset of the day itself applies.
                let noon = Clock { millis: day * DAY_MS + DAY_MS / 2 };
                let noon = Clock { millis: noon.millis - noon.utc_offset_minutes() * 60_000 };
                noon.date()
            }
        }
    }

    /// The date, written the way the browser's language writes it.
    fn date(&self) -> String {
        #[cfg(feature = "hydrate")]
        {
            let options = js_sys::Object::new();
            for (key, value) in [("weekday", "long"), ("year", "numeric"), ("month", "long"), ("day", "numeric")] {
                let _ = js_sys::Reflect::set(&options, &key.into(), &value.into());
            }
            self.js_date().to_locale_date_string("default", &options).into()
        }
        #[cfg(not(feature = "hydrate"))]
        {
            self.iso().split('T').next().unwrap_or_default().to_string()
        }
    }

    /// Date and time in full, for hovering or tapping a message's time.
    fn full(&self) -> String {
        format!("{} {}", self.date(), self.hh_mm())
    }

    fn hh_mm(&self) -> String {
        #[cfg(feature = "hydrate")]
        {
            let date = self.js_date();
            format!("{:02}:{:02}", date.get_hours(), date.get_minutes())
        }
        #[cfg(not(feature = "hydrate"))]
        {
            let minutes = self.millis.div_euclid(60_000);
            format!("{:02}:{:02}", minutes.div_euclid(60).rem_euclid(24), minutes.rem_euclid(60))
        }
    }

    /// ISO 8601 in UTC, for the `datetime` attribute.
    fn iso(&self) -> String {
        let seconds = self.millis.div_euclid(1000);
        let (days, of_day) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
        let (year, month, day) = civil_from_days(days);
        format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", of_day / 3600, of_day / 60 % 60, of_day % 60)
    }
}

/// Year, month and day of a count of days since 1970-01-01 in the proleptic Gregorian
/// calendar (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_times_are_utc() {
        assert_eq!(Clock::from_millis(0).iso(), "1970-01-01T00:00:00Z");
        assert_eq!(Clock::from_millis(1_709_210_096_000).iso(), "2024-02-29T12:34:56Z");
        assert_eq!(Clock::from_millis(951_782_400_000).iso(), "2000-02-29T00:00:00Z");
    }
}
