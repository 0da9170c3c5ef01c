import { type Browser, type BrowserContext, type Page } from "@playwright/test";
import { expect, test, createRoom, hydrated, logIn, PASSWORD, newUser, openRooms, register, sendMessage, uniqueName, joinRoom } from "./helpers";

/** Finds a person by name in the sidebar and opens the conversation with them. */
async function messagePerson(page: Page, username: string) {
  await openRooms(page);
  await page.getByLabel("New message").fill(username);
  await page.getByRole("button", { name: `Message ${username}` }).click();
  await expect(page).toHaveURL(new RegExp(`/dm/${username}$`));
  await expect(page.getByTestId("room-title")).toHaveText(username);
}

/** Records notifications and permission requests instead of showing them, with the
 *  way each was shown (through the service worker, as phones need, or by the page),
 *  and lets the test hide the page (`__hidden`). Runs in the page, before its scripts. */
function recordNotifications(initialPermission: string) {
  const w = window as any;
  w.__shown = [];
  w.__opens = [];
  w.__closed = 0;
  w.__told = [];
  w.__asked = 0;
  w.__hidden = false;
  let permission = initialPermission;
  class FakeNotification {
    static get permission() { return permission; }
    static requestPermission() { w.__asked += 1; permission = "granted"; return Promise.resolve(permission); }
    constructor(title: string, options: any) { w.__shown.push({ title, body: options?.body, via: "page" }); }
  }
  w.Notification = FakeNotification;
  w.ServiceWorkerRegistration.prototype.showNotification = function (title: string, options: any) {
    w.__shown.push({ title, body: options?.body, via: "worker" });
    w.__opens.push(options?.data);
    return Promise.resolve();
  };
  w.ServiceWorkerRegistration.prototype.getNotifications = function () {
    return Promise.resolve(w.__shown.map(() => ({ close() { w.__closed += 1; } })));
  };
  // What the worker tells the page (the page listens too).
  navigator.serviceWorker?.addEventListener("message", (event) => w.__told.push(event.data));
  Object.defineProperty(document, "visibilityState", { get: () => (w.__hidden ? "hidden" : "visible") });
}

/** A registered user in a context of their own whose notifications are recorded. */
async function userRecordingNotifications(browser: Browser, permission: string) {
  const context = await browser.newContext();
  await context.addInitScript(recordNotifications, permission);
  const page = await context.newPage();
  const username = uniqueName("bob");
  await register(page, username);
  return { context, page, username };
}

async function setHidden(page: Page, hidden: boolean) {
  await page.evaluate((hidden) => {
    (window as any).__hidden = hidden;
    document.dispatchEvent(new Event("visibilitychange", { bubbles: true }));
  }, hidden);
}

function directEntry(page: Page, name: string) {
  return page.getByTestId("direct-list").getByRole("link", { name: new RegExp(name) });
}

/** Alice writes `text` to Bob, and Bob opens the conversation on `page` and sees it. */
async function conversationOpenWith(alice: { page: Page; username: string }, page: Page, bobName: string, text: string) {
  await messagePerson(alice.page, bobName);
  await sendMessage(alice.page, text);
  await openRooms(page);
  await directEntry(page, alice.username).click();
  await expect(page.getByTestId("message").filter({ hasText: text })).toHaveCount(1);
}

/** Alice writes to Bob, whose `page` lists the conversation without opening it. */
async function writtenToUnopened(alice: { page: Page; username: string }, page: Page, bobName: string) {
  await messagePerson(alice.page, bobName);
  await sendMessage(alice.page, "olá");
  await openRooms(page);
  await expect(directEntry(page, alice.username)).toBeVisible();
}

/** Bob's hidden page notifies of a direct message `text` from Alice, which carries the
 *  conversation's address. */
async function notifiedOfADirectMessage(browser: Browser, text: string) {
  const alice = await newUser(browser, "alice");
  const { context, page, username: bobName } = await userRecordingNotifications(browser, "granted");
  await page.evaluate(() => navigator.serviceWorker.ready);
  await setHidden(page, true);
  await messagePerson(alice.page, bobName);
  await sendMessage(alice.page, text);
  await expect.poll(() => page.evaluate(() => (window as any).__opens)).toEqual([`/dm/${alice.username}`]);
  return { alice, context, page };
}

/** Taps the notification `page` showed last: its service worker is handed the tap
 *  as the browser would hand it over. */
async function tapNotification(context: BrowserContext, page: Page) {
  const worker = context.serviceWorkers()[0] ?? (await context.waitForEvent("serviceworker"));
  const opens = await page.evaluate(() => (window as any).__opens.at(-1));
  await worker.evaluate((opens) => {
    const tap: any = new Event("notificationclick");
    tap.notification = { data: opens, close() {} };
    tap.waitUntil = () => {};
    self.dispatchEvent(tap);
  }, opens);
}

/** The laptop is closed: the page is hidden and offline, and knows it. */
async function closeLaptop(context: BrowserContext, page: Page) {
  await setHidden(page, true);
  await context.setOffline(true);
  await expect(page.getByTestId("connection-state")).toHaveAttribute("data-state", "reconnecting");
}

test("a direct message goes sent → delivered → read, and the unread badge counts up and clears", async ({ browser }) => {
  const alice = await newUser(browser, "alice");
  const bob = await newUser(browser, "bob");
  // Other tests talk in #general; leaving it keeps Bob's unread total about this DM only.
  await bob.page.getByRole("button", { name: "Leave" }).click();
  await expect(bob.page.getByText("You are not in any room yet.")).toBeVisible();
  await messagePerson(alice.page, bob.username);

  const text = `psst ${uniqueName("dm")}`;
  await sendMessage(alice.page, text);
  const mine = alice.page.getByTestId("message").filter({ has: alice.page.getByTestId("text").getByText(text, { exact: true }) });
  // Bob is online (though not looking), so his client acknowledges delivery by itself.
  await expect(mine.getByTestId("receipt")).toHaveAttribute("data-receipt", "delivered");

  // Bob sees the conversation with an unread badge, and the count in the title.
  await openRooms(bob.page);
  const entry = directEntry(bob.page, alice.username);
  await expect(entry.getByTestId("unread")).toHaveText(/^1/);
  await expect(bob.page).toHaveTitle(/^\(1\) /);
  await sendMessage(alice.page, `${text} again`);
  await expect(entry.getByTestId("unread")).toHaveText(/^2/);

  await entry.click();
  await expect(bob.page.getByTestId("message").filter({ hasText: text }).first()).toBeVisible();
  await expect(mine.getByTestId("receipt")).toHaveAttribute("data-receipt", "read");
  await openRooms(bob.page);
  await expect(entry.getByTestId("unread")).toHaveCount(0);
  await expect(bob.page).not.toHaveTitle(/^\(/);
  await alice.context.close();
  await bob.context.close();
});

test("the typing indicator shows while typing and goes when the message is sent", async ({ browser }) => {
  const alice = await newUser(browser, "alice");
  const bob = await newUser(browser, "bob");
  await messagePerson(alice.page, bob.username);
  await messagePerson(bob.page, alice.username);

  const composer = bob.page.getByRole("textbox", { name: /^Message/ });
  await composer.pressSequentially("hold on, writing");
  await expect(alice.page.getByTestId("typing")).toHaveText(`${bob.username} is typing…`);
  await composer.press("Enter");
  await expect(alice.page.getByTestId("message").filter({ hasText: "hold on, writing" })).toHaveCount(1);
  await expect(alice.page.getByTestId("typing")).toHaveText("");

  // Without a message, it goes by itself five seconds after the last keystroke.
  await composer.pressSequentially("thinking");
  await expect(alice.page.getByTestId("typing")).toHaveText(`${bob.username} is typing…`);
  await expect(alice.page.getByTestId("typing")).toHaveText("", { timeout: 8_000 });
  await alice.context.close();
  await bob.context.close();
});

test("messages sent while the recipient is offline appear once when it comes back", async ({ browser }) => {
  const alice = await newUser(browser, "alice");
  const bob = await newUser(browser, "bob");
  await messagePerson(alice.page, bob.username);
  await messagePerson(bob.page, alice.username);
  await sendMessage(alice.page, "before the tunnel");
  await expect(bob.page.getByTestId("message").filter({ hasText: "before the tunnel" })).toHaveCount(1);

  await bob.context.setOffline(true);
  await expect(bob.page.getByTestId("connection-state")).toHaveAttribute("data-state", "reconnecting");
  await sendMessage(alice.page, "in the tunnel 1");
  await sendMessage(alice.page, "in the tunnel 2");
  await expect(bob.page.getByTestId("message").filter({ hasText: "in the tunnel" })).toHaveCount(0);

  await bob.context.setOffline(false);
  await expect(bob.page.getByTestId("connection-state")).toHaveAttribute("data-state", "online");
  await expect(bob.page.getByTestId("message").filter({ hasText: "in the tunnel 1" })).toHaveCount(1);
  await expect(bob.page.getByTestId("message").filter({ hasText: "in the tunnel 2" })).toHaveCount(1);
  await expect(bob.page.getByTestId("message").filter({ hasText: "before the tunnel" })).toHaveCount(1);
  await alice.context.close();
  await bob.context.close();
});

test("a message written offline waits in the outbox and goes out once on reconnect", async ({ browser }) => {
  const alice = await newUser(browser, "alice");
  const bob = await newUser(browser, "bob");
  await messagePerson(alice.page, bob.username);
  await messagePerson(bob.page, alice.username);

  await alice.context.setOffline(true);
  await expect(alice.page.getByTestId("connection-state")).toHaveAttribute("data-state", "reconnecting");
  const composer = alice.page.getByRole("textbox", { name: /^Message/ });
  await composer.fill("written on the train");
  await composer.press("Enter");
  const pending = alice.page.getByTestId("pending").filter({ hasText: "written on the train" });
  await expect(pending).toContainText("Sending…");

  await alice.context.setOffline(false);
  await expect(pending).toHaveCount(0);
  await expect(alice.page.getByTestId("message").filter({ hasText: "written on the train" })).toHaveCount(1);
  await expect(bob.page.getByTestId("message").filter({ hasText: "written on the train" })).toHaveCount(1);
  await alice.context.close();
  await bob.context.close();
});

test("reading in one tab clears the unread count in another, and mentions are counted apart", async ({ browser }) => {
  const alice = await newUser(browser, "alice");
  const bob = await newUser(browser, "bob");
  const room = uniqueName("desk").replace(/_/g, "-");
  // Bob is in his own room; Alice writes in #general, which he does not have open.
  await openRooms(bob.page);
  await bob.page.getByLabel("New room").fill(room);
  await bob.page.getByRole("button", { name: "Create", exact: true }).click();
  await expect(bob.page).toHaveURL(new RegExp(`/r/${room}$`));
  const secondTab = await bob.context.newPage();
  await secondTab.goto(`/r/${room}`);
  await expect(secondTab.getByTestId("connection-state")).toHaveAttribute("data-state", "online");

  await sendMessage(alice.page, `hey @${bob.username}, look at this`);
  for (const page of [bob.page, secondTab]) {
    await openRooms(page);
    const general = page.getByTestId("room-list").getByRole("link", { name: /#general/ });
    await expect(general.getByTestId("mentions")).toContainText("@1");
    await expect(general.getByTestId("unread")).toBeVisible();
  }

  await bob.page.getByTestId("room-list").getByRole("link", { name: /#general/ }).click();
  const mention = bob.page.getByTestId("mention").filter({ hasText: `@${bob.username}` });
  await expect(mention).toHaveAttribute("data-me", "true");
  const elsewhere = secondTab.getByTestId("room-list").getByRole("link", { name: /#general/ });
  await expect(elsewhere.getByTestId("unread")).toHaveCount(0);
  await expect(elsewhere.getByTestId("mentions")).toHaveCount(0);
  await alice.context.close();
  await bob.context.close();
});

test("in a room the sender sees who has seen their message", async ({ browser }) => {
  const alice = await newUser(browser, "alice");
  const bob = await newUser(browser, "bob", "Bob Reader");
  const room = uniqueName("seen").replace(/_/g, "-");
  await openRooms(alice.page);
  await alice.page.getByLabel("New room").fill(room);
  await alice.page.getByRole("button", { name: "Create", exact: true }).click();
  await expect(alice.page).toHaveURL(new RegExp(`/r/${room}$`));
  await joinRoom(bob.page, room);

  await sendMessage(alice.page, "did everyone see this?");
  const seen = alice.page.getByTestId("message").filter({ hasText: "did everyone see this?" }).getByTestId("seen-by");
  await expect(seen.locator("summary")).toHaveText("Seen by 1");
  await seen.locator("summary").click();
  await expect(seen.getByRole("listitem")).toHaveText("Bob Reader");
  await alice.context.close();
  await bob.context.close();
});

test("a hidden tab notifies of a direct message, with permission asked only from a click", async ({ browser }) => {
  const alice = await newUser(browser, "alice");
  const { context, page, username: bobName } = await userRecordingNotifications(browser, "default");
  expect(await page.evaluate(() => (window as any).__asked)).toBe(0);

  await openRooms(page);
  await page.getByRole("button", { name: "Notify me" }).click();
  await expect(page.getByRole("button", { name: "Notify me" })).toHaveCount(0);
  expect(await page.evaluate(() => (window as any).__asked)).toBe(1);

  await setHidden(page, true);
  await messagePerson(alice.page, bobName);
  await sendMessage(alice.page, "are you there?");
  await expect.poll(() => page.evaluate(() => (window as any).__shown)).toEqual([{ title: alice.username, body: "are you there?", via: "worker" }]);
  // The worker that phones need is the site's own, served beside the page.
  const worker = await page.evaluate(() => navigator.serviceWorker.ready.then((ready) => new URL(ready.active!.scriptURL).pathname));
  expect(worker).toBe("/sw.js");
  await alice.context.close();
  await context.close();
});

test("what was read on another device does not notify when this one catches up", async ({ browser }) => {
  const alice = await newUser(browser, "alice");
  const { context: laptop, page, username: bobName } = await userRecordingNotifications(browser, "granted");
  await conversationOpenWith(alice, page, bobName, "first");

  // The laptop is put away; Bob reads what comes next on his phone.
  await closeLaptop(laptop, page);
  await sendMessage(alice.page, "read on the phone");
  const phone = await browser.newContext();
  const phonePage = await phone.newPage();
  await phonePage.goto(`/login?next=${encodeURIComponent(`/dm/${alice.username}`)}`);
  await hydrated(phonePage);
  await logIn(phonePage, bobName);
  await expect(phonePage.getByTestId("message").filter({ hasText: "read on the phone" })).toBeVisible();
  const sent = alice.page.getByTestId("message").filter({ hasText: "read on the phone" });
  await expect(sent.getByTestId("receipt")).toHaveAttribute("data-receipt", "read");
  await phone.close();

  // Back on the laptop, still hidden: it catches up without a notification for it…
  await laptop.setOffline(false);
  await expect(page.getByTestId("connection-state")).toHaveAttribute("data-state", "online");
  await expect(page.getByTestId("message").filter({ hasText: "read on the phone" })).toHaveCount(1);
  expect(await page.evaluate(() => (window as any).__shown)).toEqual([]);
  // …but what nobody has read yet does notify.
  await sendMessage(alice.page, "and now?");
  await expect.poll(() => page.evaluate(() => (window as any).__shown)).toEqual([{ title: alice.username, body: "and now?", via: "worker" }]);
  await alice.context.close();
  await laptop.close();
});

/** Bob's page, whose service worker `/sw.js` is answered by `worker`, is hidden when
 *  Alice writes: nothing is notified, the console says why (`said`), and the chat
 *  works on. */
async function notifiedWithoutAWorker(browser: Browser, worker: { status: number; contentType?: string; body: string }, said: string[]) {
  const alice = await newUser(browser, "alice");
  const context = await browser.newContext();
  await context.addInitScript(recordNotifications, "granted");
  await context.route("**/sw.js", (route) => route.fulfill(worker));
  const page = await context.newPage();
  const warnings: string[] = [];
  const errors: string[] = [];
  page.on("console", (message) => {
    if (message.type() === "warning") warnings.push(message.text());
  });
  page.on("pageerror", (error) => errors.push(error.message));
  const bobName = uniqueName("bob");
  await register(page, bobName);

  await setHidden(page, true);
  await messagePerson(alice.page, bobName);
  await sendMessage(alice.page, "Ótimo, sem notificação?");
  for (const why of said) await expect.poll(() => warnings.some((text) => text.includes(why))).toBe(true);
  expect(await page.evaluate(() => (window as any).__shown)).toEqual([]);
  await setHidden(page, false);
  await openRooms(page);
  await directEntry(page, alice.username).click();
  await expect(page.getByTestId("message").filter({ hasText: "Ótimo, sem notificação?" })).toHaveCount(1);
  expect(errors, "no uncaught failure").toEqual([]);
  await alice.context.close();
  await context.close();
}

test("a service worker that cannot register leaves the chat working and says why nothing is notified", async ({ browser }) => {
  // A deploy that lost the worker's file.
  await notifiedWithoutAWorker(browser, { status: 404, body: "gone" }, ["service worker did not register", "notification not shown: no service worker"]);
});

test("a service worker still installing leaves the chat working and says why nothing is notified", async ({ browser }) => {
  // An install that never ends (it could as well fail): the worker is registered but
  // never ready, so a notification must not wait for it.
  const stuck = "self.addEventListener('install', (event) => event.waitUntil(new Promise(() => {})));";
  await notifiedWithoutAWorker(browser, { status: 200, contentType: "text/javascript", body: stuck }, ["the service worker is not active yet"]);
});

test("a message that reaches the page twice notifies once", async ({ browser }) => {
  const alice = await newUser(browser, "alice");
  const context = await browser.newContext();
  await context.addInitScript(recordNotifications, "granted");
  const page = await context.newPage();
  // As when a page fetched a message to fill a gap and the room is then offered it
  // again (a retry whose first try was stored but never announced).
  await page.routeWebSocket(/\/ws(\?.*)?$/, (ws) => {
    const server = ws.connectToServer();
    ws.onMessage((message) => server.send(message));
    server.onMessage((message) => {
      ws.send(message);
      if (typeof message === "string" && message.includes("Ótimo, duas vezes?")) ws.send(message);
    });
  });
  const bobName = uniqueName("bob");
  await register(page, bobName);
  await page.evaluate(() => navigator.serviceWorker.ready);
  await conversationOpenWith(alice, page, bobName, "olá");

  await setHidden(page, true);
  await sendMessage(alice.page, "Ótimo, duas vezes?");
  await sendMessage(alice.page, "e agora 😀");
  await expect.poll(() => page.evaluate(() => (window as any).__shown.length)).toBe(2);
  expect(await page.evaluate(() => (window as any).__shown.map((shown: any) => shown.body))).toEqual(["Ótimo, duas vezes?", "e agora 😀"]);
  await setHidden(page, false);
  await expect(page.getByTestId("message").filter({ hasText: "Ótimo, duas vezes?" })).toHaveCount(1);
  await alice.context.close();
  await context.close();
});

test("what came while the page was offline notifies when it catches up", async ({ browser }) => {
  const alice = await newUser(browser, "alice");
  const { context, page, username: bobName } = await userRecordingNotifications(browser, "granted");
  await page.evaluate(() => navigator.serviceWorker.ready);
  await conversationOpenWith(alice, page, bobName, "olá");

  // The laptop is closed; a message comes meanwhile; it wakes up still hidden.
  await closeLaptop(context, page);
  await sendMessage(alice.page, "enquanto você dormia 🌙");
  await context.setOffline(false);
  await expect(page.getByTestId("connection-state")).toHaveAttribute("data-state", "online");
  await expect(page.getByTestId("message").filter({ hasText: "enquanto você dormia 🌙" })).toHaveCount(1);
  await expect.poll(() => page.evaluate(() => (window as any).__shown)).toEqual([
    { title: alice.username, body: "enquanto você dormia 🌙", via: "worker" },
  ]);
  await alice.context.close();
  await context.close();
});

test("direct messages that came while the page was offline notify, in conversations it never opened too", async ({ browser }) => {
  const alice = await newUser(browser, "alice");
  const carla = await newUser(browser, "carla");
  const dora = await newUser(browser, "dora");
  const { context, page, username: bobName } = await userRecordingNotifications(browser, "granted");
  // Dora wrote before this page was loaded: an unread count, never a notification.
  await messagePerson(dora.page, bobName);
  await sendMessage(dora.page, "de antes");
  await page.reload();
  await hydrated(page);
  await page.evaluate(() => navigator.serviceWorker.ready);
  // Alice writes while it is open; Bob has not opened that conversation on this page.
  await writtenToUnopened(alice, page, bobName);
  await expect(directEntry(page, dora.username).getByTestId("unread")).toHaveText(/^1\b/);

  await closeLaptop(context, page);
  await sendMessage(alice.page, "enquanto você dormia 🌙");
  // Carla writes to him for the first time.
  await messagePerson(carla.page, bobName);
  await sendMessage(carla.page, "oi, ação!");
  await context.setOffline(false);
  await expect(page.getByTestId("connection-state")).toHaveAttribute("data-state", "online");
  const shown = () => page.evaluate(() => (window as any).__shown.map((shown: any) => `${shown.title}: ${shown.body}`).sort());
  const expected = [`${alice.username}: enquanto você dormia 🌙`, `${carla.username}: oi, ação!`].sort();
  await expect.poll(shown).toEqual(expected);
  // Nothing more comes: not Dora's old message, not a second copy.
  await page.waitForTimeout(500);
  expect(await shown()).toEqual(expected);
  await alice.context.close();
  await carla.context.close();
  await dora.context.close();
  await context.close();
});

test("a live message that reaches the page after the conversation's newest page still notifies, once", async ({ browser }) => {
  const alice = await newUser(browser, "alice");
  const context = await browser.newContext();
  await context.addInitScript(recordNotifications, "granted");
  const page = await context.newPage();
  // The live copy is held back until the page has loaded the conversation, whose
  // newest page then already holds the message.
  let heldBack: string | null = null;
  await page.routeWebSocket(/\/ws(\?.*)?$/, (ws) => {
    const server = ws.connectToServer();
    ws.onMessage((message) => server.send(message));
    server.onMessage((message) => {
      if (typeof message === "string" && message.startsWith('{"message"') && message.includes("chegou antes?")) {
        heldBack = message;
        return;
      }
      ws.send(message);
      const thatConversation =
        heldBack !== null && typeof message === "string" && message.startsWith('{"history"') &&
        JSON.parse(message).history.room_id === JSON.parse(heldBack).message.message.room_id;
      if (thatConversation) {
        ws.send(heldBack!);
        heldBack = null;
      }
    });
  });
  const bobName = uniqueName("bob");
  await register(page, bobName);
  await page.evaluate(() => navigator.serviceWorker.ready);
  await writtenToUnopened(alice, page, bobName);

  await setHidden(page, true);
  await sendMessage(alice.page, "chegou antes?");
  await expect.poll(() => heldBack !== null).toBe(true);
  await directEntry(page, alice.username).click();
  await expect(page.getByTestId("message").filter({ hasText: "chegou antes?" })).toHaveCount(1);
  await expect.poll(() => page.evaluate(() => (window as any).__shown)).toEqual([
    { title: alice.username, body: "chegou antes?", via: "worker" },
  ]);
  await page.waitForTimeout(500);
  expect(await page.evaluate(() => (window as any).__shown.length)).toBe(1);
  await expect(page.getByTestId("message").filter({ hasText: "chegou antes?" })).toHaveCount(1);
  await alice.context.close();
  await context.close();
});

test("a mention in a room this page never opened, made while it was offline, notifies", async ({ browser }) => {
  const alice = await newUser(browser, "alice");
  const { context, page, username: bobName } = await userRecordingNotifications(browser, "granted");
  await page.evaluate(() => navigator.serviceWorker.ready);
  const room = uniqueName("sala");
  await createRoom(alice.page, room);
  // Bob joins it on his phone; the laptop's page hears of it without opening it.
  const phone = await browser.newContext();
  const phonePage = await phone.newPage();
  await phonePage.goto(`/login?next=${encodeURIComponent(`/r/${room}`)}`);
  await hydrated(phonePage);
  await logIn(phonePage, bobName);
  await phonePage.getByRole("button", { name: `Join #${room}` }).click();
  await expect(phonePage.getByTestId("room-title")).toHaveText(`#${room}`);
  await phone.close();
  await openRooms(page);
  await expect(page.getByTestId("room-list").getByRole("link", { name: new RegExp(room) })).toBeVisible();

  await closeLaptop(context, page);
  await sendMessage(alice.page, "sem menção");
  await sendMessage(alice.page, `@${bobName} ótimo, você viu?`);
  await context.setOffline(false);
  await expect(page.getByTestId("connection-state")).toHaveAttribute("data-state", "online");
  await expect.poll(() => page.evaluate(() => (window as any).__shown)).toEqual([
    { title: `${alice.username} in #${room}`, body: `@${bobName} ótimo, você viu?`, via: "worker" },
  ]);
  await page.waitForTimeout(500);
  expect(await page.evaluate(() => (window as any).__shown.length), "told once").toBe(1);
  await alice.context.close();
  await context.close();
});

test("a connection that drops before the message to notify of came asks for it again at the next", async ({ browser }) => {
  const alice = await newUser(browser, "alice");
  const context = await browser.newContext();
  await context.addInitScript(recordNotifications, "granted");
  const page = await context.newPage();
  // A waking laptop's network drops again: the first answer to a catch-up after the
  // reconnect is lost with the connection.
  let dropAtCatchUp = false;
  let connections = 0;
  await page.routeWebSocket(/\/ws(\?.*)?$/, (ws) => {
    connections += 1;
    const server = ws.connectToServer();
    ws.onMessage((message) => server.send(message));
    server.onMessage((message) => {
      if (dropAtCatchUp && typeof message === "string" && message.startsWith('{"catchup"')) {
        dropAtCatchUp = false;
        ws.close({ code: 1001, reason: "network changed" });
        server.close();
        return;
      }
      ws.send(message);
    });
  });
  const bobName = uniqueName("bob");
  await register(page, bobName);
  await page.evaluate(() => navigator.serviceWorker.ready);
  await writtenToUnopened(alice, page, bobName);

  await closeLaptop(context, page);
  await sendMessage(alice.page, "na segunda tentativa ✨");
  dropAtCatchUp = true;
  await context.setOffline(false);
  await expect.poll(() => page.evaluate(() => (window as any).__shown)).toEqual([
    { title: alice.username, body: "na segunda tentativa ✨", via: "worker" },
  ]);
  expect(dropAtCatchUp, "an answer was lost on the way").toBe(false);
  expect(connections).toBeGreaterThanOrEqual(3);
  await alice.context.close();
  await context.close();
});

test("a tap on a notification shows its conversation in the page that was open", async ({ browser }) => {
  const { alice, context, page } = await notifiedOfADirectMessage(browser, "toque aqui 👆");
  await expect(page).not.toHaveURL(/\/dm\//);

  // Bob taps it.
  await page.evaluate(() => ((window as any).__sameLoad = true));
  await tapNotification(context, page);
  await expect(page).toHaveURL(new RegExp(`/dm/${alice.username}$`));
  await expect(page.getByTestId("message").filter({ hasText: "toque aqui 👆" })).toHaveCount(1);
  expect(await page.evaluate(() => (window as any).__sameLoad), "moved within the page, not loaded again").toBe(true);
  await alice.context.close();
  await context.close();
});

test("a tap on a notification shows its conversation in the tab signed in, not in one still at the login form", async ({ browser }) => {
  const alice = await newUser(browser, "alice");
  const context = await browser.newContext();
  await context.addInitScript(recordNotifications, "granted");
  // Bob opens the site in two tabs, and signs up in the first: that tab was loaded at
  // /register, which is where the service worker still sees it. The second stays at
  // the login form, and the worker lists it first.
  const page = await context.newPage();
  await page.goto("/register");
  await hydrated(page);
  const loginForm = await context.newPage();
  await loginForm.goto("/login");
  await hydrated(loginForm);
  const bobName = uniqueName("bob");
  await page.getByLabel("Username").fill(bobName);
  await page.getByLabel("Password", { exact: true }).fill(PASSWORD);
  await page.getByRole("button", { name: "Create account" }).click();
  await expect(page.getByTestId("connection-state")).toHaveAttribute("data-state", "online");
  await page.evaluate(() => navigator.serviceWorker.ready);
  await setHidden(page, true);
  await messagePerson(alice.page, bobName);
  await sendMessage(alice.page, "qual aba? 🗂️");
  await expect.poll(() => page.evaluate(() => (window as any).__opens)).toEqual([`/dm/${alice.username}`]);

  // What makes the address a poor guide: the worker lists the login form first, and
  // the chat tab at the address it was loaded at.
  const worker = context.serviceWorkers()[0] ?? (await context.waitForEvent("serviceworker"));
  const listed = await worker.evaluate(() =>
    self.clients.matchAll({ type: "window", includeUncontrolled: true }).then((windows) => windows.map((w) => new URL(w.url).pathname)),
  );
  expect(listed).toEqual(["/login", "/register"]);

  await tapNotification(context, page);
  await expect(page).toHaveURL(new RegExp(`/dm/${alice.username}$`));
  await expect(page.getByTestId("message").filter({ hasText: "qual aba? 🗂️" })).toHaveCount(1);
  expect(await loginForm.evaluate(() => (window as any).__told.filter((told: any) => told.open)), "the login form was not asked to open it").toEqual([]);
  await expect(loginForm).toHaveURL(/\/login$/);
  await alice.context.close();
  await context.close();
});

test("logging out closes the last person's notifications, and a tap on one does not move the next person's page", async ({ browser }) => {
  const { alice, context, page } = await notifiedOfADirectMessage(browser, "para o Bob");
  await setHidden(page, false);

  // Bob logs out: his notification is closed, as his session ends on the page.
  await openRooms(page);
  await page.getByRole("button", { name: "Log out" }).click();
  await expect(page).toHaveURL(/\/login/);
  await expect.poll(() => page.evaluate(() => (window as any).__closed)).toBe(1);
  // Had it been tapped anyway (a tray slower to clear), the page is told, and stays.
  await tapNotification(context, page);
  await expect.poll(() => page.evaluate(() => (window as any).__told.filter((told: any) => told.open).length)).toBe(1);
  // Carla logs in on that page and lands where she asked, not in Bob's conversation.
  const carlaName = uniqueName("carla");
  const carla = await browser.newContext();
  await register(await carla.newPage(), carlaName);
  await carla.close();
  await logIn(page, carlaName);
  await expect(page.getByTestId("connection-state")).toHaveAttribute("data-state", "online");
  await expect(page.getByTestId("me")).toHaveText(carlaName);
  await page.waitForTimeout(500);
  await expect(page).not.toHaveURL(/\/dm\//);
  await alice.context.close();
  await context.close();
});
