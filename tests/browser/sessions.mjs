// server: server
// Upload sessions (PROTOCOL.md §7) from a real browser: the client-side snippets of ittybit's
// docs, run unchanged but for syntax fixes, in headless Chromium against the demo server.
//
//   1. "Uploading Files (Simple Uploads)": XMLHttpRequest + FormData, with the header
//      `Content-Type: multipart/form-data` set by hand (so the browser sends no boundary).
//   2. "Uploads" API reference, resumable-upload.js: 10 MiB chunks read with FileReader,
//      `PUT` with `X-Upload-Index`, then the completing `POST` — whose `body` the snippet puts
//      inside `headers` (so it arrives with no body: the server assembles every part).
//
// The upload sessions themselves are created from Node with the bearer key, as the docs say
// ("do this initial request from your server"). The stored bytes are checked by SHA-256.
//
// Env: BASE (demo server URL), KEY (its API key), SCREENSHOT_DIR (optional).
// Usage: node tests/browser/sessions.mjs   (tests/browser/run.sh starts the server)

import { chromium } from 'playwright-core';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { sha256 } from './lib.mjs';

const BASE = process.env.BASE;
const KEY = process.env.KEY;
if (!BASE || !KEY) {
  console.error('sessions.mjs: set BASE and KEY');
  process.exit(2);
}

let failures = 0;
function check(ok, what) {
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${what}`);
  if (!ok) failures++;
}

async function createSession(body) {
  const res = await fetch(`${BASE}/uploads`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${KEY}`, 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
  });
  if (res.status !== 200) throw new Error(`POST /uploads → ${res.status} ${await res.text()}`);
  return res.json(); // the envelope: {meta, data: {url, …}, error, links}
}

async function storedSha(url) {
  const res = await fetch(url);
  return [res.status, sha256(Buffer.from(await res.arrayBuffer()))];
}

// The page the snippets run in, served on the demo server's origin (same origin, as when an
// app serves its own front end) by intercepting this one URL.
const PAGE = `${BASE}/__browser_test__/sessions.html`;
const HTML = `<!doctype html><html><body>
<h1>tower-uploads: upload sessions</h1>
<input type="file" id="file">
<pre id="log"></pre>
</body></html>`;

// Snippet 1, from "Uploading Files (Simple Uploads)" (the docs' extraction lost `xhr.open(`
// and the surrounding listener; restored).
const XHR_SNIPPET = `
function uploadFile(file, upload_url) { const xhr = new XMLHttpRequest(); xhr.open('POST', upload_url); xhr.setRequestHeader('Content-Type', 'multipart/form-data'); xhr.onreadystatechange = function() { if (xhr.readyState === 4) { if (xhr.status === 200) { const { data: media } = JSON.parse(xhr.responseText); console.log('File uploaded successfully'); console.log({ media }); } else { console.error('File upload failed.'); } } }; const formData = new FormData(); formData.append('file', file); xhr.send(formData); }
`;

// Snippet 2, resumable-upload.js from the "Uploads" API reference, verbatim but for the
// missing comma after \`method: 'POST'\` (a syntax error) — \`body\` stays inside \`headers\`.
const RESUMABLE_SNIPPET = `
const { data } = await response.json();
const url = data.url;

const CHUNK_SIZE = 1024 * 1024 * 10; // #B
const file = document.getElementById("file").files[0];
const totalChunks = Math.ceil(file.size / CHUNK_SIZE);

async function readFileAsArrayBuffer(file) {
return new Promise((resolve, reject) => {
let reader = new FileReader();
reader.onload = event => resolve(event.target.result);
reader.onerror = error => reject(error);
reader.readAsArrayBuffer(file);
});
}

async function uploadFile({ file, url }) {
let parts = [];
let arrayBuffer = await readFileAsArrayBuffer(file);

for (let i = 0; i < totalChunks; i++) {
let start = i * CHUNK_SIZE;
let end = Math.min(file.size, start + CHUNK_SIZE);
let chunk = arrayBuffer.slice(start, end); // #A

// #C
let response = await fetch(url, {
method: 'PUT',
headers: {
'Content-Type': 'application/octet-stream', // #D
'X-Upload-Index': i, // #E
},
body: chunk
});

if (!response.ok) {
throw new Error('Upload failed');
}

let { data } = await response.json();
parts.push(data); // #F

console.log(\`Chunk \${i + 1} of \${totalChunks} uploaded\`);
}

// #G
let response = await fetch(url, {
method: 'POST',
headers: {
'Content-Type': 'application/json',
body: JSON.stringify({ parts })
}
});

if (!response.ok) {
throw new Error('Upload completion failed');
}

console.log('Upload complete');

let result = await response.json();
return result;
}

const result = await uploadFile({ file, url });
`;

// playwright gives every launch a fresh, empty profile directory of its own.
const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  headless: true,
  args: [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
});
try {
  const page = await browser.newPage();
  page.on('pageerror', (e) => console.log(`page error: ${e}`));
  await page.route(PAGE, (route) => route.fulfill({ status: 200, contentType: 'text/html', body: HTML }));
  await page.goto(PAGE);

  // --- 1. the XHR + FormData snippet -------------------------------------------------------
  {
    const file = randomBytes(3 * 1024 * 1024 + 17);
    await page.setInputFiles('#file', { name: 'photo.bin', mimeType: 'application/octet-stream', buffer: file });
    const session = await createSession({ metadata: { user_id: 'usr_browser' } });
    const uploaded = page.waitForEvent('console', {
      predicate: (m) => m.text().startsWith('{') || m.text().includes('media') || m.type() === 'error',
      timeout: 60_000,
    });
    await page.addScriptTag({ content: XHR_SNIPPET });
    await page.evaluate((url) => uploadFile(document.getElementById('file').files[0], url), session.data.url);
    const msg = await uploaded;
    check(msg.type() !== 'error', `XHR snippet: upload succeeded (${msg.text()})`);
    const { media } = await msg.args()[0].jsonValue();
    check(media?.object === 'media' && /^med_/.test(media.id), 'XHR snippet: a Media object came back');
    check(media?.filesize === file.length, `XHR snippet: filesize ${media?.filesize}`);
    check(media?.metadata?.user_id === 'usr_browser', 'XHR snippet: metadata returned');
    const [status, digest] = await storedSha(media.url);
    check(status === 200 && digest === sha256(file), 'XHR snippet: stored bytes have the right SHA-256');
    // Single use: the same key again.
    const again = await page.evaluate(async (url) => {
      const fd = new FormData();
      fd.append('file', new Blob(['x']), 'x.txt');
      const r = await fetch(url, { method: 'POST', body: fd });
      return [r.status, (await r.json()).error?.kind];
    }, session.data.url);
    check(again[0] === 410 && again[1] === 'upload_gone', `XHR snippet: key reuse → ${again}`);
  }

  // --- 2. the resumable chunked fetch loop --------------------------------------------------
  {
    const file = randomBytes(25 * 1024 * 1024 + 12345); // three 10 MiB chunks
    await page.setInputFiles('#file', { name: 'video.bin', mimeType: 'application/octet-stream', buffer: file });
    const session = await createSession({ resumable: true, alias: 'browser/resumable.bin' });
    const chunkLogs = [];
    page.on('console', (m) => { if (m.text().startsWith('Chunk ')) chunkLogs.push(m.text()); });
    const result = await page.evaluate(async ([snippet, envelope]) => {
      const response = { json: async () => envelope };
      const run = new Function('response', `return (async () => {${snippet}\nreturn result;})()`);
      try {
        return { ok: true, result: await run(response) };
      } catch (e) {
        return { ok: false, error: String(e) };
      }
    }, [RESUMABLE_SNIPPET, session]);
    check(result.ok, `resumable snippet ran: ${result.error ?? 'no error'}`);
    check(chunkLogs.length === 3, `resumable snippet: ${chunkLogs.length} chunks logged`);
    const media = result.result?.data;
    check(media?.object === 'media', 'resumable snippet: a Media object came back');
    check(media?.url === `${BASE}/browser/resumable.bin`, `resumable snippet: alias URL ${media?.url}`);
    const [status, digest] = await storedSha(media.url);
    check(status === 200 && digest === sha256(file), 'resumable snippet: stored bytes have the right SHA-256');
    const [s2, d2] = await storedSha(media.sources[0].url);
    check(s2 === 200 && d2 === sha256(file), 'resumable snippet: <media id>/original delivers the same bytes');
  }
  if (process.env.SCREENSHOT_DIR) {
    await page.screenshot({ path: join(process.env.SCREENSHOT_DIR, 'sessions.png') });
  }
} finally {
  await browser.close();
}

if (failures) {
  console.error(`sessions.mjs: ${failures} check(s) failed`);
  process.exit(1);
}
console.log('sessions.mjs: all checks passed');
