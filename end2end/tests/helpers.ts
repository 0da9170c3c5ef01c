import { test as base, expect, type Browser, type BrowserContext, type Page } from "@playwright/test";

export { expect };

/** Marks a test whose pages are meant to meet frames they cannot read. */
export const UNREADABLE_FRAMES = "unreadable frames";

/** Playwright's `test`, and every page any test opens checked for frames it could not
 *  read: each frame the server sends in the whole suite must decode in the browser
 *  (the page reads them through the browser's JSON, the server writes serde_json's). */
export const test = base.extend<{ framesReadable: void }>({
  framesReadable: [
    async ({ browser }, use, testInfo) => {
      const unreadable: string[] = [];
      const watch = (context: BrowserContext) =>
        context.on("console", (message) => {
          const text = message.text();
          if (text.includes("this client does not understand") || text.includes("this page cannot read")) unreadable.push(text);
        });
      const newContext = browser.newContext;
      browser.newContext = async (...options) => {
        const context = await newContext.apply(browser, options);
        watch(context);
        return context;
      };
      try {
        await use();
      } finally {
        browser.newContext = newContext;
      }
      if (!testInfo.annotations.some((annotation) => annotation.type === UNREADABLE_FRAMES)) {
        expect(unreadable, "frames a page could not read").toEqual([]);
      }
    },
    { auto: true },
  ],
});

export const PASSWORD = "correct horse battery staple";
/** The chat socket's path for this build (`app::protocol::socket_path`): a socket that
 *  names another protocol version is closed as out of date. */
export const SOCKET_PATH = "/ws?protocol=3";

/** A username no other test (or project) in this run will pick. */
export function uniqueName(prefix: string): string {
  const suffix = `${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;
  return `${prefix}_${suffix}`.slice(0, 32);
}

/** Waits until the WASM has taken over the server-rendered page. */
export async function hydrated(page: Page) {
  await expect(page.locator("html")).toHaveAttribute("data-hydrated", "true");
}

/** Registers through the form and waits for the chat to be online; on the run's server,
 *  or on the one at `origin` (a test's own). */
export async function register(page: Page, username: string, displayName = "", origin = "") {
  await page.goto(`${origin}/register`);
  await hydrated(page);
  await page.getByLabel("Username").fill(username);
  if (displayName) await page.getByLabel("Display name").fill(displayName);
  await page.getByLabel("Password", { exact: true }).fill(PASSWORD);
  await page.getByRole("button", { name: "Create account" }).click();
  await expect(page.getByTestId("connection-state")).toHaveAttribute("data-state", "online");
}

/** Fills in and sends the login form the page is showing. */
export async function logIn(page: Page, username: string) {
  await page.getByLabel("Username").fill(username);
  await page.getByLabel("Password", { exact: true }).fill(PASSWORD);
  await page.getByRole("button", { name: "Log in" }).click();
}

/** A fresh browser context (its own cookies) with a registered user in it. */
export async function newUser(browser: Browser, prefix: string, displayName = "") {
  const context = await browser.newContext();
  const page = await context.newPage();
  const username = uniqueName(prefix);
  await register(page, username, displayName);
  return { context, page, username };
}

/** Opens the rooms drawer on a phone-sized screen (a no-op on desktop). */
export async function openRooms(page: Page) {
  const menu = page.getByRole("button", { name: "Open rooms" });
  if (await menu.isVisible()) {
    await menu.click();
    await expect(page.locator("#sidebar")).toHaveAttribute("data-open", "true");
  }
}

export async function createRoom(page: Page, name: string) {
  await openRooms(page);
  await page.getByLabel("New room").fill(name);
  await page.getByRole("button", { name: "Create", exact: true }).click();
  await expect(page).toHaveURL(new RegExp(`/r/${name}$`));
  await expect(page.getByTestId("room-title")).toHaveText(`#${name}`);
}

/** Goes to a room by its address and joins it. */
export async function joinRoom(page: Page, name: string) {
  await page.goto(`/r/${name}`);
  await page.getByRole("button", { name: `Join #${name}` }).click();
  await expect(page.getByTestId("room-title")).toHaveText(`#${name}`);
}

export async function sendMessage(page: Page, text: string) {
  const composer = page.getByRole("textbox", { name: /^Message / });
  await composer.fill(text);
  await composer.press("Enter");
  await expect(page.getByTestId("message").filter({ hasText: text }).last()).toBeVisible();
}
