import { expect, test, createRoom, newUser, openRooms, sendMessage, uniqueName } from "./helpers";

test("on a phone the rooms are a drawer; switching rooms and sending works", async ({ browser }, testInfo) => {
  test.skip(testInfo.project.name !== "phone", "phone layout only");
  const user = await newUser(browser, "henry");
  const page = user.page;
  const sidebar = page.locator("#sidebar");

  // The drawer starts closed and nothing scrolls sideways.
  await expect(sidebar).toHaveAttribute("data-open", "false");
  await expect(sidebar).not.toBeInViewport();
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  expect(overflow).toBeLessThanOrEqual(0);

  const room = uniqueName("pocket").replace(/_/g, "-");
  await createRoom(page, room);
  await openRooms(page);
  await expect(sidebar).toBeInViewport();
  await page.getByRole("link", { name: "#general" }).click();
  await expect(sidebar).toHaveAttribute("data-open", "false");
  await expect(page.getByTestId("room-title")).toHaveText("#general");

  await openRooms(page);
  await page.getByRole("link", { name: `#${room}` }).click();
  await expect(page.getByTestId("room-title")).toHaveText(`#${room}`);
  await sendMessage(page, "sent from a phone");

  // The composer sits at the bottom of the screen.
  const box = await page.getByRole("textbox", { name: `Message #${room}` }).boundingBox();
  const viewport = page.viewportSize()!;
  expect(box!.y + box!.height).toBeGreaterThan(viewport.height - 80);

  // A room joined from the directory shows, not the drawer it was joined from.
  await page.getByRole("button", { name: "Leave" }).click();
  await openRooms(page);
  await page.getByRole("link", { name: "#general" }).click();
  await expect(page.getByTestId("room-title")).toHaveText("#general");
  await openRooms(page);
  await page.getByRole("button", { name: "Browse rooms" }).click();
  await page.getByRole("button", { name: `Join #${room}` }).click();
  await expect(page.getByTestId("room-title")).toHaveText(`#${room}`);
  await expect(sidebar).toHaveAttribute("data-open", "false");
  await user.context.close();
});

test("on a desktop the rooms sit beside the messages", async ({ browser }, testInfo) => {
  test.skip(testInfo.project.name !== "desktop", "desktop layout only");
  const user = await newUser(browser, "iris");
  await expect(user.page.getByRole("button", { name: "Open rooms" })).toBeHidden();
  await expect(user.page.locator("#sidebar")).toBeInViewport();
  await expect(user.page.getByRole("link", { name: "#general" })).toBeVisible();
  await user.context.close();
});
