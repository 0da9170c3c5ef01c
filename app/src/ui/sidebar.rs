//! Rooms the user is in, creating and browsing rooms, and the account menu.
//! Side by side with the messages on wide screens; a drawer on phones.

use leptos::{prelude::*, server_fn::ServerFn};
use leptos_router::components::A;

use super::{form_post::FormPost, Avatar};
use crate::{
    auth::Logout,
    client::{room_path, sidebar_name, ChatClient},
    protocol::{RoomId, RoomKind},
    validation::check_room_name,
};

const SECTION_TITLE: &str = "px-3 text-xs font-semibold uppercase tracking-wide text-slate-500 dark:text-slate-400";
const SMALL_BUTTON: &str = "rounded-lg px-3 py-1.5 text-sm font-medium focus:outline-none focus-visible:ring-2 focus-visible:ring-indigo-500";

/// On a phone the sidebar is a drawer: opening it moves focus into it, Escape closes
/// it, and closing gives focus back to the menu button that opened it (the page
/// behind is inert meanwhile; see the chat page).
#[component]
pub fn Sidebar(open: RwSignal<bool>, current: Signal<Option<RoomId>>, menu_button: NodeRef<leptos::html::Button>) -> impl IntoView {
    let close = move || open.set(false);
    let close_button = NodeRef::<leptos::html::Button>::new();
    Effect::new(move |was_open: Option<bool>| {
        let is_open = open.get();
        // After the frame's styles apply: a button that is still `visibility: hidden`
        // cannot take focus. Leptos cancels the callback if this effect runs again or
        // the sidebar goes first, which is right: focus follows only the latest state.
        if is_open {
            _ = request_animation_frame(move || {
                if let Some(button) = close_button.get_untracked() {
                    let _ = button.focus();
                }
            });
        } else if was_open == Some(true) {
            _ = request_animation_frame(move || {
                if let Some(button) = menu_button.get_untracked() {
                    let _ = button.focus();
                }
            });
        }
        is_open
    });
    let escape = window_event_listener(leptos::ev::keydown, move |ev| {
        if ev.key() == "Escape" && open.get_untracked() {
            open.set(false);
        }
    });
    on_cleanup(move || escape.remove());
    let position = move || {
        if open.get() {
            "translate-x-0 visible"
        } else {
            "-translate-x-full invisible md:visible"
        }
    };
    view! {
        <Show when=move || open.get()>
            <div class="fixed inset-0 z-30 bg-black/40 md:hidden" aria-hidden="true" on:click=move |_| close()></div>
        </Show>
        <aside
            id="sidebar"
            aria-label="Rooms"
            data-open=move || open.get().to_string()
            class=move || {
                format!(
                    "fixed inset-y-0 left-0 z-40 flex w-72 max-w-[85vw] flex-col border-r border-slate-200 bg-slate-50 \
                     transition-transform duration-200 dark:border-slate-800 dark:bg-slate-900 \
                     md:static md:z-auto md:max-w-none md:translate-x-0 {}",
                    position(),
                )
            }
        >
            <div class="flex items-center justify-between px-4 py-3">
                <span class="text-xl font-bold tracking-tight text-indigo-600 dark:text-indigo-400">"Parley"</span>
                <button
                    type="button"
                    node_ref=close_button
                    class="rounded-lg p-2 hover:bg-slate-200 focus:outline-none focus-visible:ring-2 focus-visible:ring-indigo-500 md:hidden dark:hover:bg-slate-800"
                    aria-label="Close rooms"
                    on:click=move |_| close()
                >
                    <svg aria-hidden="true" viewBox="0 0 24 24" class="h-5 w-5" fill="none" stroke="currentColor" stroke-width="2">
                        <path stroke-linecap="round" d="M6 6l12 12M18 6L6 18" />
                    </svg>
                </button>
            </div>
            <div class="flex-1 space-y-6 overflow-y-auto px-2 pb-4">
                <ConversationList kind=RoomKind::Public current=current on_pick=close />
                <ConversationList kind=RoomKind::Direct current=current on_pick=close />
                <NewDirectForm />
                <NewRoomForm />
                <RoomDirectory />
            </div>
            <AccountFooter />
        </aside>
    }
    .into_any()
}

/// The user's rooms, or their direct conversations, with unread counts.
#[component]
fn ConversationList(kind: RoomKind, current: Signal<Option<RoomId>>, on_pick: impl Fn() + Copy + Send + Sync + 'static) -> impl IntoView {
    let chat = expect_context::<ChatClient>();
    let (heading_id, heading, empty) = match kind {
        RoomKind::Public => ("rooms-heading", "Rooms", "No rooms yet."),
        RoomKind::Direct => ("direct-heading", "Direct messages", "No conversations yet."),
    };
    let entries = move || chat.rooms.with(|rooms| rooms.iter().filter(|r| r.kind == kind).cloned().collect::<Vec<_>>());
    view! {
        <nav aria-labelledby=heading_id>
            <h2 id=heading_id class=SECTION_TITLE>{heading}</h2>
            <ul class="mt-2 space-y-0.5" data-testid=format!("{}-list", if kind == RoomKind::Public { "room" } else { "direct" })>
                <For each=entries key=|room| (room.id, room.last_seq, room.read_seq, room.unread(), room.unread_mentions()) let:room>
                    {
                        let id = room.id;
                        let active = move || current.get() == Some(id);
                        let unread = room.unread();
                        let mentions = room.unread_mentions();
                        let label = match kind {
                            RoomKind::Public => format!("#{}", room.name),
                            RoomKind::Direct => sidebar_name(&room),
                        };
                        let avatar = room.peer.clone().map(|peer| view! { <Avatar name=peer.display_name.clone() user_id=peer.id small=true /> });
                        let bold = if unread > 0 { "font-semibold" } else { "" };
                        view! {
                            <li>
                                <A
                                    href=room_path(&room)
                                    attr:class=move || {
                                        format!(
                                            "flex items-center gap-2 rounded-lg px-3 py-2 text-sm focus:outline-none focus-visible:ring-2 focus-visible:ring-indigo-500 {}",
                                            if active() {
                                                "bg-indigo-600 font-semibold text-white"
                                            } else {
                                                "text-slate-700 hover:bg-slate-200 dark:text-slate-200 dark:hover:bg-slate-800"
                                            },
                                        )
                                    }
                                    attr:aria-current=move || active().then_some("page")
                                    on:click=move |_| on_pick()
                                >
                                    {avatar}
                                    <span class=format!("min-w-0 flex-1 truncate {bold}")>{label.clone()}</span>
                                    {(mentions > 0)
                                        .then(|| {
                                            view! {
                                                <span data-testid="mentions" class="rounded-full bg-amber-400 px-1.5 text-xs font-bold text-slate-900">
                                                    {format!("@{mentions}")}
                                                    <span class="sr-only">" mentions"</span>
                                                </span>
                                            }
                                        })}
                                    {(unread > 0)
                                        .then(|| {
                                            view! {
                                                <span data-testid="unread" class="min-w-5 rounded-full bg-rose-600 px-1.5 text-center text-xs font-bold text-white">
                                                    {if unread > 99 { "99+".to_string() } else { unread.to_string() }}
                                                    <span class="sr-only">" unread"</span>
                                                </span>
                                            }
                                        })}
                                </A>
                            </li>
                        }
                    }
                </For>
                <Show when=move || chat.rooms.with(|rooms| !rooms.iter().any(|r| r.kind == kind))>
                    <li class="px-3 py-1 text-sm text-slate-500">{empty}</li>
                </Show>
            </ul>
        </nav>
    }
    .into_any()
}

/// Finding someone to talk to.
#[component]
fn NewDirectForm() -> impl IntoView {
    let chat = expect_context::<ChatClient>();
    let query = RwSignal::new(String::new());
    let on_input = move |ev| {
        let text = event_target_value(&ev);
        query.set(text.clone());
        if text.trim().is_empty() {
            chat.found_users.set(None);
        } else {
            chat.find_users(text.trim().to_string());
        }
    };
    view! {
        <section class="px-3">
            <label id="find-people" for="find-person" class=SECTION_TITLE.replace("px-3 ", "")>"New message"</label>
            <input
                id="find-person"
                type="search"
                placeholder="Find people"
                autocomplete="off"
                autocapitalize="none"
                spellcheck="false"
                class="mt-2 w-full rounded-lg border border-slate-300 bg-white px-2 py-1.5 text-sm focus:border-indigo-500 focus:outline-none focus:ring-2 focus:ring-indigo-500/40 dark:border-slate-600 dark:bg-slate-800"
                prop:value=query
                on:input=on_input
            />
            <Show when=move || !query.with(|q| q.trim().is_empty())>
                <ul class="mt-1 space-y-0.5" data-testid="people">
                    {move || match chat.found_users.get() {
                        None => view! { <li class="px-2 py-1 text-sm text-slate-500">"Searching…"</li> }.into_any(),
                        Some(users) if users.is_empty() => view! { <li class="px-2 py-1 text-sm text-slate-500">"No one found."</li> }.into_any(),
                        Some(users) => users
                            .into_iter()
                            .map(|user| {
                                let id = user.id;
                                view! {
                                    <li>
                                        <button
                                            type="button"
                                            class="flex w-full items-center gap-2 rounded-lg px-2 py-1.5 text-left text-sm hover:bg-slate-200 focus:outline-none focus-visible:ring-2 focus-visible:ring-indigo-500 dark:hover:bg-slate-800"
                                            aria-label=format!("Message {}", user.display_name)
                                            on:click=move |_| {
                                                query.set(String::new());
                                                chat.found_users.set(None);
                                                chat.open_direct(id);
                                            }
                                        >
                                            <Avatar name=user.display_name.clone() user_id=user.id small=true />
                                            <span class="min-w-0 flex-1 truncate">{user.display_name.clone()}</span>
                                            <span class="truncate text-xs text-slate-500">{format!("@{}", user.username)}</span>
                                        </button>
                                    </li>
                                }
                            })
                            .collect_view()
                            .into_any(),
                    }}
                </ul>
            </Show>
        </section>
    }
    .into_any()
}

#[component]
fn NewRoomForm() -> impl IntoView {
    let chat = expect_context::<ChatClient>();
    let name = RwSignal::new(String::new());
    let problem = RwSignal::new(None::<String>);
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let wanted = name.get_untracked().trim().to_string();
        match check_room_name(&wanted) {
            Ok(()) => {
                chat.create_room(wanted);
                name.set(String::new());
                problem.set(None);
            }
            Err(why) => problem.set(Some(why)),
        }
    };
    view! {
        <form class="px-3" on:submit=submit>
            <label for="new-room" class=SECTION_TITLE.replace("px-3 ", "")>"New room"</label>
            <div class="mt-2 flex gap-2">
                <input
                    id="new-room"
                    placeholder="room-name"
                    autocomplete="off"
                    autocapitalize="none"
                    spellcheck="false"
                    aria-describedby="new-room-problem"
                    class="min-w-0 flex-1 rounded-lg border border-slate-300 bg-white px-2 py-1.5 text-sm focus:border-indigo-500 focus:outline-none focus:ring-2 focus:ring-indigo-500/40 dark:border-slate-600 dark:bg-slate-800"
                    prop:value=name
                    on:input=move |ev| name.set(event_target_value(&ev))
                />
                <button type="submit" class=format!("{SMALL_BUTTON} bg-indigo-600 text-white hover:bg-indigo-700")>
                    "Create"
                </button>
            </div>
            <p id="new-room-problem" class="mt-1 text-xs text-rose-600 dark:text-rose-400">{move || problem.get()}</p>
        </form>
    }
    .into_any()
}

#[component]
fn RoomDirectory() -> impl IntoView {
    let chat = expect_context::<ChatClient>();
    let shown = RwSignal::new(false);
    let toggle = move |_| {
        let now_shown = !shown.get_untracked();
        shown.set(now_shown);
        if now_shown {
            chat.browse_rooms();
        }
    };
    let others = move || {
        chat.directory.with(|dir| dir.as_ref().map(|rooms| rooms.iter().filter(|r| !r.joined).cloned().collect::<Vec<_>>()))
    };
    view! {
        <section class="px-3">
            <button
                type="button"
                class=format!("{SMALL_BUTTON} w-full border border-slate-300 text-slate-700 hover:bg-slate-200 dark:border-slate-600 dark:text-slate-200 dark:hover:bg-slate-800")
                aria-expanded=move || shown.get().to_string()
                aria-controls="room-directory"
                on:click=toggle
            >
                {move || if shown.get() { "Hide other rooms" } else { "Browse rooms" }}
            </button>
            <Show when=move || shown.get()>
                <ul id="room-directory" class="mt-2 space-y-1" data-testid="room-directory">
                    {move || match others() {
                        None => view! { <li class="text-sm text-slate-500">"Loading…"</li> }.into_any(),
                        Some(rooms) if rooms.is_empty() => {
                            view! { <li class="text-sm text-slate-500">"You are in every room."</li> }.into_any()
                        }
                        Some(rooms) => rooms
                            .into_iter()
                            .map(|room| {
                                let id = room.id;
                                view! {
                                    <li class="flex items-center justify-between gap-2 rounded-lg px-2 py-1 text-sm">
                                        <span class="truncate">{format!("#{}", room.name)}</span>
                                        <span class="text-xs text-slate-500">{format!("{} members", room.member_count)}</span>
                                        <button
                                            type="button"
                                            class=format!("{SMALL_BUTTON} bg-indigo-600 py-1 text-white hover:bg-indigo-700")
                                            aria-label=format!("Join #{}", room.name)
                                            on:click=move |_| chat.join_room(id)
                                        >
                                            "Join"
                                        </button>
                                    </li>
                                }
                            })
                            .collect_view()
                            .into_any(),
                    }}
                </ul>
            </Show>
        </section>
    }
    .into_any()
}

#[component]
fn AccountFooter() -> impl IntoView {
    let chat = expect_context::<ChatClient>();
    let logout = FormPost::new();
    view! {
        <div class="flex items-center gap-2 border-t border-slate-200 px-3 py-3 dark:border-slate-800">
            {move || {
                chat.me
                    .get()
                    .map(|me| {
                        view! {
                            <Avatar name=me.display_name.clone() user_id=me.id />
                            <div class="min-w-0 flex-1 text-sm">
                                <p class="truncate font-semibold" data-testid="me">{me.display_name.clone()}</p>
                                <p class="truncate text-xs text-slate-500">{format!("@{}", me.username)}</p>
                            </div>
                        }
                    })
            }}
            <div class="ml-auto flex items-center gap-1">
                <Show when=move || chat.notification_permission.get().as_deref() == Some("default")>
                    <button
                        type="button"
                        class=format!("{SMALL_BUTTON} text-slate-700 hover:bg-slate-200 dark:text-slate-200 dark:hover:bg-slate-800")
                        title="Get a notification for direct messages and mentions while Parley is in the background"
                        on:click=move |_| chat.ask_notification_permission()
                    >
                        "Notify me"
                    </button>
                </Show>
                <form method="post" action=Logout::url() on:submit=logout.on_submit()>
                    <button
                        type="submit"
                        class=format!("{SMALL_BUTTON} text-slate-700 hover:bg-slate-200 dark:text-slate-200 dark:hover:bg-slate-800")
                        disabled=move || logout.pending.get()
                    >
                        "Log out"
                    </button>
                </form>
            </div>
        </div>
        {move || logout.error.get().map(|message| view! { <p role="alert" class="px-3 pb-3 text-xs text-rose-600 dark:text-rose-400">{message}</p> })}
    }
    .into_any()
}
