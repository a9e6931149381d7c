// server: browser
//
// The browser demo (examples/browser) in headless Chromium: a generated 50 MiB file uploaded
// in parallel 4 MiB chunks; one chunk request is aborted mid-body (the test wraps
// XMLHttpRequest.send and aborts the first chunk not at offset 0 once a quarter of it is
// sent) and the page retries it; at 40 % the page is reloaded (killing the chunks in flight),
// the same file is picked again, and the page asks the status query what is missing and
// sends only that. Checks: the stored file's sha256 (on disk and over HTTP), the File object
// shown, the bytes sent after the reload, the image preview of a second upload; saves
// screenshots in $BROWSER_ARTIFACTS.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { assert, env, launch, log, randomFile, sha256 } from './lib.mjs';

const SIZE = 50 * 1024 * 1024;
const CHUNK = 4 * 1024 * 1024;

const { dir, name, file, bytes } = randomFile('big', SIZE);
const want = sha256(bytes);
log(`generated ${name}: ${SIZE} bytes, sha256 ${want}`);

const browser = await launch();
try {
  const { context } = browser;
  // The fault: abort one chunk request mid-body, once per browsing session.
  await context.addInitScript(() => {
    const setHeader = XMLHttpRequest.prototype.setRequestHeader;
    const send = XMLHttpRequest.prototype.send;
    XMLHttpRequest.prototype.setRequestHeader = function (k, v) {
      if (k.toLowerCase() === 'content-range') this.__range = v;
      return setHeader.call(this, k, v);
    };
    XMLHttpRequest.prototype.send = function (body) {
      const m = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(this.__range || '');
      if (m && Number(m[1]) > 0 && !sessionStorage.getItem('fault-at')) {
        // Any chunk not at offset 0 may be the one, until one is aborted with a quarter to
        // all but its last bytes sent (progress events are coarse: not every chunk offers one).
        const range = this.__range;
        const length = Number(m[2]) - Number(m[1]) + 1;
        this.upload.addEventListener('progress', (e) => {
          if (e.loaded >= length / 4 && e.loaded < length && !sessionStorage.getItem('fault-at')) {
            sessionStorage.setItem('fault-at', String(e.loaded));
            sessionStorage.setItem('fault-range', range);
            this.abort();
          }
        });
      }
      return send.call(this, body);
    };
  });

  const page = await context.newPage();
  let phase = 'first';
  const puts = [];
  const failures = [];
  page.on('request', (r) => {
    if (r.method() === 'PUT') puts.push({ phase, range: r.headers()['content-range'] });
  });
  page.on('requestfailed', (r) => {
    if (r.method() === 'PUT') failures.push({ phase, range: r.headers()['content-range'], error: r.failure()?.errorText });
  });
  page.on('pageerror', (e) => log('page error:', e.message));

  // Loopback pushes a whole chunk into socket buffers before the first progress event, so
  // until the reload uploads go at an emulated 12 MB/s: progress events come while bodies
  // are on their way (the abort lands mid-body), and the upload is still under way when the
  // test reloads the page. Full speed after the reload.
  const cdp = await context.newCDPSession(page);
  const throttle = (bytesPerSec) => cdp.send('Network.emulateNetworkConditions', {
    offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: bytesPerSec,
  });
  await cdp.send('Network.enable');
  await throttle(12e6);

  await page.goto(`${env.base}/?chunk=${CHUNK}&parallel=3`);
  await page.setInputFiles('#file', file);
  await page.waitForFunction(() => sessionStorage.getItem('fault-at'), null, { timeout: 60000, polling: 20 });

  // Until the page sent the aborted chunk again and 40 % is on the server.
  const faultRange = await page.evaluate(() => sessionStorage.getItem('fault-range'));
  await page.waitForFunction(
    (size) => window.uploadStats.retries >= 1 && window.uploadStats.confirmedBytes >= 0.4 * size,
    SIZE,
    { timeout: 120000, polling: 20 },
  );
  for (let t = 0; puts.filter((p) => p.range === faultRange).length < 2; t++) {
    assert(t < 2000, 'the aborted chunk is sent again within 20 s');
    await new Promise((r) => setTimeout(r, 10));
  }
  const before = await page.evaluate(() => ({
    ...window.uploadStats,
    faultRange: sessionStorage.getItem('fault-range'),
    faultAt: Number(sessionStorage.getItem('fault-at')),
    state: document.body.dataset.state,
  }));
  log(`before reload: ${before.confirmedBytes} bytes confirmed, ${before.retries} retries, `
    + `aborted ${before.faultRange} after ${before.faultAt} bytes`);
  assert(before.state === 'uploading' && before.confirmedBytes < SIZE, 'still uploading at the reload');
  assert(before.faultAt > 0 && before.faultAt < CHUNK, 'the chunk was aborted mid-body');
  assert(failures.some((f) => f.range === before.faultRange), 'the aborted request failed in the browser');
  const retried = puts.filter((p) => p.range === before.faultRange).length;
  assert(retried >= 2, `the aborted chunk was sent again (${retried} requests)`);

  // Reload mid-upload: the chunks in flight die with the page.
  phase = 'reloading'; // requests the old page starts while it unloads
  await page.reload();
  phase = 'second';
  await throttle(-1);
  await page.waitForSelector('#resume:not(.hidden)');
  const notice = await page.textContent('#resume');
  assert(notice.includes(name) && notice.includes('pick the same file'), `resume notice: ${notice}`);
  await page.setInputFiles('#file', file);
  await page.waitForFunction(() => ['done', 'error'].includes(document.body.dataset.state), null, { timeout: 180000 });
  const after = await page.evaluate(() => ({ ...window.uploadStats, status: document.getElementById('status').textContent }));
  assert(after.file, `upload finished: ${after.status}`);
  log(`after reload: resumed from ${after.resumedFrom} bytes; ${after.chunksSent} chunks, ${after.retries} retries`);

  // The page asked what was missing, and sent only that.
  const second = puts.filter((p) => p.phase === 'second');
  assert(second[0].range === `bytes */${SIZE}`, `first request after the reload is the status query: ${second[0].range}`);
  assert(after.resumedFrom >= before.confirmedBytes && after.resumedFrom < SIZE, 'resumed from what the server had');
  const sent = new Map();
  for (const p of second) {
    const m = /^bytes (\d+)-(\d+)\/\d+$/.exec(p.range || '');
    if (m) sent.set(p.range, Number(m[2]) - Number(m[1]) + 1);
  }
  const sentBytes = [...sent.values()].reduce((a, b) => a + b, 0);
  log(`after reload: ${sent.size} distinct chunks, ${sentBytes} bytes (missing: ${SIZE - after.resumedFrom})`);
  assert(sentBytes === SIZE - after.resumedFrom, 'exactly the missing bytes were sent after the reload');

  // The File object, and the stored bytes.
  const shown = JSON.parse(await page.textContent('#result'));
  assert(shown.filesize === SIZE && shown.filename === name && shown.kind === 'other', `File object: ${JSON.stringify(shown)}`);
  const stored = sha256(readFileSync(join(env.data, 'uploads', name)));
  assert(stored === want, `stored sha256 ${stored} != ${want}`);
  const served = sha256(Buffer.from(await (await fetch(shown.url)).arrayBuffer()));
  assert(served === want, `served sha256 ${served} != ${want}`);
  log(`stored and served sha256 match: ${stored}`);

  // What the server saw of the aborted chunk (its tracing span): the cut-off body was
  // refused, and only the complete retry counted.
  const seen = readFileSync(env.serverLog, 'utf8').split('\n')
    .filter((l) => l.includes(`range=${before.faultRange}`) && l.includes('answered'));
  log(`server answers for ${before.faultRange}:`);
  for (const l of seen) log('   ', l.replace(/^.*tower_uploads\{/, '{'));
  const answers = seen.map((l) => ({
    bytes: Number(/ bytes=(\d+)/.exec(l)?.[1]),
    status: Number(/ status=(\d+)/.exec(l)?.[1]),
  }));
  assert(answers.every((a) => a.status >= 300 || a.bytes === CHUNK), 'no partial body was accepted');
  assert(answers.some((a) => a.status < 300 && a.bytes === CHUNK), 'the retry was accepted');
  // (The server may not get to answer the cut-off request at all: the connection is gone.)
  const partial = answers.filter((a) => a.bytes < CHUNK);
  log(`server saw ${partial.length} cut-off request(s) for it: ${JSON.stringify(partial)}`);

  const shot = join(env.artifacts, 'browser-upload.png');
  await page.screenshot({ path: shot, fullPage: true });
  log(`screenshot: ${shot}`);

  // An image: the page previews it from the File object's url.
  const png = join(dir, 'screenshot.png');
  writeFileSync(png, readFileSync(shot));
  await page.setInputFiles('#file', png);
  await page.waitForFunction(() => document.body.dataset.state !== 'uploading' && window.uploadStats.file
    && window.uploadStats.file.filename === 'screenshot.png', null, { timeout: 60000 });
  const preview = await page.evaluate(async () => {
    const img = document.getElementById('preview');
    await img.decode();
    return { kind: window.uploadStats.file.kind, width: img.naturalWidth, fileWidth: window.uploadStats.file.width };
  });
  assert(preview.kind === 'image' && preview.width > 0 && preview.width === preview.fileWidth, `preview: ${JSON.stringify(preview)}`);
  const shot2 = join(env.artifacts, 'browser-preview.png');
  await page.screenshot({ path: shot2, fullPage: true });
  log(`image preview ${preview.width} px wide; screenshot: ${shot2}`);
} finally {
  await browser.close();
}
