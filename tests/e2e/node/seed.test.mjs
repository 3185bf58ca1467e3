// Scenario C: the seed's browser algorithm (javascript.info "Resumable file
// upload") driven with fetch against the simple protocol (/status, /upload).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { open, rm, stat } from 'node:fs/promises';
import { openAsBlob } from 'node:fs';
import {
  MiB, startServer, makeTempDir, makeRandomFile, sha256File, downloadSha256,
  pollUntilStable, sleep,
} from './helpers.mjs';

const SIZE_MIB = 20;
const SIZE = SIZE_MIB * MiB;
const PARTIAL = 7 * MiB + 12345; // bytes sent before the request is aborted
const PIECE = 256 * 1024;

let tmp;
let file;
let fileSha;
const NAME = 'seed-random.bin';

before(async () => {
  tmp = await makeTempDir();
  file = path.join(tmp, NAME);
  await makeRandomFile(file, SIZE_MIB);
  fileSha = await sha256File(file);
});

after(async () => {
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

async function getStatus(base, fileId) {
  const res = await fetch(`${base}/status`, { headers: { 'X-File-Id': fileId }, signal: AbortSignal.timeout(10000) });
  const text = await res.text();
  assert.equal(res.status, 200, `GET /status -> ${res.status} ${text}`);
  assert.match(text.trim(), /^\d+$/, `GET /status body is not a decimal count: ${JSON.stringify(text)}`);
  return Number(text.trim());
}

/**
 * A ReadableStream over the first `limit` bytes of `filePath` that, once it has
 * handed out `limit` bytes, never ends (the request body stays open until it
 * is aborted). `allConsumed` resolves when the consumer (fetch) asks for more
 * after the last byte: every byte has been taken from the stream.
 */
function stallingBodyStream(fh, limit) {
  let pos = 0;
  let resolveConsumed;
  const allConsumed = new Promise((r) => { resolveConsumed = r; });
  const stream = new ReadableStream({
    async pull(controller) {
      if (pos >= limit) {
        resolveConsumed();
        return new Promise(() => {}); // stall: the body never completes
      }
      const n = Math.min(PIECE, limit - pos);
      const buf = Buffer.alloc(n);
      const { bytesRead } = await fh.read(buf, 0, n, pos);
      assert.equal(bytesRead, n);
      pos += n;
      controller.enqueue(new Uint8Array(buf.buffer, buf.byteOffset, n));
    },
  }, { highWaterMark: 0 });
  return { stream, allConsumed };
}

test('seed algorithm: interrupted POST /upload keeps received bytes, resume from /status completes the file', { timeout: 60000 }, async (t) => {
  const server = await startServer();
  t.after(() => server.stop());
  const base = server.url;

  // 1. fileId exactly as the seed builds it: name-size-lastModified
  const st = await stat(file);
  const fileId = `${NAME}-${st.size}-${Math.trunc(st.mtimeMs)}`;

  // 2. unknown id -> 0
  assert.equal(await getStatus(base, fileId), 0, 'unknown id reports 0');

  // 3. first attempt: stream part of the file, then abort mid-body
  const fh = await open(file, 'r');
  t.after(() => fh.close());
  const { stream, allConsumed } = stallingBodyStream(fh, PARTIAL);
  const ac = new AbortController();
  const pending = fetch(`${base}/upload`, {
    method: 'POST',
    headers: { 'X-File-Id': fileId, 'X-Start-Byte': '0', 'X-File-Size': String(SIZE) },
    body: stream,
    duplex: 'half',
    signal: ac.signal,
  }).then((res) => ({ res }), (err) => ({ err }));

  let timer;
  const consumed = await Promise.race([
    allConsumed.then(() => true),
    new Promise((r) => { timer = setTimeout(() => r(false), 20000); }),
  ]);
  clearTimeout(timer);
  assert.ok(consumed, 'fetch did not consume the first part of the body within 20 s');
  // Give the last bytes a moment to cross loopback, then cut the connection.
  // (No GET /status while the POST is open: the server treats a new request
  // for the same upload as a takeover and ends the open one.)
  await sleep(200);
  ac.abort();
  const outcome = await pending;
  if (outcome.res) {
    const body = await outcome.res.text().catch(() => '');
    assert.fail(`server answered the still-open POST /upload before its body ended: ${outcome.res.status} ${body}`);
  }
  assert.equal(outcome.err?.name, 'AbortError', `expected the fetch to be aborted, got ${outcome.err}`);

  // 4. /status settles on exactly what was sent
  const stored = await pollUntilStable(() => getStatus(base, fileId), {
    accept: (v) => v > 0, what: 'GET /status after the aborted POST', timeoutMs: 10000,
  });
  assert.ok(stored > 0 && stored < SIZE, `stored ${stored} should be in (0, ${SIZE})`);
  assert.equal(stored, PARTIAL, `all ${PARTIAL} bytes that were sent before the abort must be kept (server keeps ${stored})`);

  // 5. a wrong X-Start-Byte is refused with 409 and the stored count
  for (const wrong of [0, stored + 1, stored - 1]) {
    const res = await fetch(`${base}/upload`, {
      method: 'POST',
      headers: { 'X-File-Id': fileId, 'X-Start-Byte': String(wrong), 'X-File-Size': String(SIZE) },
      body: Buffer.alloc(4096, 0x41),
      signal: AbortSignal.timeout(10000),
    });
    const text = await res.text();
    assert.equal(res.status, 409, `POST /upload with X-Start-Byte ${wrong} (stored ${stored}) -> ${res.status} ${text}`);
    assert.equal(text.trim(), String(stored), '409 body is the stored count');
    assert.equal(res.headers.get('upload-offset'), String(stored), '409 carries Upload-Offset');
    assert.equal(await getStatus(base, fileId), stored, `409 for X-Start-Byte ${wrong} must not write anything`);
  }

  // 6. resume exactly like the seed: status -> slice from startByte
  const startByte = await getStatus(base, fileId);
  const blob = await openAsBlob(file);
  const res = await fetch(`${base}/upload`, {
    method: 'POST',
    headers: { 'X-File-Id': fileId, 'X-Start-Byte': String(startByte), 'X-File-Size': String(SIZE) },
    body: blob.slice(startByte),
    signal: AbortSignal.timeout(60000),
  });
  const text = await res.text();
  assert.equal(res.status, 200, `resuming POST /upload -> ${res.status} ${text}`);
  assert.equal(text.trim(), String(SIZE), 'resuming POST body is the stored count == size');
  assert.equal(await getStatus(base, fileId), SIZE, 'status == size after the resume');
  const location = res.headers.get('location');
  assert.ok(location, 'successful POST /upload has a Location header');
  const dlUrl = new URL(location, `${base}/`);
  assert.match(dlUrl.pathname, /^\/files\/[^/]+$/, `Location ${location} should point at /files/{id}`);

  // 7. download and compare
  const dl = await downloadSha256(dlUrl.href);
  assert.equal(dl.status, 200, `GET ${dlUrl.href}`);
  assert.equal(dl.length, SIZE, 'download length');
  assert.equal(dl.sha256, fileSha, 'downloaded SHA-256 equals the source file');

  // 8. once complete, a restart from 0 is refused with the full count
  const again = await fetch(`${base}/upload`, {
    method: 'POST',
    headers: { 'X-File-Id': fileId, 'X-Start-Byte': '0', 'X-File-Size': String(SIZE) },
    body: Buffer.alloc(16),
    signal: AbortSignal.timeout(10000),
  });
  const againText = await again.text();
  assert.equal(again.status, 409, `POST /upload from 0 on a complete upload -> ${again.status} ${againText}`);
  assert.equal(againText.trim(), String(SIZE));
});

test('simple protocol: malformed requests are rejected with 400', { timeout: 30000 }, async (t) => {
  const server = await startServer();
  t.after(() => server.stop());
  const base = server.url;

  const noId = await fetch(`${base}/status`, { signal: AbortSignal.timeout(10000) });
  assert.equal(noId.status, 400, `GET /status without X-File-Id -> ${noId.status} ${await noId.text()}`);

  for (const bad of ['1e3', '0x10', '-1', '', '18446744073709551616']) {
    const res = await fetch(`${base}/upload`, {
      method: 'POST',
      headers: { 'X-File-Id': 'bad-start', 'X-Start-Byte': bad },
      body: Buffer.alloc(10),
      signal: AbortSignal.timeout(10000),
    });
    const text = await res.text();
    assert.equal(res.status, 400, `X-Start-Byte ${JSON.stringify(bad)} -> ${res.status} ${text}`);
  }
  assert.equal(await getStatus(base, 'bad-start'), 0, 'rejected uploads store nothing');
});
