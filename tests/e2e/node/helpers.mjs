// Shared helpers for the Node end-to-end tests: start/stop the server under
// test, make random files, hash files and HTTP bodies.
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { once } from 'node:events';

export const MiB = 1024 * 1024;

// http://, or https:// for a server started with --tls-cert/--tls-key.
const LISTEN_RE = /^resumable listening on (https?:\/\/127\.0\.0\.1:(\d+))\s*$/;

export function serverBinary() {
  const bin = process.env.RESUMABLE_BIN;
  if (!bin) throw new Error('RESUMABLE_BIN is not set (path to the resumable server binary)');
  return bin;
}

/**
 * Start `resumable serve` on 127.0.0.1:0 with a fresh temp data dir.
 * Resolves to { url, port, dataDir, proc, stderr(), stop() } once the
 * listening line has been printed.
 */
export async function startServer({ maxSize, extraArgs = [], timeoutMs = 15000 } = {}) {
  const dataDir = await mkdtemp(path.join(tmpdir(), 'resumable-e2e-data-'));
  const args = ['serve', '--listen', '127.0.0.1:0', '--data-dir', dataDir];
  if (maxSize != null) args.push('--max-size', String(maxSize));
  args.push(...extraArgs);
  const proc = spawn(serverBinary(), args, { stdio: ['ignore', 'pipe', 'pipe'] });

  let stderrBuf = '';
  proc.stderr.setEncoding('utf8');
  proc.stderr.on('data', (d) => {
    stderrBuf += d;
    if (stderrBuf.length > 200_000) stderrBuf = stderrBuf.slice(-100_000);
  });

  const { url, port } = await new Promise((resolve, reject) => {
    let out = '';
    let firstLineSeen = false;
    const timer = setTimeout(() => {
      cleanup();
      proc.kill('SIGKILL');
      reject(new Error(`server did not print its listening line within ${timeoutMs} ms; stdout=${JSON.stringify(out)} stderr=${stderrBuf.slice(-2000)}`));
    }, timeoutMs);
    const onData = (d) => {
      if (firstLineSeen) return;
      out += d;
      const nl = out.indexOf('\n');
      if (nl < 0) return;
      firstLineSeen = true;
      const line = out.slice(0, nl);
      const m = LISTEN_RE.exec(line);
      cleanup();
      if (!m) {
        proc.kill('SIGKILL');
        reject(new Error(`unexpected first stdout line from server: ${JSON.stringify(line)}`));
      } else {
        resolve({ url: m[1], port: Number(m[2]) });
      }
    };
    const onExit = (code, signal) => {
      cleanup();
      reject(new Error(`server exited before listening (code=${code} signal=${signal}); stdout=${JSON.stringify(out)} stderr=${stderrBuf.slice(-2000)}`));
    };
    const onError = (err) => { cleanup(); reject(err); };
    function cleanup() {
      clearTimeout(timer);
      proc.stdout.off('data', onData);
      proc.off('exit', onExit);
      proc.off('error', onError);
    }
    proc.stdout.setEncoding('utf8');
    proc.stdout.on('data', onData);
    proc.on('exit', onExit);
    proc.on('error', onError);
  });
  // Keep draining stdout so the server never blocks on a full pipe.
  proc.stdout.resume();

  let stopped = false;
  async function stop() {
    if (stopped) return;
    stopped = true;
    if (proc.exitCode === null && proc.signalCode === null) {
      const exited = once(proc, 'exit');
      proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(t);
    }
    await rm(dataDir, { recursive: true, force: true });
  }

  return { url, port, dataDir, proc, stderr: () => stderrBuf, stop };
}

/** Make a temp dir for test files; returns its path. */
export function makeTempDir(prefix = 'resumable-e2e-') {
  return mkdtemp(path.join(tmpdir(), prefix));
}

/** Write `mib` MiB of random bytes to `filePath`. */
export async function makeRandomFile(filePath, mib) {
  const ws = createWriteStream(filePath);
  for (let i = 0; i < mib; i++) {
    if (!ws.write(randomBytes(MiB))) await once(ws, 'drain');
  }
  ws.end();
  await once(ws, 'finish');
  return filePath;
}

/**
 * A fresh temp dir holding `name`, `mib` MiB of random bytes: { dir, path, sha } (its hex
 * SHA-256), for a test file's `before` hook; `removeDir(dir)` in `after` cleans up.
 */
export async function makeRandomSource(mib, name) {
  const dir = await makeTempDir();
  const filePath = await makeRandomFile(path.join(dir, name), mib);
  return { dir, path: filePath, sha: await sha256File(filePath) };
}

/** Removes a directory made by makeTempDir, if it was made. */
export async function removeDir(dir) {
  if (dir) await rm(dir, { recursive: true, force: true });
}

/** Hex SHA-256 of a file. */
export async function sha256File(filePath) {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(filePath)) h.update(chunk);
  return h.digest('hex');
}

/** Fetch `url` and return { status, headers, sha256, length } of the body, streamed. */
export async function downloadSha256(url, init = {}) {
  const res = await fetch(url, { signal: AbortSignal.timeout(60000), ...init });
  const h = createHash('sha256');
  let length = 0;
  if (res.body) {
    for await (const chunk of res.body) {
      h.update(chunk);
      length += chunk.length;
    }
  }
  return { status: res.status, headers: res.headers, sha256: h.digest('hex'), length };
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Poll `condition()` (may be async) every `intervalMs` until it returns something
 * truthy, and return that; throws after `timeoutMs`.
 */
export async function waitUntil(condition, { intervalMs = 50, timeoutMs = 10000, what = 'condition' } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await condition();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await sleep(intervalMs);
  }
}

/**
 * Poll `read()` (async, returns a number) every `intervalMs` until it returns
 * the same value `stableReads` times in a row and `accept(value)` holds.
 * Gives up after `timeoutMs` and throws with the history of values.
 */
export async function pollUntilStable(read, { accept = () => true, intervalMs = 50, stableReads = 3, timeoutMs = 10000, what = 'value' } = {}) {
  const deadline = Date.now() + timeoutMs;
  const history = [];
  let last;
  let same = 0;
  for (;;) {
    const v = await read();
    history.push(v);
    if (v === last) same++; else { last = v; same = 1; }
    if (same >= stableReads && accept(v)) return v;
    if (Date.now() > deadline) {
      throw new Error(`${what} did not become stable/acceptable within ${timeoutMs} ms; last values: ${JSON.stringify(history.slice(-20))}`);
    }
    await sleep(intervalMs);
  }
}

/**
 * Run `node script ...args` as a child process; resolve to
 * { code, signal, stdout, stderr }. Killed after timeoutMs.
 */
export function runNodeChild(script, args, { timeoutMs = 60000, env } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [script, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: env ?? process.env,
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d) => { stdout += d; });
    child.stderr.setEncoding('utf8').on('data', (d) => { stderr += d; });
    const t = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (e) => { clearTimeout(t); reject(e); });
    child.on('exit', (code, signal) => {
      clearTimeout(t);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/** Parse the last line of a child's stdout that is a JSON object. */
export function lastJsonLine(stdout) {
  const lines = stdout.trim().split('\n').filter((l) => l.startsWith('{'));
  if (lines.length === 0) throw new Error(`no JSON line in child stdout: ${JSON.stringify(stdout.slice(-2000))}`);
  return JSON.parse(lines[lines.length - 1]);
}

/** HEAD a tus upload URL; returns { status, offset, length, headers }. */
export async function tusHead(uploadUrl) {
  const res = await fetch(uploadUrl, {
    method: 'HEAD',
    headers: { 'Tus-Resumable': '1.0.0' },
    signal: AbortSignal.timeout(10000),
  });
  const off = res.headers.get('upload-offset');
  const len = res.headers.get('upload-length');
  return {
    status: res.status,
    offset: off == null ? null : Number(off),
    length: len == null ? null : Number(len),
    headers: res.headers,
  };
}

// ---- helpers for the tus extension tests ----

const IMF_FIXDATE_RE = /^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d{2}:\d{2}:\d{2} GMT$/;

/**
 * Check that `value` (an Upload-Expires header) is an HTTP date (IMF-fixdate)
 * about `aheadMs` after now (± toleranceMs); returns the parsed time in ms.
 */
export function expectHttpDateAhead(value, aheadMs, { toleranceMs = 120000, what = 'Upload-Expires' } = {}) {
  if (value == null) throw new Error(`${what} is missing`);
  if (!IMF_FIXDATE_RE.test(value)) throw new Error(`${what} ${JSON.stringify(value)} is not an HTTP date (IMF-fixdate)`);
  const t = Date.parse(value);
  if (Number.isNaN(t)) throw new Error(`${what} ${JSON.stringify(value)} does not parse`);
  const delta = t - Date.now();
  if (Math.abs(delta - aheadMs) > toleranceMs) {
    throw new Error(`${what} ${value} is ${Math.round(delta / 1000)} s ahead of now, expected ~${Math.round(aheadMs / 1000)} s`);
  }
  return t;
}

/**
 * After a client was aborted: HEAD `uploadUrl` until Upload-Offset stops
 * moving (the server may still be finishing the cut PATCH). Never call this
 * while one of your own PATCHes to the upload is running.
 */
export async function stableOffset(uploadUrl, what = `Upload-Offset of ${uploadUrl}`) {
  return pollUntilStable(async () => {
    const h = await tusHead(uploadUrl);
    if (h.status !== 200) throw new Error(`HEAD ${uploadUrl} -> ${h.status}`);
    return h.offset;
  }, { what, timeoutMs: 10000 });
}

/**
 * Run one phase of tus-ext-child.mjs against `server`; asserts a clean exit
 * and returns its JSON outcome (with the request log in `.requests`).
 */
export async function runTusExtPhase(phase, opts, server) {
  const child = new URL('./tus-ext-child.mjs', import.meta.url).pathname;
  const p = await runNodeChild(child, [phase, JSON.stringify(opts)], { timeoutMs: 55000 });
  if (p.code !== 0) {
    throw new Error(`${phase} child failed: code=${p.code} signal=${p.signal}\nstdout=${p.stdout.slice(-6000)}\nstderr=${p.stderr.slice(-3000)}\nserver stderr=${server.stderr().slice(-2000)}`);
  }
  return lastJsonLine(p.stdout);
}
