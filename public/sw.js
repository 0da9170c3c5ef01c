// Parley's service worker. It is here for one thing: phones' browsers show a
// notification only through a service worker (the page's own `new Notification()`
// throws there), so the chat can tell of a direct message or a mention while it is in
// the background. It caches nothing and answers no requests: the page loads as it
// would without it.

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

// A tap on a notification shows the conversation it told of: in a window of the site
// that is open, which moves there itself (no reload) and comes to the front, or in a
// new one. Any open window will do: a window's address as the worker sees it may still
// be the one it was loaded at (`/login`, before the person logged in there).
self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const data = event.notification.data;
  const path = typeof data === "string" && data.startsWith("/") && !data.startsWith("//") ? data : "/";
  event.waitUntil(
    self.clients.matchAll({ type: "window", includeUncontrolled: true }).then(([chat]) => {
      if (!chat) return self.clients.openWindow(path);
      chat.postMessage({ open: path });
      // Browsers let a worker focus a window only while handling a real tap.
      return chat.focus().catch(() => undefined);
    }),
  );
});
