// The browser side of the demo: signed URL from the app, parallel Content-Range chunks,
// retries with backoff, resume after a reload via the status query, the File object.
//
// Query parameters (for trying things out): ?chunk=<bytes> (default 8 MiB), ?parallel=<n>
// (default 4).
'use strict';

const params = new URLSearchParams(location.search);
const CHUNK = Math.max(64 * 1024, Number(params.get('chunk')) || 8 * 1024 * 1024);
const PARALLEL = Math.max(1, Number(params.get('parallel')) || 4);
const MAX_ATTEMPTS = 6;
const PENDING = 'tower-uploads:pending:';

const $ = (id) => document.getElementById(id);
const bar = $('bar');
const statusLine = $('status');

// What happened, for people and for tests.
window.uploadStats = {
  chunksSent: 0, // chunk requests answered 2xx
  retries: 0, // chunk attempts that failed and were tried again
  confirmedBytes: 0, // bytes the server has (status query + chunks answered 2xx)
  resumedFrom: null, // bytes already on the server when this page started the upload
  file: null, // the File object in the end
};

function setState(state, text) {
  document.body.dataset.state = state;
  if (text !== undefined) statusLine.textContent = text;
}

function fileKey(file) {
  return PENDING + [file.name, file.size, file.lastModified].join(':');
}

function mib(n) {
  return (n / 1048576).toFixed(1) + ' MiB';
}

// Interrupted uploads from an earlier visit: say how to resume them.
function showPending() {
  const names = [];
  for (let i = 0; i < localStorage.length; i++) {
    const k = localStorage.key(i);
    if (k.startsWith(PENDING)) {
      const [name, size] = k.slice(PENDING.length).split(':');
      names.push(`${name} (${mib(Number(size))})`);
    }
  }
  const box = $('resume');
  box.classList.toggle('hidden', names.length === 0);
  box.textContent = names.length
    ? `Interrupted upload of ${names.join(', ')}: pick the same file to resume.`
    : '';
}

// One request with XMLHttpRequest (fetch has no upload progress). Resolves with
// {status, body (parsed JSON or null), headers} or rejects on a network failure/abort.
function xhr(method, url, { headers = {}, body = null, onProgress } = {}) {
  return new Promise((resolve, reject) => {
    const x = new XMLHttpRequest();
    x.open(method, url);
    for (const [k, v] of Object.entries(headers)) x.setRequestHeader(k, v);
    if (onProgress) x.upload.onprogress = (e) => onProgress(e.loaded);
    x.onload = () => {
      let json = null;
      try { json = JSON.parse(x.responseText); } catch (_) { /* not JSON */ }
      resolve({ status: x.status, body: json, range: x.getResponseHeader('Range') });
    };
    x.onerror = () => reject(new Error('network error'));
    x.onabort = () => reject(new Error('aborted'));
    x.ontimeout = () => reject(new Error('timeout'));
    x.send(body);
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function signedUrl(file) {
  const key = fileKey(file);
  const saved = JSON.parse(localStorage.getItem(key) || 'null');
  if (saved && saved.expiry > Date.now() / 1000 + 300) return { ...saved, saved: true };
  const res = await fetch('/api/sign', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ filename: file.name, size: file.size }),
  });
  if (!res.ok) throw new Error(`the app refused to sign: ${res.status}`);
  const signed = await res.json();
  localStorage.setItem(key, JSON.stringify(signed));
  return { ...signed, saved: false };
}

// What the server has: the status query. {done: File} or {ranges: [[a, b), …]}.
async function serverState(url, total) {
  const r = await xhr('PUT', url, {
    headers: { 'Content-Range': `bytes */${total}`, 'Accept-Version': '2025-08-20' },
  });
  if (r.status === 200) return { done: r.body };
  if (r.status !== 202) throw new Error(`status query: ${r.status} ${r.body && r.body.message}`);
  return { ranges: (r.body.ranges || []).map(([a, b]) => [a, b + 1]) };
}

// [0, total) minus `have`, cut into pieces of at most CHUNK bytes.
function missingPieces(total, have) {
  const pieces = [];
  let at = 0;
  const gaps = [];
  for (const [a, b] of [...have].sort((x, y) => x[0] - y[0])) {
    if (a > at) gaps.push([at, a]);
    at = Math.max(at, b);
  }
  if (at < total) gaps.push([at, total]);
  for (const [a, b] of gaps) {
    for (let s = a; s < b; s += CHUNK) pieces.push([s, Math.min(s + CHUNK, b)]);
  }
  return pieces;
}

async function digest(blob) {
  if (!(window.crypto && crypto.subtle)) return null; // not a secure context
  const hash = await crypto.subtle.digest('SHA-256', await blob.arrayBuffer());
  let bin = '';
  for (const b of new Uint8Array(hash)) bin += String.fromCharCode(b);
  return `sha-256=:${btoa(bin)}:`;
}

async function upload(file) {
  setState('uploading', 'Asking the app for an upload URL…');
  $('result').classList.add('hidden');
  $('preview').classList.add('hidden');
  const total = file.size;
  const { url } = await signedUrl(file);
  let have = [];
  let finished = null;
  if (total === 0) {
    finished = (await xhr('PUT', url, { headers: { 'Accept-Version': '2025-08-20' } })).body;
  } else {
    const state = await serverState(url, total);
    if (state.done && state.done.filesize === total) {
      // A file of this size is there; send anyway: equal chunks are answered 200 and write
      // nothing, a different file replaces it.
    } else if (state.ranges) {
      have = state.ranges;
    }
  }
  const already = have.reduce((n, [a, b]) => n + (b - a), 0);
  uploadStats.resumedFrom = already;
  uploadStats.confirmedBytes = already;
  if (already > 0) setState('uploading', `Resuming: ${mib(already)} already on the server.`);

  const inflight = new Map(); // piece start -> bytes sent so far
  const draw = () => {
    let moving = 0;
    for (const v of inflight.values()) moving += v;
    const pct = total ? ((uploadStats.confirmedBytes + moving) / total) * 100 : 100;
    bar.value = Math.min(100, pct);
  };

  async function sendPiece([start, end]) {
    const blob = file.slice(start, end);
    const headers = {
      'Content-Range': `bytes ${start}-${end - 1}/${total}`,
      'Accept-Version': '2025-08-20',
    };
    const d = await digest(blob);
    if (d) headers['Content-Digest'] = d;
    for (let attempt = 1; ; attempt++) {
      let failure;
      try {
        inflight.set(start, 0);
        const r = await xhr('PUT', url, {
          headers,
          body: blob,
          onProgress: (loaded) => { inflight.set(start, loaded); draw(); },
        });
        inflight.delete(start);
        if (r.status >= 200 && r.status < 300) {
          uploadStats.chunksSent++;
          uploadStats.confirmedBytes += end - start;
          draw();
          if (r.status === 201 || (r.body && r.body.object === 'source')) finished = r.body;
          return;
        }
        const retryable = r.status === 408 || r.status === 429 || r.status >= 500;
        failure = `${r.status} ${r.body && (r.body.kind || '')}`;
        if (!retryable) throw new Error(`chunk ${headers['Content-Range']}: ${failure} ${r.body && r.body.message}`);
      } catch (e) {
        inflight.delete(start);
        draw();
        if (String(e.message).startsWith('chunk ')) throw e;
        failure = e.message;
      }
      if (attempt >= MAX_ATTEMPTS) throw new Error(`chunk ${headers['Content-Range']}: ${failure}`);
      uploadStats.retries++;
      const wait = Math.min(8000, 300 * 2 ** (attempt - 1)) + Math.random() * 200;
      statusLine.textContent = `A chunk failed (${failure}); retrying in ${Math.round(wait)} ms…`;
      await sleep(wait);
    }
  }

  const queue = missingPieces(total, have);
  const workers = Array.from({ length: Math.min(PARALLEL, queue.length) }, async () => {
    while (queue.length) await sendPiece(queue.shift());
  });
  await Promise.all(workers);
  if (!finished || finished.filesize !== total) {
    // Every chunk was answered, none completed the upload (they matched a file already
    // there, or raced): the status query has the answer.
    const state = await serverState(url, total);
    if (!state.done) throw new Error('the server still misses bytes; try again');
    finished = state.done;
  }
  localStorage.removeItem(fileKey(file));
  showPending();
  show(finished);
}

function show(file) {
  uploadStats.file = file;
  bar.value = 100;
  $('result').textContent = JSON.stringify(file, null, 2);
  $('result').classList.remove('hidden');
  if (file.kind === 'image') {
    $('preview').src = file.url;
    $('preview').classList.remove('hidden');
  }
  setState('done', `Uploaded ${file.filename} (${mib(file.filesize)}).`);
}

$('file').addEventListener('change', async (e) => {
  const file = e.target.files[0];
  if (!file) return;
  try {
    await upload(file);
  } catch (err) {
    setState('error', `Upload failed: ${err.message}. Pick the file again to resume.`);
  }
});

showPending();
