//! Writing a message: Enter sends, Shift+Enter starts a new line, the Send button sends.
//! What is typed and not sent is kept per conversation, so switching away and back
//! finds it again.

use leptos::prelude::*;

use crate::{
    client::{sidebar_name, ChatClient},
    protocol::{RoomId, RoomKind},
    validation::check_message_text,
};

/// The key code browsers give a key press that an input method is handling.
const IME_PROCESSING: u32 = 229;

#[component]
pub fn Composer(room_id: RoomId) -> impl IntoView {
    let chat = expect_context::<ChatClient>();
    let text = RwSignal::new(chat.draft(room_id));
    let problem = RwSignal::new(None::<String>);
    // "Message #general" in a room, "Message Ana Lima" in a direct conversation.
    let addressee = move || {
        chat.rooms.with(|rooms| {
            rooms
                .iter()
                .find(|r| r.id == room_id)
                .map(|r| match r.kind {
                    RoomKind::Public => format!("#{}", r.name),
                    RoomKind::Direct => sidebar_name(r),
                })
                .unwrap_or_default()
        })
    };
    let max_chars = move || chat.limits.with(|l| l.max_message_chars as usize);
    let length = move || text.with(|t| t.chars().count());

    let send = move || {
        let draft = text.get_untracked();
        match check_message_text(&draft, max_chars()) {
            Ok(()) => {
                chat.send_message(room_id, draft);
                text.set(String::new());
                chat.set_draft(room_id, String::new());
                problem.set(None);
            }
            // Nothing typed: nothing to send, nothing to complain about.
            Err(_) if draft.trim().is_empty() => {}
            Err(why) => problem.set(Some(why)),
        }
    };

    let typing = move || {
        let people = chat.typing_in(room_id);
        match people.as_slice() {
            [] => String::new(),
            [one] => format!("{} is typing…", one.display_name),
            many => format!("{} people are typing…", many.len()),
        }
    };

    view! {
        <p data-testid="typing" aria-live="polite" class="h-5 truncate px-4 text-xs italic text-slate-500 dark:text-slate-400">{typing}</p>
        <form
            class="border-t border-slate-200 bg-white px-3 pt-2 pb-[max(0.5rem,env(safe-area-inset-bottom))] dark:border-slate-800 dark:bg-slate-950"
            on:submit=move |ev| {
                ev.prevent_default();
                send();
            }
        >
            <div class="mx-auto flex max-w-3xl items-end gap-2">
                <label for="composer" class="sr-only">{move || format!("Message {}", addressee())}</label>
                <textarea
                    id="composer"
                    rows="1"
                    placeholder=move || format!("Message {}", addressee())
                    aria-describedby="composer-problem"
                    class="field-sizing-content max-h-40 min-h-11 min-w-0 flex-1 resize-none rounded-xl border border-slate-300 bg-white px-3 py-2.5 text-base leading-snug focus:border-indigo-500 focus:outline-none focus:ring-2 focus:ring-indigo-500/40 dark:border-slate-600 dark:bg-slate-900"
                    prop:value=text
                    on:input=move |ev| {
                        let value = event_target_value(&ev);
                        if !value.trim().is_empty() {
                            chat.typing_in_room(room_id);
                        }
                        chat.set_draft(room_id, value.clone());
                        text.set(value);
                    }
                    on:keydown=move |ev: leptos::ev::KeyboardEvent| {
                        // Safari ends an input method's composition (Japanese, Chinese)
                        // with an Enter that says it is not composing; only its key code,
                        // 229, tells that this Enter picks a word rather than sends.
                        let composing = ev.is_composing() || ev.key_code() == IME_PROCESSING;
                        if ev.key() == "Enter" && !ev.shift_key() && !composing {
                            ev.prevent_default();
                            send();
                        }
                    }
                ></textarea>
                <button
                    type="submit"
                    class="min-h-11 rounded-xl bg-indigo-600 px-4 font-semibold text-white shadow hover:bg-indigo-700 focus:outline-none focus-visible:ring-4 focus-visible:ring-indigo-400/60 disabled:opacity-50"
                    disabled=move || text.with(|t| t.trim().is_empty())
                >
                    "Send"
                </button>
            </div>
            <div class="mx-auto flex max-w-3xl justify-between text-xs">
                <p id="composer-problem" role="status" class="text-rose-600 dark:text-rose-400">{move || problem.get()}</p>
                <Show when=move || { length() * 10 >= max_chars() * 9 }>
                    <p class=move || { if length() > max_chars() { "text-rose-600" } else { "text-slate-500" } }>
                        {move || format!("{}/{}", length(), max_chars())}
                    </p>
                </Show>
            </div>
        </form>
    }
    .into_any()
}
