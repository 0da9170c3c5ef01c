import { type WebSocketRoute } from "@playwright/test";
import { expect, test, createRoom, hydrated, logIn, newUser, openRooms, PASSWORD, register, sendMessage, uniqueName, joinRoom } from "./helpers";

test("two people join a new room, see each other's names, notices and messages", async ({ browser }) => {
  const alice = await newUser(browser, "alice", "Alice Liddell");
  const bob = await newUser(browser, "bob", "Bob Builder");
  const room = uniqueName("tea").replace(/_/g, "-");

  await createRoom(alice.page, room);
  await joinRoom(bob.page, room);

  // Alice sees the join notice, styled apart from messages.
  await expect(alice.page.getByTestId("notice").filter({ hasText: "Bob Builder joined" })).toBeVisible();

  await sendMessage(alice.page, "Hello Bob!");
  const atBob = bob.page.getByTestId("message").filter({ hasText: "Hello Bob!" });
  await expect(atBob).toHaveCount(1);
  await expect(atBob).toHaveAttribute("data-own", "false");
  await expect(atBob.getByTestId("sender")).toHaveText("Alice Liddell");

  await sendMessage(bob.page, "Hi Alice");
  const atAlice = alice.page.getByTestId("message").filter({ hasText: "Hi Alice" });
  await expect(atAlice).toHaveCount(1);
  await expect(atAlice.getByTestId("sender")).toHaveText("Bob Builder");
  await expect(alice.page.getByTestId("message").filter({ hasText: "Hello Bob!" })).toHaveAttribute("data-own", "true");

  // Both are online in the room.
  await expect(alice.page.getByTestId("presence").locator("summary")).toContainText("2 online");
  await alice.context.close();
  await bob.context.close();
});

test("a person's messages in a row show their name once, and each its time", async ({ browser }) => {
  const alice = await newUser(browser, "alice", "Alice Ótima");
  const bob = await newUser(browser, "bob", "Bob 😀");
  const room = uniqueName("runs").replace(/_/g, "-");
  await createRoom(alice.page, room);
  await joinRoom(bob.page, room);

  for (const text of ["Bom dia!", "Tudo bem? 🙂", "Reunião às 10h"]) await sendMessage(alice.page, text);
  const atBob = (text: string) => bob.page.getByTestId("message").filter({ hasText: text });
  await expect(atBob("Bom dia!").getByTestId("sender")).toHaveText("Alice Ótima");
  for (const text of ["Tudo bem? 🙂", "Reunião às 10h"]) {
    await expect(atBob(text)).toHaveAttribute("data-follows", "true");
    await expect(atBob(text).getByTestId("sender")).toHaveCount(0);
    await expect(atBob(text).getByTestId("time")).toBeVisible();
  }
  // Someone else between: her next message starts a run of its own.
  await sendMessage(bob.page, "Tudo ótimo");
  await sendMessage(alice.page, "Até já");
  await expect(atBob("Até já").getByTestId("sender")).toHaveText("Alice Ótima");
  await expect(atBob("Até já")).not.toHaveAttribute("data-follows", "true");
  // The same after a reload, laid out from history.
  await bob.page.reload();
  await expect(atBob("Reunião às 10h")).toHaveAttribute("data-follows", "true");
  await expect(atBob("Bom dia!").getByTestId("sender")).toHaveText("Alice Ótima");
  await alice.context.close();
  await bob.context.close();
});

test("the online list keeps names in order whatever their letter case, as people arrive", async ({ browser }) => {
  const watcher = await newUser(browser, "mia", "Mia");
  const room = uniqueName("cases").replace(/_/g, "-");
  await createRoom(watcher.page, room);
  const presence = watcher.page.getByTestId("presence");
  await presence.locator("summary").click();
  const names = presence.getByTestId("online-name");
  await expect(names).toHaveText(["Mia"]);

  // Each arrival is placed by this page itself (the server only says who came), so
  // the page must fold case as the server does: "Zé" after "ana", "éden" before "Élia".
  const arrivals = [];
  for (const name of ["Zé", "ana", "Élia", "éden"]) {
    const person = await newUser(browser, "case", name);
    await joinRoom(person.page, room);
    arrivals.push(person);
  }
  await expect(names).toHaveText(["ana", "Mia", "Zé", "éden", "Élia"]);
  await expect(presence.locator("summary")).toContainText("5 online");
  for (const person of [watcher, ...arrivals]) await person.context.close();
});

test("a reload keeps the session and the history", async ({ browser }) => {
  const carol = await newUser(browser, "carol");
  const room = uniqueName("keep").replace(/_/g, "-");
  await createRoom(carol.page, room);
  await sendMessage(carol.page, "written before the reload");
  await carol.page.reload();
  await hydrated(carol.page);
  await expect(carol.page.getByTestId("connection-state")).toHaveAttribute("data-state", "online");
  await expect(carol.page.getByTestId("message").filter({ hasText: "written before the reload" })).toHaveCount(1);
  await carol.context.close();
});

test("markup in a message is shown as text, never run", async ({ browser }) => {
  const dave = await newUser(browser, "dave");
  const eve = await newUser(browser, "eve");
  let dialogs = 0;
  for (const page of [dave.page, eve.page]) page.on("dialog", async (d) => { dialogs += 1; await d.dismiss(); });
  // Unique per run: both projects post into the shared #general.
  const payload = `<img src=x onerror=alert(1)> <script>alert(2)</script> ${uniqueName("xss")}`;
  await sendMessage(dave.page, payload);
  const atEve = eve.page.getByTestId("message").filter({ hasText: payload });
  await expect(atEve).toHaveCount(1);
  await expect(atEve.locator("img")).toHaveCount(0);
  await expect(eve.page.locator("img[src=x]")).toHaveCount(0);
  expect(dialogs).toBe(0);
  await dave.context.close();
  await eve.context.close();
});

test("Enter sends, Shift+Enter adds a line", async ({ browser }) => {
  const frank = await newUser(browser, "frank");
  const composer = frank.page.getByRole("textbox", { name: /^Message / });
  const second = `second line ${uniqueName("x")}`;
  await composer.fill("first line");
  await composer.press("Shift+Enter");
  await composer.pressSequentially(second);
  await expect(composer).toHaveValue(`first line\n${second}`);
  await frank.page.getByRole("button", { name: "Send" }).click();
  const sent = frank.page.getByTestId("message").filter({ hasText: second });
  await expect(sent).toHaveCount(1);
  await expect(sent).toHaveAttribute("data-own", "true");
  expect(await sent.getByTestId("text").innerText()).toBe(`first line\n${second}`);
  await expect(composer).toHaveValue("");
  await frank.context.close();
});

test("a taken username is refused in place, keeping what was typed", async ({ browser }) => {
  const ana = await newUser(browser, "ana");
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto("/register");
  await hydrated(page);
  await page.getByLabel("Username").fill(ana.username);
  await page.getByLabel("Display name").fill("Ótimo ação 😀");
  await page.getByLabel("Password", { exact: true }).fill(PASSWORD);
  await page.getByRole("button", { name: "Create account" }).click();
  await expect(page.getByRole("alert")).toHaveText("That username is taken.");
  await expect(page).toHaveURL(/\/register$/);
  await expect(page.getByLabel("Display name")).toHaveValue("Ótimo ação 😀");
  await expect(page.getByRole("button", { name: "Create account" })).toBeEnabled();
  // The same form, another name: it goes through.
  await page.getByLabel("Username").fill(uniqueName("ana"));
  await page.getByRole("button", { name: "Create account" }).click();
  await expect(page.getByTestId("connection-state")).toHaveAttribute("data-state", "online");
  await expect(page.getByTestId("me")).toHaveText("Ótimo ação 😀");
  await ana.context.close();
  await context.close();
});

test("a refusal before the server function runs says what happened, and log out shows it too", async ({ browser }) => {
  const ana = await newUser(browser, "ana");
  const page = ana.page;
  // What the per-address request limit answers: not a server function's error.
  await page.route("**/api/logout", (route) =>
    route.fulfill({ status: 429, headers: { "retry-after": "7", "content-type": "application/json" }, body: '{"error":"slow down"}' }),
  );
  await openRooms(page);
  await page.getByRole("button", { name: "Log out" }).click();
  await expect(page.getByRole("alert").filter({ hasText: "Too many" })).toHaveText("Too many requests. Try again in 7 s.");
  await expect(page.getByRole("button", { name: "Log out" })).toBeEnabled();
  await expect(page.getByTestId("connection-state")).toHaveAttribute("data-state", "online");
  await page.unroute("**/api/logout");
  await page.getByRole("button", { name: "Log out" }).click();
  await expect(page).toHaveURL(/\/login/);
  await ana.context.close();
});

test("chat pages ask for a login and then return to where you were going", async ({ browser }) => {
  const context = await browser.newContext();
  const page = await context.newPage();
  const username = uniqueName("grace");
  // Register in another context, then log in from this one.
  const other = await browser.newContext();
  const otherPage = await other.newPage();
  await otherPage.goto("/register");
  await hydrated(otherPage);
  await otherPage.getByLabel("Username").fill(username);
  await otherPage.getByLabel("Password", { exact: true }).fill(PASSWORD);
  await otherPage.getByRole("button", { name: "Create account" }).click();
  await expect(otherPage.getByTestId("connection-state")).toHaveAttribute("data-state", "online");

  await page.goto("/r/general");
  await expect(page).toHaveURL(/\/login\?next=%2Fr%2Fgeneral$/);
  await hydrated(page);
  await page.getByLabel("Username").fill(username);
  await page.getByLabel("Password", { exact: true }).fill("wrong password");
  await page.getByRole("button", { name: "Log in" }).click();
  await expect(page.getByRole("alert")).toHaveText("Wrong username or password.");
  // Said in place: the page did not reload, so what was typed is still there.
  await expect(page).toHaveURL(/\/login\?next=%2Fr%2Fgeneral$/);
  await expect(page.getByLabel("Username")).toHaveValue(username);
  // Marks this document: a full page load would lose the mark, the router keeps it.
  await page.evaluate(() => ((window as unknown as { sameDocument: boolean }).sameDocument = true));
  await page.getByLabel("Password", { exact: true }).fill(PASSWORD);
  await page.getByRole("button", { name: "Log in" }).click();
  await expect(page).toHaveURL(/\/r\/general$/);
  await expect(page.getByTestId("connection-state")).toHaveAttribute("data-state", "online");
  expect(await page.evaluate(() => (window as unknown as { sameDocument?: boolean }).sameDocument)).toBe(true);

  // Logging out ends the session: the chat is out of reach again.
  await openRooms(page);
  await page.getByRole("button", { name: "Log out" }).click();
  await expect(page).toHaveURL(/\/login/);
  await page.goto("/r/general");
  await expect(page).toHaveURL(/\/login\?next=/);
  await context.close();
  await other.close();
});

test("logging out and in as someone else on the same page shows only that person's chat", async ({ browser }) => {
  const bob = await newUser(browser, "bob", "Bob Segundo");
  await bob.context.close();
  const context = await browser.newContext();
  const page = await context.newPage();
  let greet = true;
  let held: WebSocketRoute | undefined;
  let closeReachedPage = () => {};
  const closedForAna = new Promise<void>((resolve) => (closeReachedPage = resolve));
  await page.routeWebSocket(/\/ws(\?.*)?$/, (ws) => {
    if (!greet) {
      // Never greeted, as on a slow network: whatever shows meanwhile is the page's own.
      held = ws;
      return;
    }
    const server = ws.connectToServer();
    // The server's close for the logout reaches the page after the page has moved on
    // to the login form, as when the socket is on another node.
    server.onClose((code, reason) =>
      setTimeout(() => {
        ws.close({ code, reason });
        closeReachedPage();
      }, 1_000),
    );
  });
  await register(page, uniqueName("ana"), "Ana Ótima");
  const room = uniqueName("ana").replace(/_/g, "-");
  await createRoom(page, room);
  const secret = `segredo da Ana 🤫 ${uniqueName("s")}`;
  await sendMessage(page, secret);

  greet = false;
  await openRooms(page);
  await page.getByRole("button", { name: "Log out" }).click();
  await expect(page).toHaveURL(/\/login$/);
  await closedForAna;
  await logIn(page, bob.username);
  await expect.poll(() => held !== undefined).toBe(true);
  // Still at the chat, not sent back to the login form, and nothing of Ana's shows.
  await expect(page).toHaveURL(/\/$/);
  await expect(page.getByTestId("connection-state")).toHaveAttribute("data-state", "connecting");
  await expect(page.getByTestId("me")).toHaveCount(0);
  await expect(page.getByRole("link", { name: `#${room}` })).toHaveCount(0);
  await expect(page.getByText(secret)).toHaveCount(0);

  greet = true;
  held!.close({ code: 1011, reason: "internal error" });
  await expect(page.getByTestId("connection-state")).toHaveAttribute("data-state", "online", { timeout: 15_000 });
  await expect(page.getByTestId("me")).toHaveText("Bob Segundo");
  await expect(page).toHaveURL(/\/$/);
  await expect(page.getByRole("link", { name: `#${room}` })).toHaveCount(0);
  await expect(page.getByText(secret)).toHaveCount(0);
  await context.close();
});

test("a log in turned into a redirect on its way goes where the redirect led", async ({ browser }) => {
  const context = await browser.newContext();
  const page = await context.newPage();
  // Stands in for something in front of the server (a proxy's maintenance or sign-on
  // page) answering the post with a redirect: fetch follows it, and so must the page.
  await page.route("**/api/login", (route) => route.fulfill({ status: 303, headers: { location: "/register?from=proxy" } }));
  await page.goto("/login");
  await hydrated(page);
  await page.evaluate(() => ((window as unknown as { sameDocument: boolean }).sameDocument = true));
  await page.getByLabel("Username").fill(uniqueName("rui"));
  await page.getByLabel("Password", { exact: true }).fill(PASSWORD);
  await page.getByRole("button", { name: "Log in" }).click();
  await expect(page).toHaveURL(/\/register\?from=proxy$/);
  await expect(page.getByRole("button", { name: "Create account" })).toBeVisible();
  expect(await page.evaluate(() => (window as unknown as { sameDocument?: boolean }).sameDocument)).toBe(true);
  await context.close();
});
