// The runner behind run.sh: for each test file, start the server it names, run it, stop the
// server. A test is any tests/browser/*.mjs whose first line is `// server: <example>
// [flags…]`; the runner adds `--listen 127.0.0.1:0 --data <fresh dir> --key <random>` and
// passes the test, in its environment: BASE_URL (http://127.0.0.1:<port>), DATA_DIR, API_KEY,
// SERVER_LOG (the server's stderr so far, a file), BROWSER_ARTIFACTS (where to put
// screenshots); also as BASE, KEY and SCREENSHOT_DIR.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, readdirSync, rmSync, openSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join, resolve } from 'node:path';

const here = new URL('.', import.meta.url).pathname;
const SERVER_LINE = /^\/\/ server: (\S+)(.*)$/;
const examples = process.env.EXAMPLES_DIR;
const artifacts = process.env.BROWSER_ARTIFACTS;
if (!examples || !artifacts) {
  console.error('run through run.sh (EXAMPLES_DIR and BROWSER_ARTIFACTS are not set)');
  process.exit(2);
}

const tests = process.argv.length > 2
  ? process.argv.slice(2).map((t) => resolve(t))
  : readdirSync(here).filter((f) => f.endsWith('.mjs')).sort().map((f) => join(here, f))
    .filter((f) => SERVER_LINE.test(readFileSync(f, 'utf8').split('\n', 1)[0]));

function serverLine(file) {
  const m = SERVER_LINE.exec(readFileSync(file, 'utf8').split('\n', 1)[0]);
  if (!m) throw new Error(`${file}: its first line is not "// server: <example> [flags…]"`);
  return { example: m[1], flags: m[2].trim() ? m[2].trim().split(/\s+/) : [] };
}

async function startServer(example, flags, log) {
  const data = mkdtempSync(join(tmpdir(), 'tower-uploads-browser-'));
  const key = 'key_' + randomBytes(16).toString('hex');
  const logFd = openSync(log, 'w');
  const child = spawn(join(examples, example),
    [...flags, '--listen', '127.0.0.1:0', '--data', data, '--key', key],
    { stdio: ['ignore', 'pipe', logFd] });
  const base = await new Promise((ok, fail) => {
    const timer = setTimeout(() => fail(new Error(`${example} did not start within 20 s`)), 20000);
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/listening on (http:\/\/\S+)/);
      if (m) { clearTimeout(timer); ok(m[1]); }
    });
    child.on('exit', (code) => { clearTimeout(timer); fail(new Error(`${example} exited: ${code}`)); });
  });
  return { child, base, data, key };
}

function run(file, env) {
  return new Promise((ok) => {
    const t = spawn(process.execPath, [file], { stdio: 'inherit', env: { ...process.env, ...env } });
    t.on('exit', (code, signal) => ok(code === 0 && !signal));
  });
}

let failed = 0;
for (const file of tests) {
  const name = basename(file).replace(/(\.test)?\.mjs$/, '');
  const { example, flags } = serverLine(file);
  const log = join(artifacts, `${name}.server.log`);
  console.log(`---- ${name} (server: ${example} ${flags.join(' ')}) ----`);
  const t0 = Date.now();
  let server;
  let ok = false;
  try {
    server = await startServer(example, flags, log);
    ok = await run(file, {
      BASE_URL: server.base,
      DATA_DIR: server.data,
      API_KEY: server.key,
      SERVER_LOG: log,
      BROWSER_ARTIFACTS: artifacts,
      BASE: server.base,
      KEY: server.key,
      SCREENSHOT_DIR: artifacts,
    });
  } catch (e) {
    console.error(`${name}: ${e.message}`);
  } finally {
    if (server) {
      server.child.kill('SIGTERM');
      rmSync(server.data, { recursive: true, force: true });
    }
  }
  console.log(`---- ${name}: ${ok ? 'ok' : 'FAILED'} in ${((Date.now() - t0) / 1000).toFixed(1)} s (server log: ${log}) ----`);
  if (!ok) failed++;
}
console.log(`browser tests: ${tests.length - failed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
