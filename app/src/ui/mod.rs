//! Pages and components.

mod auth_pages;
mod chat_page;
mod composer;
mod form_post;
mod messages;
mod rows;
mod sidebar;

pub use auth_pages::{LoginPage, RegisterPage};
pub use chat_page::ChatPage;

use leptos::prelude::*;

use crate::text::initials;

/// Background colours for avatars, picked by user id so a person keeps their colour.
/// Listed in full so Tailwind sees every class.
const AVATAR_COLOURS: [&str; 8] = [
    "bg-rose-500",
    "bg-amber-500",
    "bg-emerald-500",
    "bg-sky-500",
    "bg-violet-500",
    "bg-fuchsia-500",
    "bg-teal-500",
    "bg-orange-500",
];

/// A round badge with someone's initials.
#[component]
pub fn Avatar(#[prop(into)] name: String, user_id: i64, #[prop(optional)] small: bool) -> impl IntoView {
    let colour = AVATAR_COLOURS[user_id.rem_euclid(AVATAR_COLOURS.len() as i64) as usize];
    let size = if small { "h-6 w-6 text-[10px]" } else { "h-8 w-8 text-xs" };
    view! {
        <span
            aria-hidden="true"
            class=format!("inline-flex shrink-0 select-none items-center justify-center rounded-full font-semibold text-white {size} {colour}")
        >
            {initials(&name)}
        </span>
    }
}
