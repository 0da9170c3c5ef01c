// Parley's service worker. It is here for one thing: phones' browsers show a
// notification only through a service worker (the page's own `new Notification()`
// throws there), so the chat can tell of a direct message or a mention while it is in
// the background. It caches nothing and answers no requests: the page loads as it
// would without it.

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

// The site's pages that are not the chat.
const ACCOUNT_PAGES = ["/login", "/register"];

// Where a notification's data points: a page of this site, never another one (the URL
// parser, not a string test, says which site `/\host` or `/.//host` name).
function ownPage(data) {
  if (typeof data !== "string" || !data.startsWith("/")) return null;
  try {
    const url = new URL(data, self.location.origin);
    return url.origin === self.location.origin && !url.pathname.startsWith("//") ? url.pathname + url.search : null;
  } catch {
    return null;
  }
}

// How long a tap waits for a tab to say whether someone is signed in there. Every page
// of the site answers at once; one frozen in the background, or loaded before pages
// answered, does not, and a browser lets a tap bring a window up only for a while
// (Firefox: one second).
const ANSWER_WAIT_MS = 300;

// Whether `window` shows the chat to someone signed in. Only the page can say: a
// window's address as the worker sees it is where it was loaded (`/login` or
// `/register` for a tab that logged in since) in Chromium, not where it is now.
function signedIn(window) {
  return new Promise((resolve) => {
    const channel = new MessageChannel();
    const answered = (answer) => {
      clearTimeout(timer);
      channel.port1.close();
      resolve(answer);
    };
    const timer = setTimeout(() => answered(false), ANSWER_WAIT_MS);
    channel.port1.onmessage = (event) => answered(event.data?.signedIn === true);
    try {
      window.postMessage({ ask: "signed-in" }, [channel.port2]);
    } catch {
      answered(false);
    }
  });
}

// The window a tap brings up: the most recently used one that shows the chat, taken
// as soon as those used since have answered; without one (every tab logged out,
// pages that cannot answer), one whose address is not an account page, else the most
// recently used.
async function chatWindow(windows) {
  const answers = windows.map(signedIn);
  for (const [n, answer] of answers.entries()) {
    if (await answer) return windows[n];
  }
  return windows.find((window) => !ACCOUNT_PAGES.includes(new URL(window.url).pathname)) ?? windows[0];
}

// A tap on a notification shows the conversation it told of: in an open tab of the
// site, which moves there itself (no reload) and comes to the front, or in a new one.
self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const path = ownPage(event.notification.data);
  event.waitUntil(
    self.clients.matchAll({ type: "window", includeUncontrolled: true }).then(async (windows) => {
      const chat = await chatWindow(windows);
      if (!chat) return self.clients.openWindow(path ?? "/");
      // A notification from before its address was carried only brings the tab up.
      if (path) chat.postMessage({ open: path });
      // Browsers let a worker focus a window only while handling a real tap.
      return chat.focus().catch(() => undefined);
    }),
  );
});
