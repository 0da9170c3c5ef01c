//! The chat screen: sidebar (a drawer on phones), room header, messages, composer.

use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::{use_navigate, use_params_map};

use super::{composer::Composer, messages::MessageList, sidebar::Sidebar, Avatar};
use crate::{
    client::{platform, sidebar_name, ChatClient, ConnState},
    protocol::{RoomId, RoomKind, RoomSummary},
};

/// What the URL asks to show.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// `/`: the default room.
    Default,
    /// `/r/<name>`
    Room(String),
    /// `/dm/<username>`
    Direct(String),
}

#[component]
pub fn ChatPage() -> impl IntoView {
    let chat = expect_context::<ChatClient>();
    Effect::new(move |_| chat.start());

    let params = use_params_map();
    let target = Memo::new(move |_| {
        params.with(|p| match (p.get("room"), p.get("user")) {
            (Some(room), _) => Target::Room(room),
            (None, Some(user)) => Target::Direct(user),
            (None, None) => Target::Default,
        })
    });
    let current_id: Memo<Option<RoomId>> = Memo::new(move |_| match target.get() {
        Target::Room(name) => chat.room_by_name(&name).map(|room| room.id),
        Target::Direct(username) => chat.direct_with(&username).map(|room| room.id),
        // The server's default room if the user is in it, or else their first room.
        Target::Default => {
            let default_room = chat.default_room.get();
            chat.rooms.with(|rooms| {
                let mut public = rooms.iter().filter(|room| room.kind == RoomKind::Public);
                let default = public.clone().find(|room| Some(room.id) == default_room);
                default.or_else(|| public.next()).map(|room| room.id)
            })
        }
    });
    let current: Signal<Option<RoomSummary>> =
        Signal::derive(move || current_id.get().and_then(|id| chat.rooms.with(|r| r.iter().find(|r| r.id == id).cloned())));

    // Load the conversation's history and who is online there once connected (and
    // again after each reconnect).
    Effect::new(move |_| {
        if let (Some(room_id), ConnState::Online) = (current_id.get(), chat.conn.get()) {
            chat.open_room(room_id);
            chat.watch_presence(room_id);
        }
    });
    let drawer_open = RwSignal::new(false);
    let navigate = use_navigate();
    Effect::new(move |_| {
        if let Some(path) = chat.goto.get() {
            chat.goto.set(None);
            // What was joined, created or found shows, not the drawer (on a phone) it
            // was asked for from.
            drawer_open.set(false);
            navigate(&path, Default::default());
        }
    });
    let menu_button = NodeRef::<leptos::html::Button>::new();
    let title = move || {
        // The server renders the head after the body, when this page's reactive
        // values may already be disposed; its model is empty anyway, so the title is
        // the plain name there, as it is in the browser until the socket connects.
        if cfg!(feature = "ssr") {
            return "Parley".to_string();
        }
        let unread = chat.total_unread();
        let place = current.with(|room| room.as_ref().map(|room| match room.kind {
            RoomKind::Direct => sidebar_name(room),
            RoomKind::Public => format!("#{}", room.name),
        }));
        let prefix = if unread > 0 { format!("({unread}) ") } else { String::new() };
        match place {
            Some(place) => format!("{prefix}{place} · Parley"),
            None => format!("{prefix}Parley"),
        }
    };

    view! {
        <Title text=title />
        <div class="flex h-dvh overflow-hidden bg-white text-slate-900 dark:bg-slate-950 dark:text-slate-100">
            <Sidebar open=drawer_open current=current_id.into() menu_button=menu_button />
            // While the drawer covers it on a phone, the page behind cannot be reached.
            <main class="relative flex min-w-0 flex-1 flex-col" inert=move || drawer_open.get()>
                <RoomHeader room=current drawer_open=drawer_open menu_button=menu_button />
                <AlertBar />
                <OutdatedBar />
                {move || match current_id.get() {
                    Some(room_id) => view! {
                        <MessageList room_id=room_id />
                        <Composer room_id=room_id />
                    }
                        .into_any(),
                    None => view! { <NotAMember target=target.into() /> }.into_any(),
                }}
            </main>
        </div>
    }
    .into_any()
}

#[component]
fn RoomHeader(
    room: Signal<Option<RoomSummary>>,
    drawer_open: RwSignal<bool>,
    menu_button: NodeRef<leptos::html::Button>,
) -> impl IntoView {
    let chat = expect_context::<ChatClient>();
    let room_id = Signal::derive(move || room.with(|r| r.as_ref().map(|r| r.id)));
    view! {
        <header class="flex items-center gap-2 border-b border-slate-200 px-3 py-2 dark:border-slate-800">
            <button
                type="button"
                node_ref=menu_button
                class="rounded-lg p-2 hover:bg-slate-100 focus:outline-none focus-visible:ring-2 focus-visible:ring-indigo-500 md:hidden dark:hover:bg-slate-800"
                aria-label="Open rooms"
                aria-controls="sidebar"
                aria-expanded=move || drawer_open.get().to_string()
                on:click=move |_| drawer_open.set(true)
            >
                <svg aria-hidden="true" viewBox="0 0 24 24" class="h-6 w-6" fill="none" stroke="currentColor" stroke-width="2">
                    <path stroke-linecap="round" d="M4 6h16M4 12h16M4 18h16" />
                </svg>
            </button>
            <h1 class="min-w-0 flex-1 truncate text-lg font-semibold" data-testid="room-title">
                {move || {
                    room.with(|r| {
                        r.as_ref()
                            .map(|r| match r.kind {
                                RoomKind::Direct => sidebar_name(r),
                                RoomKind::Public => format!("#{}", r.name),
                            })
                            .unwrap_or_default()
                    })
                }}
            </h1>
            {move || room_id.get().map(|room_id| view! { <OnlineList room_id=room_id /> })}
            <ConnectionBadge />
            <Show when=move || room.with(|r| r.as_ref().is_some_and(|r| r.kind == RoomKind::Public))>
                <button
                    type="button"
                    class="rounded-lg px-2 py-1 text-sm text-slate-600 hover:bg-slate-100 focus:outline-none focus-visible:ring-2 focus-visible:ring-indigo-500 dark:text-slate-300 dark:hover:bg-slate-800"
                    on:click=move |_| {
                        if let Some(id) = room_id.get_untracked() {
                            chat.leave_room(id);
                        }
                    }
                >
                    "Leave"
                </button>
            </Show>
        </header>
    }
    .into_any()
}

/// "N online", opening to the people online by name, a page at a time. In a crowded
/// room the names are not kept current live; opening the list fetches them afresh.
#[component]
fn OnlineList(room_id: RoomId) -> impl IntoView {
    let chat = expect_context::<ChatClient>();
    let here = Memo::new(move |_| chat.presence.with(|p| p.get(&room_id).cloned().unwrap_or_default()));
    let details = NodeRef::<leptos::html::Details>::new();
    let on_toggle = move |_| {
        let opened = details.get_untracked().is_some_and(|el| el.open());
        if opened && !here.with_untracked(|p| p.current) {
            chat.watch_presence(room_id);
        }
    };
    view! {
        <details class="relative" data-testid="presence" node_ref=details on:toggle=on_toggle>
            <summary class="cursor-pointer list-none rounded-full px-2 py-1 text-sm text-slate-600 hover:bg-slate-100 focus:outline-none focus-visible:ring-2 focus-visible:ring-indigo-500 dark:text-slate-300 dark:hover:bg-slate-800">
                <span class="mr-1 inline-block h-2 w-2 rounded-full bg-emerald-500" aria-hidden="true"></span>
                {move || format!("{} online", here.with(|p| p.total))}
            </summary>
            <div class="absolute right-0 z-20 mt-2 w-60 rounded-xl bg-white p-2 shadow-lg ring-1 ring-slate-200 dark:bg-slate-900 dark:ring-slate-700">
                <ul class="max-h-72 overflow-y-auto" data-testid="online-list">
                    <For each=move || here.get().listed key=|user| user.id let:user>
                        <li class="flex items-center gap-2 rounded-lg px-2 py-1 text-sm">
                            <Avatar name=user.display_name.clone() user_id=user.id small=true />
                            <span class="truncate" data-testid="online-name">{user.display_name.clone()}</span>
                        </li>
                    </For>
                </ul>
                <Show when=move || here.with(|p| p.has_more)>
                    <button
                        type="button"
                        class="mt-1 w-full rounded-lg px-2 py-1 text-sm text-indigo-600 hover:bg-indigo-50 focus:outline-none focus-visible:ring-2 focus-visible:ring-indigo-500 dark:text-indigo-400 dark:hover:bg-slate-800"
                        on:click=move |_| chat.more_online(room_id)
                    >
                        {move || here.with(|p| format!("Show more ({} not listed)", p.total as usize - p.listed.len().min(p.total as usize)))}
                    </button>
                </Show>
            </div>
        </details>
    }
}

#[component]
fn ConnectionBadge() -> impl IntoView {
    let chat = expect_context::<ChatClient>();
    let look = move || match chat.conn.get() {
        ConnState::Connecting => ("connecting", "Connecting…", "bg-amber-400"),
        ConnState::Online => ("online", "Online", "bg-emerald-500"),
        ConnState::Reconnecting => ("reconnecting", "Reconnecting…", "bg-amber-500 animate-pulse"),
        ConnState::SignedOut => ("signed-out", "Signed out", "bg-slate-400"),
        ConnState::Outdated => ("outdated", "Out of date", "bg-slate-400"),
    };
    view! {
        <span
            role="status"
            data-testid="connection-state"
            data-state=move || look().0
            class="flex items-center gap-1.5 whitespace-nowrap rounded-full px-2 py-1 text-xs text-slate-600 dark:text-slate-300"
        >
            <span aria-hidden="true" class=move || format!("inline-block h-2 w-2 rounded-full {}", look().2)></span>
            <span class="hidden sm:inline">{move || look().1}</span>
            <span class="sr-only sm:hidden">{move || look().1}</span>
        </span>
    }
}

#[component]
fn AlertBar() -> impl IntoView {
    let chat = expect_context::<ChatClient>();
    view! {
        <div role="alert" class="empty:hidden">
            {move || {
                chat.alert
                    .get()
                    .map(|message| {
                        view! {
                            <div class="flex items-center gap-2 bg-rose-50 px-4 py-2 text-sm text-rose-800 dark:bg-rose-950 dark:text-rose-200">
                                <span class="flex-1">{message}</span>
                                <button type="button" class="rounded px-2 font-medium hover:underline" on:click=move |_| chat.alert.set(None)>
                                    "Dismiss"
                                </button>
                            </div>
                        }
                    })
            }}
        </div>
    }
}

/// Shown once the server has said this page speaks an older protocol (a deploy
/// happened while it was open): the socket stays closed until the page is reloaded.
#[component]
fn OutdatedBar() -> impl IntoView {
    let chat = expect_context::<ChatClient>();
    view! {
        <Show when=move || chat.conn.get() == ConnState::Outdated>
            <div
                role="alert"
                class="flex items-center gap-3 bg-amber-50 px-4 py-2 text-sm text-amber-900 dark:bg-amber-950 dark:text-amber-100"
            >
                <span class="flex-1">
                    "Parley was updated while this page was open. Reload to keep chatting."
                    {move || match chat.outbox.with(Vec::len) {
                        0 => String::new(),
                        1 => " The message not sent yet would be lost: copy it first.".to_string(),
                        unsent => format!(" The {unsent} messages not sent yet would be lost: copy them first."),
                    }}
                </span>
                <button
                    type="button"
                    class="rounded-lg bg-indigo-600 px-3 py-1 font-semibold text-white hover:bg-indigo-700 focus:outline-none focus-visible:ring-4 focus-visible:ring-indigo-400/60"
                    on:click=|_| platform::reload_page()
                >
                    "Reload"
                </button>
            </div>
        </Show>
    }
}

/// Shown when the URL names a conversation the user is not in: join the room or start
/// the conversation, or learn that it does not exist.
#[component]
fn NotAMember(target: Signal<Target>) -> impl IntoView {
    let chat = expect_context::<ChatClient>();
    Effect::new(move |_| {
        if chat.conn.get() != ConnState::Online {
            return;
        }
        match target.get() {
            Target::Room(_) if chat.directory.with_untracked(Option::is_none) => chat.browse_rooms(),
            Target::Direct(username) => chat.find_users(username),
            _ => {}
        }
    });
    let room = move || match target.get() {
        Target::Room(name) => chat.directory.with(|dir| dir.as_ref()?.iter().find(|r| r.name.eq_ignore_ascii_case(&name)).cloned()),
        _ => None,
    };
    let person = move || match target.get() {
        Target::Direct(username) => {
            chat.found_users.with(|found| found.as_ref()?.iter().find(|u| u.username.eq_ignore_ascii_case(&username)).cloned())
        }
        _ => None,
    };
    let searched = move || match target.get() {
        Target::Room(_) => chat.directory.with(Option::is_some),
        Target::Direct(_) => chat.found_users.with(Option::is_some),
        Target::Default => true,
    };
    const BUTTON: &str = "rounded-lg bg-indigo-600 px-4 py-2 font-semibold text-white hover:bg-indigo-700 focus:outline-none focus-visible:ring-4 focus-visible:ring-indigo-400/60";
    view! {
        <div class="flex flex-1 flex-col items-center justify-center gap-4 p-6 text-center">
            {move || {
                if chat.conn.get() == ConnState::Connecting {
                    return view! { <p class="text-slate-500">"Loading…"</p> }.into_any();
                }
                if let Some(room) = room() {
                    return view! {
                        <p class="text-lg">{format!("You are not a member of #{}.", room.name)}</p>
                        <button type="button" class=BUTTON on:click=move |_| chat.join_room(room.id)>
                            {format!("Join #{}", room.name)}
                        </button>
                    }
                        .into_any();
                }
                if let Some(person) = person() {
                    return view! {
                        <p class="text-lg">{format!("No messages with {} yet.", person.display_name)}</p>
                        <button type="button" class=BUTTON on:click=move |_| chat.open_direct(person.id)>
                            {format!("Message {}", person.display_name)}
                        </button>
                    }
                        .into_any();
                }
                let message = match (target.get(), searched()) {
                    (_, false) => "Loading…".to_string(),
                    (Target::Room(name), true) => format!("There is no room called #{name}."),
                    (Target::Direct(username), true) => format!("There is no one called @{username}."),
                    (Target::Default, true) => "You are not in any room yet. Create one or browse the rooms.".to_string(),
                };
                view! { <p class="text-lg">{message}</p> }.into_any()
            }}
        </div>
    }
    .into_any()
}
