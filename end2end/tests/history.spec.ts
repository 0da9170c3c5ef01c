import { type Page } from "@playwright/test";
import { expect, test, SOCKET_PATH, createRoom, newUser, uniqueName } from "./helpers";

/** Posts `count` messages into a room over a second socket of the same session. */
async function seed(page: Page, roomName: string, count: number, label: string) {
  await page.evaluate(
    async ({ roomName, count, label, socketPath }) => {
      const ws = new WebSocket(`${location.origin.replace(/^http/, "ws")}${socketPath}`);
      const frames: any[] = [];
      let closed = "";
      let wake: () => void = () => {};
      ws.onmessage = (e) => { frames.push(JSON.parse(e.data)); wake(); };
      ws.onclose = (e) => { closed = `socket closed with ${e.code} ${e.reason}`; wake(); };
      const next = async (pred: (f: any) => boolean) => {
        for (;;) {
          const i = frames.findIndex(pred);
          if (i >= 0) return frames.splice(i, 1)[0];
          if (closed) throw new Error(closed);
          await new Promise<void>((r) => (wake = r));
        }
      };
      const { hello } = await next((f) => "hello" in f);
      const room = hello.rooms.find((r: any) => r.name === roomName);
      for (let n = 0; n < count; n++) {
        ws.send(JSON.stringify({ type: "send", id: n + 1, room_id: room.id, client_id: `${label}-${n}`, text: `${label} ${n}` }));
      }
      for (let n = 0; n < count; n++) await next((f) => f.sent?.id === n + 1);
      ws.close();
    },
    { roomName, count, label, socketPath: SOCKET_PATH },
  );
}

test("history loads as you scroll up without moving what you are reading", async ({ browser }) => {
  const user = await newUser(browser, "paula");
  const page = user.page;
  const room = uniqueName("archive").replace(/_/g, "-");
  await createRoom(page, room);
  await seed(page, room, 120, "old");
  await page.reload();
  await expect(page.getByTestId("connection-state")).toHaveAttribute("data-state", "online");

  const messages = page.getByTestId("message");
  await expect(messages.last()).toContainText("old 119");
  await expect(messages).toHaveCount(50);
  await expect(messages.last()).toBeInViewport();

  // Scroll to the top: the previous page loads and the message that was first stays put.
  const firstBefore = messages.first();
  await expect(firstBefore).toContainText("old 70");
  const scroller = page.getByTestId("message-scroller");
  await scroller.evaluate((el) => (el.scrollTop = 0));
  await expect(messages).toHaveCount(100);
  // "old 70" is seq 72: the room's join notice is seq 1, "old 0" seq 2.
  const anchor = page.locator('[data-testid="message"][data-seq="72"]');
  await expect(anchor).toContainText("old 70");
  await expect(anchor).toBeInViewport();
  await scroller.evaluate((el) => (el.scrollTop = 0));
  await expect(messages).toHaveCount(120);
  await expect(page.getByText("This is the start of the room.")).toBeVisible();
  const seqs = await messages.evaluateAll((els) => els.map((el) => Number(el.getAttribute("data-seq"))));
  expect(seqs).toEqual(Array.from({ length: 120 }, (_, i) => i + 2));
  await user.context.close();
});

test("new messages are followed at the bottom and announced when scrolled up", async ({ browser }) => {
  const user = await newUser(browser, "quinn");
  const page = user.page;
  const room = uniqueName("busy").replace(/_/g, "-");
  await createRoom(page, room);
  await seed(page, room, 60, "fill");
  await expect(page.getByTestId("message").last()).toContainText("fill 59");
  await expect(page.getByTestId("message").last()).toBeInViewport();

  // At the bottom: a new message scrolls into view by itself.
  await seed(page, room, 1, "live");
  await expect(page.getByTestId("message").last()).toContainText("live 0");
  await expect(page.getByTestId("message").last()).toBeInViewport();

  // Scrolled up: the view stays, and a button offers the new message (written by
  // the same person on another device, which must not pull this view down either).
  const scroller = page.getByTestId("message-scroller");
  const fromBottom = () => scroller.evaluate((el) => el.scrollHeight - el.scrollTop - el.clientHeight);
  await expect.poll(fromBottom).toBeLessThan(5);
  await scroller.evaluate((el) => (el.scrollTop = 200));
  await expect.poll(() => scroller.evaluate((el) => el.scrollTop)).toBe(200);
  await seed(page, room, 1, "later");
  const button = page.getByRole("button", { name: "New messages ↓" });
  await expect(button).toBeVisible();
  await expect(page.getByTestId("message").last()).not.toBeInViewport();
  await button.click();
  await expect(page.getByTestId("message").last()).toBeInViewport();
  await expect(button).toBeHidden();
  await user.context.close();
});
