import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";

/**
 * A Parley server of a test's own, for tests that stop and restart it (the shared
 * server of the run must stay up for the others). Same binary and settings as the
 * shared one, its own port and data folder; `stop` kills it, `start` brings it back on
 * the same port with the same data.
 */
export class OwnServer {
  private child: ChildProcess | null = null;
  private constructor(
    readonly port: number,
    private readonly dataDir: string,
    private readonly settings: Record<string, string>,
  ) {}

  /** `settings`: environment of the server's own, over the run's. */
  static async launch(settings: Record<string, string> = {}): Promise<OwnServer> {
    const server = new OwnServer(await freePort(), mkdtempSync(path.join(tmpdir(), "parley-own-")), settings);
    await server.start();
    return server;
  }

  get baseURL(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async start() {
    const binary = process.env.PARLEY_SERVER_BIN ?? path.resolve(__dirname, "../../target/release/server");
    this.child = spawn(binary, [], {
      cwd: path.resolve(__dirname, "../.."),
      stdio: ["ignore", "ignore", "inherit"],
      env: {
        ...process.env,
        LEPTOS_SITE_ADDR: `127.0.0.1:${this.port}`,
        LEPTOS_SITE_ROOT: process.env.PARLEY_SITE_ROOT ?? path.resolve(__dirname, "../../target/site"),
        LEPTOS_ENV: "prod",
        PARLEY_CHAT_DATA_DIR: this.dataDir,
        PARLEY_CHAT_DATABASE_URL: "",
        DATABASE_URL: "",
        RUST_LOG: "warn",
        PARLEY_LIMITS_HTTP_BURST: "1000000",
        PARLEY_LIMITS_REGISTRATIONS_PER_HOUR: "1000000",
        PARLEY_LIMITS_LOGINS_PER_MINUTE: "1000000",
        ...this.settings,
      },
    });
    for (let tries = 0; tries < 400; tries++) {
      if (await accepts(this.port)) return;
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
    throw new Error(`own server did not start on ${this.port}`);
  }

  /** Stops the server at once, as a crash or a restart would. */
  async stop() {
    const child = this.child;
    this.child = null;
    if (!child || child.exitCode !== null) return;
    const exited = new Promise((resolve) => child.once("exit", resolve));
    child.kill("SIGKILL");
    await exited;
  }

  async dispose() {
    await this.stop();
    rmSync(this.dataDir, { recursive: true, force: true });
  }
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = net.createServer().listen(0, "127.0.0.1", () => {
      const { port } = probe.address() as net.AddressInfo;
      probe.close(() => resolve(port));
    });
    probe.on("error", reject);
  });
}

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, "127.0.0.1");
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}
