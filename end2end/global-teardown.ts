import { rmSync } from "node:fs";

// Removes the temporary data folder the config created for the server under test.
export default async function globalTeardown() {
  const dataDir = process.env.PARLEY_E2E_DATA_DIR;
  if (dataDir && dataDir.includes("parley-e2e-")) {
    rmSync(dataDir, { recursive: true, force: true });
  }
}
