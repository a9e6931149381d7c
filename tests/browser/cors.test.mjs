// server: browser --files-host localhost
//
// The browser demo with its uploads on another origin: the page comes from
// http://127.0.0.1:<port>, the signed URLs point at http://localhost:<port>/files, so every
// chunk PUT (with Content-Range and Content-Digest) is a cross-origin request that Chromium
// preflights, answered by the app's tower-http CorsLayer. Checks: the upload completes with the
// right sha256, the server saw and answered the preflights, and the page can read the exposed
// `Range` and `Location` headers of cross-origin answers.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { assert, env, launch, log, randomFile, sha256 } from './lib.mjs';

const SIZE = 6 * 1024 * 1024 + 123;
const CHUNK = 1024 * 1024;

const { name, file, bytes } = randomFile('cross', SIZE);

const browser = await launch();
try {
  const page = await browser.context.newPage();
  const origins = new Set();
  page.on('request', (r) => {
    if (r.method() === 'PUT') origins.add(new URL(r.url()).host);
  });
  await page.goto(`${env.base}/?chunk=${CHUNK}&parallel=3`);
  const pageHost = new URL(env.base).host;
  await page.setInputFiles('#file', file);
  await page.waitForFunction(() => ['done', 'error'].includes(document.body.dataset.state), null, { timeout: 60000 });
  const status = await page.textContent('#status');
  assert(await page.evaluate(() => document.body.dataset.state) === 'done', `upload: ${status}`);
  const shown = JSON.parse(await page.textContent('#result'));
  log(`page on ${pageHost}, chunks sent to ${[...origins].join(', ')}; File url ${shown.url}`);
  assert(origins.size === 1 && !origins.has(pageHost) && [...origins][0].startsWith('localhost:'), 'cross-origin chunks');
  assert(shown.filesize === SIZE && shown.url.startsWith('http://localhost:'), `File object: ${JSON.stringify(shown)}`);
  const stored = sha256(readFileSync(join(env.data, 'uploads', name)));
  assert(stored === sha256(bytes), 'stored sha256');

  // The page reads the exposed headers of cross-origin answers.
  const seen = await page.evaluate(async () => {
    const signed = await (await fetch('/api/sign', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ filename: 'headers.bin' }),
    })).json();
    const put = (range, body) => fetch(signed.url, {
      method: 'PUT', headers: { 'Content-Range': range, 'Accept-Version': '2025-08-20' }, body,
    });
    const first = await put('bytes 0-9/20', 'aaaaaaaaaa');
    const last = await put('bytes 10-19/20', 'bbbbbbbbbb');
    return {
      url: signed.url,
      first: { status: first.status, range: first.headers.get('range') },
      last: { status: last.status, location: last.headers.get('location') },
    };
  });
  log(`cross-origin answers: ${JSON.stringify(seen.first)}, ${JSON.stringify(seen.last)}`);
  assert(seen.first.status === 202 && seen.first.range === 'bytes=0-9', 'Range is readable');
  assert(seen.last.status === 201 && seen.last.location?.endsWith('/files/uploads/headers.bin'), 'Location is readable');

  // The preflights, as the server's TraceLayer saw them.
  const lines = readFileSync(env.serverLog, 'utf8').split('\n');
  const preflights = lines.filter((l) => l.includes('method=OPTIONS') && l.includes('finished processing request'));
  log(`${preflights.length} preflight(s) answered: ${preflights[0]?.replace(/^.*http\{/, '{')}`);
  assert(preflights.length >= 1 && preflights.every((l) => l.includes('status=200')), 'preflights answered 200');

  const shot = join(env.artifacts, 'browser-cors.png');
  await page.screenshot({ path: shot, fullPage: true });
  log(`screenshot: ${shot}`);
} finally {
  await browser.close();
}
