import { expect, test } from "@playwright/test";

// The page must arrive rendered from the server, then come alive in the browser
// without Leptos complaining that the two disagree.
test("server-rendered page hydrates without warnings and its controls work", async ({ page, request }) => {
  const html = await (await request.get("/")).text();
  expect(html).toContain("Parley");
  expect(html).toContain('data-testid="socket-state"');
  expect(html).toContain("/pkg/parley.js");

  const complaints: string[] = [];
  page.on("console", (msg) => {
    const text = msg.text();
    if (msg.type() === "error" || msg.type() === "warning" || /hydrat/i.test(text)) complaints.push(`${msg.type()}: ${text}`);
  });
  page.on("pageerror", (err) => complaints.push(`pageerror: ${err.message}`));

  await page.goto("/");
  await expect(page.locator("html")).toHaveAttribute("data-hydrated", "true");
  await expect(page.getByTestId("socket-state")).toHaveText("online");

  const measure = page.getByRole("button", { name: "Measure latency" });
  await expect(measure).toBeEnabled();
  await measure.click();
  await expect(page.getByTestId("latency")).toHaveText(/^\d+ ms$/);

  expect(complaints).toEqual([]);
});

test("styles are built by Tailwind and served", async ({ request }) => {
  const css = await request.get("/pkg/parley.css");
  expect(css.ok()).toBeTruthy();
  const text = await css.text();
  // A class used only in app/src must be present in the generated stylesheet.
  expect(text).toContain(".text-indigo-600");
});

test("unknown pages answer 404 with a way back", async ({ page }) => {
  const response = await page.goto("/no-such-page");
  expect(response?.status()).toBe(404);
  await expect(page.getByRole("link", { name: "Back to Parley" })).toBeVisible();
});
