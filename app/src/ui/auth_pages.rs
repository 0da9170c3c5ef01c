//! The login and register pages: plain HTML forms that work before (or without) the
//! WASM, posted from the page once it has loaded so that errors show in place
//! ([`super::form_post`]).

use leptos::{prelude::*, server_fn::ServerFn};
use leptos_meta::Title;
use leptos_router::{
    components::A,
    hooks::{use_location, use_navigate, use_query_map},
    NavigateOptions,
};

use super::form_post::FormPost;
use crate::{
    auth::{FormRefusal, Login, Register},
    validation::{urlencode, PASSWORD_MIN, USERNAME_MAX, USERNAME_MIN},
};

const INPUT: &str = "mt-1 block w-full rounded-lg border border-slate-300 bg-white px-3 py-2 text-base text-slate-900 \
    shadow-sm focus:border-indigo-500 focus:outline-none focus:ring-2 focus:ring-indigo-500/40 \
    dark:border-slate-600 dark:bg-slate-800 dark:text-slate-100";
const LABEL: &str = "block text-sm font-medium text-slate-700 dark:text-slate-200";
const BUTTON: &str = "w-full rounded-lg bg-indigo-600 px-4 py-2.5 font-semibold text-white shadow \
    hover:bg-indigo-700 focus:outline-none focus-visible:ring-4 focus-visible:ring-indigo-400/60 disabled:opacity-60";

/// A form's post, showing from the start what went wrong with the post that led here:
/// one sent as a plain HTML form (before the script loaded) comes back with a code
/// for it in the address.
fn form_post() -> FormPost {
    let post = FormPost::new();
    let query = use_query_map();
    let refused = query.with_untracked(|query| query.get("error")).and_then(|code| FormRefusal::from_code(&code));
    post.error.set(refused.map(|refusal| refusal.text().to_string()));
    if refused.is_some() {
        // Said once: a reload, or coming back here after logging in, must not say it
        // again. (Effects run only in the browser, once the page is live.)
        let navigate = use_navigate();
        let location = use_location();
        Effect::new(move || {
            let mut kept = query.get_untracked();
            kept.remove("error");
            let address = format!("{}{}", location.pathname.get_untracked(), kept.to_query_string());
            navigate(&address, NavigateOptions { replace: true, scroll: false, ..Default::default() });
        });
    }
    post
}

/// The `next` query parameter, carried through the form so the user lands where they
/// were going.
fn next_param() -> Signal<String> {
    let query = use_query_map();
    Signal::derive(move || query.with(|q| q.get("next").unwrap_or_default()))
}

#[component]
fn AuthCard(title: &'static str, children: Children) -> impl IntoView {
    view! {
        <Title text=format!("{title} · Parley") />
        <main class="flex min-h-dvh items-center justify-center bg-slate-50 p-4 dark:bg-slate-950">
            <div class="w-full max-w-sm rounded-2xl bg-white p-6 shadow-lg ring-1 ring-slate-200 dark:bg-slate-900 dark:ring-slate-800 sm:p-8">
                <p class="text-center text-2xl font-bold tracking-tight text-indigo-600 dark:text-indigo-400">"Parley"</p>
                <h1 class="mt-2 text-center text-lg font-semibold">{title}</h1>
                {children()}
            </div>
        </main>
    }
}

/// A password input with a button that shows or hides what was typed.
#[component]
fn PasswordField(#[prop(into)] autocomplete: String, minlength: Option<usize>) -> impl IntoView {
    let visible = RwSignal::new(false);
    view! {
        <div>
            <label for="password" class=LABEL>"Password"</label>
            <div class="relative">
                <input
                    id="password"
                    name="password"
                    type=move || if visible.get() { "text" } else { "password" }
                    required
                    minlength=minlength
                    autocomplete=autocomplete
                    class=format!("{INPUT} pr-20")
                />
                <button
                    type="button"
                    class="absolute inset-y-0 right-1 my-1 rounded-md px-2 text-sm font-medium text-indigo-600 hover:bg-indigo-50 focus:outline-none focus-visible:ring-2 focus-visible:ring-indigo-500 dark:text-indigo-400 dark:hover:bg-slate-700"
                    aria-pressed=move || visible.get().to_string()
                    aria-controls="password"
                    on:click=move |_| visible.update(|v| *v = !*v)
                >
                    {move || if visible.get() { "Hide" } else { "Show" }}
                </button>
            </div>
        </div>
    }
}

#[component]
fn FormError(message: RwSignal<Option<String>>) -> impl IntoView {
    view! {
        <p role="alert" class="min-h-6 text-sm text-rose-600 dark:text-rose-400">
            {move || message.get().unwrap_or_default()}
        </p>
    }
}

#[component]
pub fn LoginPage() -> impl IntoView {
    let post = form_post();
    let next = next_param();
    let register_href = move || format!("/register?next={}", urlencode(&next.get()));
    view! {
        <AuthCard title="Log in">
            <form method="post" action=Login::url() on:submit=post.on_submit()>
                <div class="mt-6 space-y-4">
                    <input type="hidden" name="next" value=next />
                    <div>
                        <label for="username" class=LABEL>"Username"</label>
                        <input id="username" name="username" required autocomplete="username" autocapitalize="none" spellcheck="false" class=INPUT />
                    </div>
                    <PasswordField autocomplete="current-password" minlength=None />
                    <FormError message=post.error />
                    <button type="submit" class=BUTTON disabled=move || post.pending.get()>
                        {move || if post.pending.get() { "Logging in…" } else { "Log in" }}
                    </button>
                </div>
            </form>
            <p class="mt-6 text-center text-sm text-slate-600 dark:text-slate-400">
                "New here? "
                <A href=register_href attr:class="font-semibold text-indigo-600 underline-offset-2 hover:underline dark:text-indigo-400">
                    "Create an account"
                </A>
            </p>
        </AuthCard>
    }
    .into_any()
}

#[component]
pub fn RegisterPage() -> impl IntoView {
    let post = form_post();
    let next = next_param();
    let login_href = move || format!("/login?next={}", urlencode(&next.get()));
    view! {
        <AuthCard title="Create an account">
            <form method="post" action=Register::url() on:submit=post.on_submit()>
                <div class="mt-6 space-y-4">
                    <input type="hidden" name="next" value=next />
                    <div>
                        <label for="username" class=LABEL>"Username"</label>
                        <input
                            id="username"
                            name="username"
                            required
                            minlength=USERNAME_MIN
                            maxlength=USERNAME_MAX
                            pattern="[A-Za-z0-9_.\\-]+"
                            autocomplete="username"
                            autocapitalize="none"
                            spellcheck="false"
                            aria-describedby="username-help"
                            class=INPUT
                        />
                        <p id="username-help" class="mt-1 text-xs text-slate-500 dark:text-slate-400">
                            {format!("{USERNAME_MIN}–{USERNAME_MAX} letters, digits, '_', '.' or '-'.")}
                        </p>
                    </div>
                    <div>
                        <label for="display_name" class=LABEL>"Display name "<span class="font-normal text-slate-500">"(optional)"</span></label>
                        <input id="display_name" name="display_name" maxlength="64" autocomplete="name" class=INPUT />
                    </div>
                    <PasswordField autocomplete="new-password" minlength=Some(PASSWORD_MIN) />
                    <FormError message=post.error />
                    <button type="submit" class=BUTTON disabled=move || post.pending.get()>
                        {move || if post.pending.get() { "Creating account…" } else { "Create account" }}
                    </button>
                </div>
            </form>
            <p class="mt-6 text-center text-sm text-slate-600 dark:text-slate-400">
                "Already have an account? "
                <A href=login_href attr:class="font-semibold text-indigo-600 underline-offset-2 hover:underline dark:text-indigo-400">
                    "Log in"
                </A>
            </p>
        </AuthCard>
    }
    .into_any()
}
