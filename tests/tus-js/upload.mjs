// tus-js-client in Node against a tower-uploads server (run by tests/tus_clients.rs):
// uploads FILE as FOLDER/NAME with PROTOCOL ('tus-v1'), aborts once a third of it is in,
// then resumes from the upload URL it was given, as a client resuming from stored state
// does. Prints one JSON line: the upload URL, the offset the resumed upload started from.
//
//   node upload.mjs ENDPOINT KEY FILE FOLDER NAME PROTOCOL
import { readFileSync } from 'node:fs';
import * as tus from 'tus-js-client';

const [endpoint, key, file, folder, name, protocol] = process.argv.slice(2);
const data = readFileSync(file);
const common = {
  endpoint,
  protocol,
  chunkSize: 5 * 1024 * 1024,
  retryDelays: [0, 500, 1000],
  headers: { Authorization: `Bearer ${key}` },
  metadata: { filename: name, folder, note: 'from tus-js-client' },
};

function run(options) {
  return new Promise((resolve, reject) => {
    const upload = new tus.Upload(data, {
      ...common,
      ...options,
      onError: reject,
      onSuccess: () => resolve(upload),
    });
    if (options.onUpload) options.onUpload(upload);
    upload.start();
  });
}

// First part: abort once a third is in.
let first;
await new Promise((resolve, reject) => {
  const upload = new tus.Upload(data, {
    ...common,
    onError: reject,
    onSuccess: () => reject(new Error('finished before it was interrupted')),
    onProgress: (sent) => {
      if (sent >= data.length / 3 && !first) {
        first = upload.url;
        upload.abort(false).then(resolve, reject);
      }
    },
  });
  upload.start();
});

// Resume from the URL, as from stored state; note the offset the server reported.
let resumedFrom = null;
const resumed = await run({
  uploadUrl: first,
  onAfterResponse: (req, res) => {
    if (req.getMethod() === 'HEAD' && resumedFrom === null) {
      resumedFrom = Number(res.getHeader('Upload-Offset'));
    }
  },
});
console.log(JSON.stringify({ url: resumed.url, first, resumedFrom, size: data.length }));
