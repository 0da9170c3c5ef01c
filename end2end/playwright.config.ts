import { defineConfig, devices } from "@playwright/test";
import { execFileSync } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

// The server under test gets a free port and an empty data folder. The config file is
// evaluated again in every worker process; workers inherit the environment, so the
// first evaluation records its choices there and the others reuse them.
if (!process.env.PARLEY_E2E_PORT) {
  process.env.PARLEY_E2E_PORT = execFileSync(process.execPath, [
    "-e",
    "const s=require('net').createServer().listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})",
  ])
    .toString()
    .trim();
}
if (!process.env.PARLEY_E2E_DATA_DIR) {
  process.env.PARLEY_E2E_DATA_DIR = mkdtempSync(path.join(tmpdir(), "parley-e2e-"));
}

const port = process.env.PARLEY_E2E_PORT;
const dataDir = process.env.PARLEY_E2E_DATA_DIR;
const workspace = path.resolve(__dirname, "..");
const serverBinary =
  process.env.PARLEY_SERVER_BIN ?? path.join(process.env.CARGO_TARGET_DIR ?? path.join(workspace, "target"), "release", "server");
const siteRoot = process.env.PARLEY_SITE_ROOT ?? path.join(workspace, "target", "site");
const baseURL = `http://127.0.0.1:${port}`;

const chromium = {
  executablePath: "/usr/bin/chromium",
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
  ],
};

export default defineConfig({
  testDir: "./tests",
  globalTeardown: "./global-teardown.ts",
  timeout: 30_000,
  expect: { timeout: 10_000 },
  fullyParallel: true,
  workers: 2,
  forbidOnly: !!process.env.CI,
  retries: 0,
  reporter: [["list"]],
  use: {
    baseURL,
    headless: true,
    trace: "retain-on-failure",
    launchOptions: chromium,
  },
  projects: [
    {
      name: "desktop",
      use: { ...devices["Desktop Chrome"], launchOptions: chromium, channel: undefined },
    },
    {
      name: "phone",
      use: {
        viewport: { width: 390, height: 844 },
        deviceScaleFactor: 3,
        isMobile: true,
        hasTouch: true,
        userAgent: devices["Pixel 7"].userAgent,
        launchOptions: chromium,
      },
    },
  ],
  webServer: {
    command: `"${serverBinary}"`,
    cwd: workspace,
    url: `${baseURL}/`,
    reuseExistingServer: false,
    timeout: 60_000,
    stdout: "pipe",
    stderr: "pipe",
    env: {
      LEPTOS_SITE_ADDR: `127.0.0.1:${port}`,
      LEPTOS_SITE_ROOT: siteRoot,
      LEPTOS_ENV: "prod",
      PARLEY_CHAT_DATA_DIR: dataDir,
      PARLEY_CHAT_DATABASE_URL: "",
      DATABASE_URL: "",
      RUST_LOG: process.env.RUST_LOG ?? "warn",
      // Every browser in the run comes from 127.0.0.1; per-address limits would stop
      // the suite itself. (The limits have their own tests.)
      PARLEY_LIMITS_HTTP_BURST: "1000000",
      PARLEY_LIMITS_REGISTRATIONS_PER_HOUR: "1000000",
      PARLEY_LIMITS_LOGINS_PER_MINUTE: "1000000",
      PARLEY_LIMITS_MESSAGES_BURST: "1000",
      PARLEY_LIMITS_FRAMES_BURST: "100000",
    },
  },
});
