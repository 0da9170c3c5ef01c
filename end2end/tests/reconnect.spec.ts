import { type Page, type WebSocketRoute } from "@playwright/test";
import { expect, test, PASSWORD, UNREADABLE_FRAMES, hydrated, register, uniqueName } from "./helpers";
import { OwnServer } from "./own-server";

/** Registers on a server of the test's own and waits for the chat to be online. */
function registerOn(page: Page, server: OwnServer, username: string) {
  return register(page, username, "", server.baseURL);
}

test("a tab backs off while the server is down, then reconnects and catches up", async ({ browser }) => {
  test.setTimeout(120_000);
  const server = await OwnServer.launch();
  try {
    const context = await browser.newContext();
    const page = await context.newPage();
    const sockets: number[] = [];
    page.on("websocket", () => sockets.push(Date.now()));
    await registerOn(page, server, uniqueName("ana"));

    await server.stop();
    const downAt = Date.now();
    await expect(page.getByTestId("connection-state")).toHaveAttribute("data-state", "reconnecting");
    // An `online` event while the browser never was offline is no reason to hurry.
    for (let n = 0; n < 10; n++) {
      await page.evaluate(() => window.dispatchEvent(new Event("online")));
      await page.waitForTimeout(2_000);
    }
    const attempts = sockets.filter((at) => at >= downAt && at < downAt + 20_000).length;
    expect(attempts, `socket attempts in the first 20 s of the outage`).toBeLessThanOrEqual(6);
    expect(attempts).toBeGreaterThanOrEqual(2);

    // Back up, with news: someone wrote while this tab was away.
    await server.start();
    const other = await browser.newContext();
    const otherPage = await other.newPage();
    await registerOn(otherPage, server, uniqueName("bia"));
    const composer = otherPage.getByRole("textbox", { name: /^Message / });
    await composer.fill("written while you were away");
    await composer.press("Enter");
    await expect(otherPage.getByTestId("message").filter({ hasText: "written while you were away" })).toHaveCount(1);

    await expect(page.getByTestId("connection-state")).toHaveAttribute("data-state", "online", { timeout: 45_000 });
    await expect(page.getByTestId("message").filter({ hasText: "written while you were away" })).toHaveCount(1);
    await context.close();
    await other.close();
  } finally {
    await server.dispose();
  }
});

test("a message the server keeps failing on is given up after a few tries, then retried or discarded", async ({ browser }) => {
  test.setTimeout(200_000);
  const context = await browser.newContext();
  const page = await context.newPage();
  const poison = `never arrives ${uniqueName("x")}`;
  const tries = new Map<string, number>();
  let letThrough = false;
  // Stands in for a server that drops the connection whenever such a message is sent.
  await page.routeWebSocket(/\/ws(\?.*)?$/, (ws) => {
    const server = ws.connectToServer();
    ws.onMessage((message) => {
      if (typeof message === "string" && message.includes(poison) && !letThrough) {
        const text = JSON.parse(message).text as string;
        tries.set(text, (tries.get(text) ?? 0) + 1);
        ws.close({ code: 1011, reason: "internal error" });
        return;
      }
      server.send(message);
    });
  });
  await page.goto("/register");
  await hydrated(page);
  await page.getByLabel("Username").fill(uniqueName("caio"));
  await page.getByLabel("Password", { exact: true }).fill(PASSWORD);
  await page.getByRole("button", { name: "Create account" }).click();
  await expect(page.getByTestId("connection-state")).toHaveAttribute("data-state", "online");

  const [first, second] = [`${poison} one`, `${poison} two`];
  const composer = page.getByRole("textbox", { name: /^Message / });
  for (const text of [first, second]) {
    await composer.fill(text);
    await composer.press("Enter");
  }
  const pendingFirst = page.getByTestId("pending").filter({ hasText: first });
  const pendingSecond = page.getByTestId("pending").filter({ hasText: second });
  await expect(pendingFirst).toHaveAttribute("data-failed", "true", { timeout: 45_000 });
  // The second is tried on the same connections when it went out with the first, or
  // on its own after that, each reconnect then waiting up to the 30 s backoff cap.
  await expect(pendingSecond).toHaveAttribute("data-failed", "true", { timeout: 120_000 });
  expect(tries.get(first)).toBe(4);
  expect(tries.get(second) ?? 0).toBeLessThanOrEqual(4);
  await expect(pendingFirst).toContainText("Not sent");
  await page.waitForTimeout(3_000);
  expect(tries.get(first), "no more tries once given up").toBe(4);

  // Discard drops one; Retry (the trouble is over now) sends the other, once.
  await pendingSecond.getByRole("button", { name: "Discard" }).click();
  await expect(pendingSecond).toHaveCount(0);
  letThrough = true;
  await expect(page.getByTestId("connection-state")).toHaveAttribute("data-state", "online", { timeout: 30_000 });
  await pendingFirst.getByRole("button", { name: "Retry" }).click();
  await expect(page.getByTestId("message").filter({ hasText: first })).toHaveCount(1);
  await expect(pendingFirst).toHaveCount(0);
  await page.reload();
  await hydrated(page);
  await expect(page.getByTestId("message").filter({ hasText: first })).toHaveCount(1);
  await expect(page.getByTestId("message").filter({ hasText: second })).toHaveCount(0);
  await context.close();
});

test("a page left open across a deploy that changed the protocol offers a reload, then works", async ({ browser }) => {
  const context = await browser.newContext();
  const page = await context.newPage();
  const server = await OwnServer.launch();
  try {
    await registerOn(page, server, uniqueName("ines"));
    // The server after the deploy: it closes this page's sockets as out of date
    // (close code 4009, what it says to a page naming an older protocol).
    let refused = 0;
    let reloaded = false;
    await page.routeWebSocket(/\/ws(\?.*)?$/, (ws) => {
      if (reloaded) ws.connectToServer();
      else {
        refused++;
        ws.close({ code: 4009, reason: "page out of date" });
      }
    });
    await server.stop();
    await server.start();

    const bar = page.getByRole("alert").filter({ hasText: "Parley was updated" });
    await expect(bar).toBeVisible({ timeout: 20_000 });
    await expect(page.getByTestId("connection-state")).toHaveAttribute("data-state", "outdated");
    // It stops trying, also when the chat page is shown again: another attempt could
    // only be refused the same way.
    expect(refused).toBe(1);
    await page.goBack();
    await page.goForward();
    await page.waitForTimeout(3_000);
    expect(refused).toBe(1);
    await expect(bar).toBeVisible();

    // What was written meanwhile cannot go out, and a reload would lose it: said.
    const composer = page.getByRole("textbox", { name: /^Message / });
    await composer.fill("escrito depois da atualização");
    await composer.press("Enter");
    await expect(bar).toContainText("The message not sent yet would be lost");

    // Reloading loads the page again (the new build's code) and connects.
    reloaded = true;
    await page.evaluate(() => ((window as any).loadedBeforeTheDeploy = true));
    await bar.getByRole("button", { name: "Reload" }).click();
    await expect(page.getByTestId("connection-state")).toHaveAttribute("data-state", "online");
    await expect(bar).toHaveCount(0);
    expect(await page.evaluate(() => (window as any).loadedBeforeTheDeploy)).toBeUndefined();
  } finally {
    await context.close();
    await server.dispose();
  }
});

test("a greeting the page cannot read, from a server not yet updated, is given up on and tried again", async ({ browser }) => {
  test.info().annotations.push({ type: UNREADABLE_FRAMES });
  const context = await browser.newContext();
  const page = await context.newPage();
  // During a deploy the balancer may send the page to a node still on the previous
  // protocol: it does not check the page's version and greets in its own shape.
  let olderServers = 1;
  await page.routeWebSocket(/\/ws(\?.*)?$/, (ws) => {
    if (olderServers > 0) {
      olderServers--;
      ws.send(JSON.stringify({ type: "hello", protocol: 2, server_time: Date.now() }));
    } else ws.connectToServer();
  });
  await register(page, uniqueName("tome"));
  expect(olderServers).toBe(0);
  await context.close();
});

test("a connection that went silent without closing is noticed, and what was written meanwhile goes out once", async ({ browser }) => {
  const context = await browser.newContext();
  const page = await context.newPage();
  // Time runs as usual; the test can move it on.
  await page.clock.install();
  // Stands in for a phone that moved to another network: nothing more gets through
  // the connections open then, either way, and nothing says they are gone.
  const open: { cut: boolean }[] = [];
  let pings = 0;
  let pongs = 0;
  await page.routeWebSocket(/\/ws(\?.*)?$/, (ws) => {
    const connection = { cut: false };
    open.push(connection);
    const server = ws.connectToServer();
    ws.onMessage((message) => {
      if (connection.cut) return;
      if (typeof message === "string" && message.includes('"type":"ping"')) pings++;
      server.send(message);
    });
    server.onMessage((message) => {
      if (connection.cut) return;
      if (typeof message === "string" && message.startsWith('{"pong"')) pongs++;
      ws.send(message);
    });
  });
  await register(page, uniqueName("tunel"));

  // A quiet connection that is alive answers the page's question and stays. Any frame
  // puts the question off (other tests' people coming and going in #general send
  // some), and one handled just after the clock moved puts it 20 to 30 s on: then the
  // clock moves again, but only once every question has its answer (a second
  // question without one would end the connection).
  for (const asked of [1, 2]) {
    await expect(async () => {
      if (pings === pongs) await page.clock.fastForward("00:31");
      await expect.poll(() => pongs, { timeout: 3_000 }).toBeGreaterThanOrEqual(asked);
    }).toPass({ timeout: 20_000 });
  }
  expect(open.length).toBe(1);
  await expect(page.getByTestId("connection-state")).toHaveAttribute("data-state", "online");

  open.forEach((connection) => (connection.cut = true));
  const text = `escrito no túnel 🚇 ${uniqueName("t")}`;
  const composer = page.getByRole("textbox", { name: /^Message / });
  await composer.fill(text);
  await composer.press("Enter");
  await expect(page.getByTestId("pending").filter({ hasText: text })).toContainText("Sending…");

  // Twenty to thirty silent seconds make the page ask; as long again without an
  // answer, it gives up on the connection and makes a new one.
  await page.clock.fastForward("00:31");
  await expect(page.getByTestId("connection-state")).toHaveAttribute("data-state", "online");
  expect(open.length).toBe(1);
  await page.clock.fastForward("00:31");
  await expect.poll(() => open.length, { message: "a new connection made" }).toBe(2);
  await expect(page.getByTestId("connection-state")).toHaveAttribute("data-state", "online", { timeout: 15_000 });
  await expect(page.getByTestId("pending")).toHaveCount(0);
  await expect(page.getByTestId("message").filter({ hasText: text })).toHaveCount(1);
  await page.reload();
  await hydrated(page);
  await expect(page.getByTestId("message").filter({ hasText: text })).toHaveCount(1);
  await context.close();
});

test("a proxy that passes the greeting and then nothing gets the page back less and less often", async ({ browser }) => {
  test.setTimeout(90_000);
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.clock.install();
  // Every connection is greeted, then hears nothing more and nothing it sends gets
  // through: a connection that lasts a while but was never alive after its hello.
  const opened: WebSocketRoute[] = [];
  await page.routeWebSocket(/\/ws(\?.*)?$/, (ws) => {
    opened.push(ws);
    let greeted = false;
    const server = ws.connectToServer();
    ws.onMessage((message) => {
      if (!greeted) server.send(message);
    });
    server.onMessage((message) => {
      if (greeted) return;
      ws.send(message);
      greeted = typeof message === "string" && message.startsWith('{"hello"');
    });
  });
  await register(page, uniqueName("mudo"));

  // The pause before the next connection grows (0.5–1 s, 1–2, 2–4, then 4–8), whether
  // the page gave up on a connection's silence (asked after 20–30 s, dropped after as
  // long again) or the proxy closed it after 15 silent seconds.
  for (let cycle = 1; cycle <= 4; cycle++) {
    await expect(page.getByTestId("connection-state")).toHaveAttribute("data-state", "online", { timeout: 15_000 });
    expect(opened.length).toBe(cycle);
    if (cycle % 2 === 1) {
      await page.clock.fastForward("00:31");
      await page.clock.fastForward("00:31");
    } else {
      await page.clock.fastForward("00:15");
      await opened[cycle - 1].close({ code: 1011, reason: "idle" });
    }
    if (cycle < 4) await expect.poll(() => opened.length, { timeout: 15_000 }).toBe(cycle + 1);
  }
  // The time each was up does not count as a healthy connection: no quick return.
  await page.waitForTimeout(3_000);
  expect(opened.length, "the fifth connection waits out a longer pause").toBe(4);
  await page.clock.fastForward("00:10");
  await expect.poll(() => opened.length, { timeout: 15_000 }).toBe(5);
  await context.close();
});
