import { type Page } from "@playwright/test";
import { expect, test, createRoom, hydrated, newUser, uniqueName, joinRoom } from "./helpers";

/** Types `text` into the composer and sends it. `fill` sets the value as a paste would. */
async function send(page: Page, text: string) {
  const composer = page.getByRole("textbox", { name: /^Message / });
  await composer.fill(text);
  await expect(composer).toHaveValue(text);
  await composer.press("Enter");
}

/** The texts of the messages shown, exactly as they are in the page. */
async function shownTexts(page: Page): Promise<string[]> {
  return page.getByTestId("message").getByTestId("text").evaluateAll((nodes) => nodes.map((n) => n.textContent ?? ""));
}

test("any text is sent, stored and shown byte for byte", async ({ browser }) => {
  const ana = await newUser(browser, "ana");
  const bia = await newUser(browser, "bia");
  const room = uniqueName("texto").replace(/_/g, "-");
  await createRoom(ana.page, room);
  await joinRoom(bia.page, room);

  const texts = ["Ótimo, tudo bem?", "😀 hi", "ação \u202Eoãça\u202C fim", "antes\u0000depois", "😀".repeat(4000)];
  for (const text of texts) {
    await send(ana.page, text);
  }
  // Shown to the sender once stored, to the other person live, and after a reload.
  await expect.poll(() => shownTexts(ana.page)).toEqual(texts);
  await expect(ana.page.getByTestId("pending")).toHaveCount(0);
  await expect.poll(() => shownTexts(bia.page)).toEqual(texts);
  await bia.page.reload();
  await hydrated(bia.page);
  await expect.poll(() => shownTexts(bia.page)).toEqual(texts);

  // One more character than the limit is refused before it is sent.
  const composer = ana.page.getByRole("textbox", { name: /^Message / });
  await composer.fill("😀".repeat(4001));
  await composer.press("Enter");
  await expect(ana.page.locator("#composer-problem")).toContainText("4001 characters");
  await ana.context.close();
  await bia.context.close();
});

test("web addresses in messages are links that open apart from the chat", async ({ browser }) => {
  const ana = await newUser(browser, "ana");
  const room = uniqueName("links").replace(/_/g, "-");
  await createRoom(ana.page, room);
  await send(ana.page, "olha https://example.com/a_(b)?x=1, e <b>isto</b>.");
  const link = ana.page.getByTestId("message").getByTestId("link");
  await expect(link).toHaveText("https://example.com/a_(b)?x=1");
  await expect(link).toHaveAttribute("href", "https://example.com/a_(b)?x=1");
  await expect(link).toHaveAttribute("target", "_blank");
  await expect(link).toHaveAttribute("rel", "noopener noreferrer nofollow");
  await expect(ana.page.getByTestId("message").locator("b")).toHaveCount(0);
  await ana.context.close();
});

test("an Enter that picks an input method's word does not send", async ({ browser }) => {
  const user = await newUser(browser, "kenji");
  const composer = user.page.getByRole("textbox", { name: /^Message / });
  const text = `にほんご ${uniqueName("ime")}`;
  await composer.fill(text);
  // Safari's Enter that ends a composition: not composing by its flag, 229 by its key code.
  const sent = await composer.evaluate((element) => {
    const enter = new KeyboardEvent("keydown", { key: "Enter", bubbles: true, cancelable: true });
    Object.defineProperty(enter, "keyCode", { get: () => 229 });
    return element.dispatchEvent(enter);
  });
  expect(sent, "the Enter is left to the input method").toBe(true);
  await expect(composer).toHaveValue(text);
  await expect(user.page.getByTestId("pending")).toHaveCount(0);
  await composer.press("Enter");
  await expect(user.page.getByTestId("message").filter({ hasText: text })).toHaveCount(1);
  await expect(composer).toHaveValue("");
  await user.context.close();
});
