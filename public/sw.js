// Parley's service worker. It is here for one thing: phones' browsers show a
// notification only through a service worker (the page's own `new Notification()`
// throws there), so the chat can tell of a direct message or a mention while it is in
// the background. It caches nothing and answers no requests: the page loads as it
// would without it.

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

// The site's pages that are not the chat.
const ACCOUNT_PAGES = ["/login", "/register"];

// A tap on the notification brings the chat to the front, opening it if it was closed.
self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  event.waitUntil(
    self.clients.matchAll({ type: "window", includeUncontrolled: true }).then((windows) => {
      const chat = windows.find((window) => {
        const url = new URL(window.url);
        return url.origin === self.location.origin && !ACCOUNT_PAGES.includes(url.pathname);
      });
      return chat ? chat.focus() : self.clients.openWindow("/");
    }),
  );
});
