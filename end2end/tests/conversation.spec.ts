import { expect, test, PASSWORD, createRoom, hydrated, newUser, openRooms, register, sendMessage, uniqueName, joinRoom } from "./helpers";
import { type Page } from "@playwright/test";
import { OwnServer } from "./own-server";

test("messages sit under a day heading and show their full date on hover or tap", async ({ browser }) => {
  const ana = await newUser(browser, "ana");
  const room = uniqueName("days").replace(/_/g, "-");
  await createRoom(ana.page, room);
  await sendMessage(ana.page, "what day is it?");
  await expect(ana.page.getByTestId("day").first()).toHaveText("Today");
  const time = ana.page.getByTestId("message").filter({ hasText: "what day is it?" }).getByTestId("time");
  await expect(time).toHaveText(/^\d\d:\d\d$/);
  const full = await time.getAttribute("title");
  expect(full).toMatch(/\d{4}.*\d\d:\d\d$/);
  await time.click();
  await expect(time).toHaveText(full!);
  await ana.context.close();
});

test("a draft stays with its conversation when switching rooms", async ({ browser }) => {
  const ana = await newUser(browser, "ana");
  const room = uniqueName("drafts").replace(/_/g, "-");
  await createRoom(ana.page, room);
  const composer = ana.page.getByRole("textbox", { name: /^Message / });
  await composer.fill("half a thought, ação");
  await openRooms(ana.page);
  await ana.page.getByRole("link", { name: "#general" }).click();
  await expect(ana.page.getByTestId("room-title")).toHaveText("#general");
  await expect(composer).toHaveValue("");
  await composer.fill("something for general");
  await openRooms(ana.page);
  await ana.page.getByRole("link", { name: `#${room}` }).click();
  await expect(composer).toHaveValue("half a thought, ação");
  await openRooms(ana.page);
  await ana.page.getByRole("link", { name: "#general" }).click();
  await expect(composer).toHaveValue("something for general");
  await ana.context.close();
});

test("a direct conversation's composer names the other person", async ({ browser }) => {
  const ana = await newUser(browser, "ana", "Ana Lima");
  const bia = await newUser(browser, "bia");
  await openRooms(bia.page);
  await bia.page.getByLabel("New message").fill(ana.username);
  await bia.page.getByRole("button", { name: `Message Ana Lima` }).click();
  await expect(bia.page.getByTestId("room-title")).toHaveText("Ana Lima");
  const composer = bia.page.getByRole("textbox", { name: "Message Ana Lima" });
  await expect(composer).toHaveAttribute("placeholder", "Message Ana Lima");
  await ana.context.close();
  await bia.context.close();
});

test("joins and leaves collapse into one line and never count as unread", async ({ browser }) => {
  // Five people register (each an argon2 hash) and open pages: on two busy cores this
  // alone can take most of the default 30 s.
  test.setTimeout(60_000);
  const ana = await newUser(browser, "ana");
  const room = uniqueName("crowd").replace(/_/g, "-");
  await createRoom(ana.page, room);
  // Ana watches #general while people come and go in her room.
  await openRooms(ana.page);
  await ana.page.getByRole("link", { name: "#general" }).click();
  const entry = ana.page.getByTestId("room-list").getByRole("link", { name: new RegExp(`#${room}`) });
  const others = [];
  for (const name of ["bia", "caio", "davi", "eva"]) {
    const person = await newUser(browser, name);
    await joinRoom(person.page, room);
    others.push(person);
  }
  await others[3].page.getByRole("button", { name: "Leave" }).click();
  await openRooms(ana.page);
  await expect(entry.getByTestId("unread")).toHaveCount(0);
  await expect(ana.page).not.toHaveTitle(/^\(/);

  await sendMessage(others[0].page, "olá a todos");
  await expect(entry.getByTestId("unread")).toHaveText(/^1/);
  await entry.click();
  const notices = ana.page.getByTestId("notice");
  await expect(notices).toHaveCount(1);
  // Each person once, by what they did last: Eva, who came and went, as having left.
  await expect(notices).toHaveText(new RegExp(`^${ana.username}, ${others[0].username} and 2 others joined · ${others[3].username} left$`));
  for (const person of others) await person.context.close();
  await ana.context.close();
});

test("read while the connection was down stays read after it comes back", async ({ browser }) => {
  const ana = await newUser(browser, "ana");
  const bia = await newUser(browser, "bia");
  const room = uniqueName("away").replace(/_/g, "-");
  await createRoom(ana.page, room);
  await joinRoom(bia.page, room);
  // Bia looks at #general; a message arrives in the room she has loaded.
  await openRooms(bia.page);
  await bia.page.getByRole("link", { name: "#general" }).click();
  await sendMessage(ana.page, "read me offline");
  const entry = bia.page.getByTestId("room-list").getByRole("link", { name: new RegExp(`#${room}`) });
  await openRooms(bia.page);
  await expect(entry.getByTestId("unread")).toHaveText(/^1/);

  await bia.context.setOffline(true);
  await expect(bia.page.getByTestId("connection-state")).toHaveAttribute("data-state", "reconnecting");
  await entry.click();
  await expect(bia.page.getByTestId("message").filter({ hasText: "read me offline" })).toBeVisible();
  await openRooms(bia.page);
  await expect(entry.getByTestId("unread")).toHaveCount(0);

  await bia.context.setOffline(false);
  await expect(bia.page.getByTestId("connection-state")).toHaveAttribute("data-state", "online");
  await bia.page.waitForTimeout(1_000);
  await expect(entry.getByTestId("unread")).toHaveCount(0);
  await expect(bia.page).not.toHaveTitle(/^\(/);
  // The server heard it too: a fresh load has nothing unread there.
  await bia.page.goto("/r/general");
  await hydrated(bia.page);
  await expect(bia.page.getByTestId("connection-state")).toHaveAttribute("data-state", "online");
  await openRooms(bia.page);
  await expect(bia.page.getByTestId("room-list").getByRole("link", { name: new RegExp(`#${room}`) }).getByTestId("unread")).toHaveCount(0);
  await ana.context.close();
  await bia.context.close();
});

test("a login sent before the page's script runs says why it was refused, then goes where the visitor was going", async ({ browser }) => {
  const ana = await newUser(browser, "ana");
  await ana.context.close();
  const context = await browser.newContext({ javaScriptEnabled: false });
  const page = await context.newPage();
  await page.goto("/r/general");
  await expect(page).toHaveURL(/\/login\?next=%2Fr%2Fgeneral$/);
  await expect(page.locator('input[name="next"]')).toHaveAttribute("value", "/r/general");
  // Refused, the form comes back saying why (not the server's raw answer).
  await page.getByLabel("Username").fill(ana.username);
  await page.locator("#password").fill("wrong password");
  await page.getByRole("button", { name: "Log in" }).click();
  await expect(page).toHaveURL(/\/login\?next=%2Fr%2Fgeneral&error=wrong_login$/);
  await expect(page.getByRole("alert")).toHaveText("Wrong username or password.");
  const refusedAt = page.url();
  await page.getByLabel("Username").fill(ana.username);
  await page.locator("#password").fill(PASSWORD);
  await page.getByRole("button", { name: "Log in" }).click();
  await expect(page).toHaveURL(/\/r\/general$/);
  await context.close();

  // With the script, the page says it once: the code leaves the address, so neither a
  // reload nor coming back to the page says it again.
  const live = await browser.newContext();
  const livePage = await live.newPage();
  await livePage.goto(refusedAt);
  await hydrated(livePage);
  await expect(livePage).toHaveURL(/\/login\?next=%2Fr%2Fgeneral$/);
  await expect(livePage.getByRole("alert")).toHaveText("Wrong username or password.");
  await livePage.reload();
  await hydrated(livePage);
  await expect(livePage.getByRole("alert")).toHaveText("");
  await live.close();
});

test("on a phone the rooms drawer takes focus, closes on Escape and gives focus back", async ({ browser }, testInfo) => {
  test.skip(testInfo.project.name !== "phone", "the drawer is a phone layout");
  const ana = await newUser(browser, "ana");
  const page = ana.page;
  const menu = page.getByRole("button", { name: "Open rooms" });
  await menu.click();
  await expect(page.locator("#sidebar")).toHaveAttribute("data-open", "true");
  await expect(page.getByRole("button", { name: "Close rooms" })).toBeFocused();
  await expect(page.locator("main")).toHaveAttribute("inert", "");
  await page.keyboard.press("Escape");
  await expect(page.locator("#sidebar")).toHaveAttribute("data-open", "false");
  await expect(menu).toBeFocused();
  await expect(page.locator("main")).not.toHaveAttribute("inert");
  await ana.context.close();
});

test("a page left open overnight says Yesterday over what was today", async ({ browser }) => {
  const context = await browser.newContext();
  const page = await context.newPage();
  // Time runs as usual; the test can move it on.
  await page.clock.install();
  await register(page, uniqueName("noite"));
  const text = `boa noite 🌙 ${uniqueName("n")}`;
  await sendMessage(page, text);
  const separator = page.getByTestId("day").last();
  await expect(separator).toHaveText("Today");
  await page.clock.fastForward("24:00:00");
  // The next morning the person comes back to the page.
  await page.evaluate(() => window.dispatchEvent(new Event("focus")));
  await expect(separator).toHaveText("Yesterday");
  await expect(page.getByTestId("message").filter({ hasText: text })).toHaveCount(1);
  await context.close();
});

/** Which of `written` the page shows after a reload (as stored, in the order stored),
 *  once the last of them is there. */
async function shownAfterReload(page: Page, written: string[]): Promise<string[]> {
  await page.reload();
  await expect(page.getByTestId("connection-state")).toHaveAttribute("data-state", "online");
  const texts = page.getByTestId("message").getByTestId("text");
  await expect(texts.filter({ hasText: written.at(-1)! })).toHaveCount(1);
  return (await texts.allTextContents()).filter((text) => written.includes(text));
}

test("messages written faster than the server takes them are all stored, in the order written", async ({ browser }) => {
  test.setTimeout(90_000);
  // The usual allowance, ten messages at once and then one a second (the run's own
  // server allows any number).
  const server = await OwnServer.launch({ PARLEY_LIMITS_MESSAGES_BURST: "10", PARLEY_LIMITS_MESSAGES_PER_SECOND: "1" });
  const context = await browser.newContext();
  try {
    const page = await context.newPage();
    let refused = 0;
    page.on("websocket", (socket) =>
      socket.on("framereceived", ({ payload }) => {
        if (String(payload).includes('"rate_limited"')) refused++;
      }),
    );
    await register(page, uniqueName("rita"), "", server.baseURL);
    const composer = page.getByRole("textbox", { name: /^Message / });
    const written = Array.from({ length: 16 }, (_, n) => `Ótimo, rápido nº ${n} 😀`);
    for (const text of written) {
      await composer.fill(text);
      await composer.press("Enter");
    }
    await expect(page.getByText("Sending…")).toHaveCount(0, { timeout: 30_000 });
    expect(refused, "the server said too fast").toBeGreaterThan(0);
    expect(await shownAfterReload(page, written)).toEqual(written);
  } finally {
    await context.close();
    await server.dispose();
  }
});

test("a long outbox sent after a reconnect is stored whole and in order, and the socket is not closed for it", async ({ browser }) => {
  test.setTimeout(120_000);
  // Ten messages at once, then twenty a second: the outbox below is more than the
  // server would take at once, and than the refusals in a row it bears (a hundred).
  const server = await OwnServer.launch({ PARLEY_LIMITS_MESSAGES_BURST: "10", PARLEY_LIMITS_MESSAGES_PER_SECOND: "20" });
  const context = await browser.newContext();
  try {
    const page = await context.newPage();
    let sockets = 0;
    page.on("websocket", () => sockets++);
    await register(page, uniqueName("tiago"), "", server.baseURL);
    await context.setOffline(true);
    await expect(page.getByTestId("connection-state")).toHaveAttribute("data-state", "reconnecting");
    const composer = page.getByRole("textbox", { name: /^Message / });
    const written = Array.from({ length: 120 }, (_, n) => `sem rede nº ${n} ✈️`);
    for (const text of written) {
      await composer.fill(text);
      await composer.press("Enter");
    }
    await context.setOffline(false);
    await expect(page.getByText("Sending…")).toHaveCount(0, { timeout: 60_000 });
    expect(sockets, "one socket at the start, one after coming back").toBe(2);
    const shown = await shownAfterReload(page, written);
    expect(shown).toEqual(written.slice(-shown.length));
    expect(shown.length, "the newest page holds many of them").toBeGreaterThanOrEqual(40);
  } finally {
    await context.close();
    await server.dispose();
  }
});
