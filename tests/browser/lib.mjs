// Shared helpers of the browser tests: launching Debian's Chromium through playwright-core,
// and small assertions.
import { chromium } from 'playwright-core';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/// The environment run.mjs gives a test.
export const env = {
  base: process.env.BASE_URL,
  data: process.env.DATA_DIR,
  key: process.env.API_KEY,
  serverLog: process.env.SERVER_LOG,
  artifacts: process.env.BROWSER_ARTIFACTS,
};
for (const [k, v] of Object.entries(env)) {
  if (!v) throw new Error(`${k} is not set: run the test through tests/browser/run.sh`);
}

/// A headless Chromium with a fresh profile; `close()` also deletes the profile.
export async function launch() {
  const profile = mkdtempSync(join(tmpdir(), 'chromium-profile-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    viewport: { width: 1000, height: 900 },
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
  return {
    context,
    async close() {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

export function assert(cond, message) {
  if (!cond) throw new Error(`assertion failed: ${message}`);
}

export function log(...args) {
  console.log('  ', ...args);
}

/// The sha256 of a buffer, in hex.
export const sha256 = (buf) => createHash('sha256').update(buf).digest('hex');

/// A file of `size` random bytes, `<prefix>-<8 hex>.bin` in a new temporary folder.
export function randomFile(prefix, size) {
  const dir = mkdtempSync(join(tmpdir(), `browser-${prefix}-`));
  const name = `${prefix}-${randomBytes(4).toString('hex')}.bin`;
  const file = join(dir, name);
  const bytes = randomBytes(size);
  writeFileSync(file, bytes);
  return { dir, name, file, bytes };
}
