import { expect, test } from "@playwright/test";
import { hydrated, newUser } from "./helpers";

// The page must arrive rendered from the server, then come alive in the browser
// without Leptos complaining that the two disagree.
test("server-rendered login page hydrates without warnings and its controls work", async ({ page, request }) => {
  const html = await (await request.get("/login")).text();
  expect(html).toContain("<title>Log in · Parley</title>");
  expect(html).toContain('name="username"');
  expect(html).toContain("/pkg/parley.js");

  const complaints: string[] = [];
  page.on("console", (msg) => {
    const text = msg.text();
    if (msg.type() === "error" || msg.type() === "warning" || /hydrat/i.test(text)) complaints.push(`${msg.type()}: ${text}`);
  });
  page.on("pageerror", (err) => complaints.push(`pageerror: ${err.message}`));

  await page.goto("/login");
  await hydrated(page);
  const password = page.getByLabel("Password", { exact: true });
  const toggle = page.getByRole("button", { name: "Show" });
  await expect(password).toHaveAttribute("type", "password");
  await toggle.click();
  await expect(password).toHaveAttribute("type", "text");
  await expect(page.getByRole("button", { name: "Hide" })).toHaveAttribute("aria-pressed", "true");

  expect(complaints).toEqual([]);
});

test("styles are built by Tailwind and served", async ({ request }) => {
  const css = await request.get("/pkg/parley.css");
  expect(css.ok()).toBeTruthy();
  const text = await css.text();
  // Classes used only in app/src must be present in the generated stylesheet.
  expect(text).toContain(".bg-indigo-600");
  expect(text).toContain(".md\\:translate-x-0");
});

test("unknown pages answer 404 with a way back", async ({ page }) => {
  const response = await page.goto("/no-such-page");
  expect(response?.status()).toBe(404);
  await expect(page.getByRole("link", { name: "Back to Parley" })).toBeVisible();
});

test("the chat page hydrates without warnings and connects", async ({ browser }) => {
  const user = await newUser(browser, "hydra");
  const page = user.page;
  const complaints: string[] = [];
  page.on("console", (msg) => {
    if (msg.type() === "error" || msg.type() === "warning" || /hydrat/i.test(msg.text())) complaints.push(`${msg.type()}: ${msg.text()}`);
  });
  page.on("pageerror", (err) => complaints.push(`pageerror: ${err.message}`));
  const response = await page.goto("/r/general");
  const html = await response!.text();
  expect(html).toContain('data-testid="connection-state"');
  expect(html).toContain('data-state="connecting"');
  await hydrated(page);
  await expect(page.getByTestId("connection-state")).toHaveAttribute("data-state", "online");
  await expect(page.getByTestId("me")).toHaveText(user.username);
  expect(complaints).toEqual([]);
  await user.context.close();
});
