// Scenario C: the seed's browser algorithm (javascript.info "Resumable file
// upload") driven with fetch against the simple protocol (/status, /upload),
// sending what the seed sends: X-File-Id and X-Start-Byte, never X-File-Size.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import path from 'node:path';
import { open, readdir, rm, stat } from 'node:fs/promises';
import { openAsBlob } from 'node:fs';
import {
  MiB, startServer, makeTempDir, makeRandomFile, sha256File, downloadSha256, waitUntil,
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

/** Sizes of the data files in the server's store (there is one per upload). */
async function dataFileSizes(server) {
  const uploads = path.join(server.dataDir, 'uploads');
  const names = (await readdir(uploads)).filter((name) => name.endsWith('.bin'));
  return Promise.all(names.map(async (name) => (await stat(path.join(uploads, name))).size));
}

/** POST /upload with the seed's two headers (and X-File-Size when `size` is given). */
function postUpload(base, fileId, startByte, body, { size, timeoutMs = 10000 } = {}) {
  const headers = { 'X-File-Id': fileId, 'X-Start-Byte': String(startByte) };
  if (size != null) headers['X-File-Size'] = String(size);
  return fetch(`${base}/upload`, { method: 'POST', headers, body, signal: AbortSignal.timeout(timeoutMs) });
}

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

test('seed algorithm, without X-File-Size: interrupted POST /upload keeps received bytes, resume from /status completes the file', { timeout: 60000 }, async (t) => {
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
    headers: { 'X-File-Id': fileId, 'X-Start-Byte': '0' },
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
  // Cut the connection once the last bytes have crossed loopback: watch the
  // data file, not /status (a new request for the same upload while the POST
  // is open is a takeover: the server ends the open one).
  await waitUntil(async () => (await dataFileSizes(server)).includes(PARTIAL), {
    what: `the first ${PARTIAL} bytes on disk`,
  });
  ac.abort();
  const outcome = await pending;
  if (outcome.res) {
    const body = await outcome.res.text().catch(() => '');
    assert.fail(`server answered the still-open POST /upload before its body ended: ${outcome.res.status} ${body}`);
  }
  assert.equal(outcome.err?.name, 'AbortError', `expected the fetch to be aborted, got ${outcome.err}`);

  // 4. /status reports exactly what was sent (once the server has seen the cut)
  await waitUntil(async () => (await getStatus(base, fileId)) === PARTIAL, {
    what: `GET /status reporting the ${PARTIAL} bytes sent before the abort`,
  });
  const stored = await getStatus(base, fileId);
  assert.equal(stored, PARTIAL, 'the stored count stays at what was sent');
  assert.deepEqual(await dataFileSizes(server), [PARTIAL], 'one upload, holding what was sent');

  // 5. a wrong X-Start-Byte is refused with 409 and the stored count
  for (const wrong of [0, stored + 1, stored - 1]) {
    const res = await postUpload(base, fileId, wrong, Buffer.alloc(4096, 0x41));
    const text = await res.text();
    assert.equal(res.status, 409, `POST /upload with X-Start-Byte ${wrong} (stored ${stored}) -> ${res.status} ${text}`);
    assert.equal(text.trim(), String(stored), '409 body is the stored count');
    assert.equal(res.headers.get('upload-offset'), String(stored), '409 carries Upload-Offset');
    assert.equal(await getStatus(base, fileId), stored, `409 for X-Start-Byte ${wrong} must not write anything`);
  }

  // 6. resume exactly like the seed: status -> slice from startByte
  const startByte = await getStatus(base, fileId);
  const blob = await openAsBlob(file);
  const res = await postUpload(base, fileId, startByte, blob.slice(startByte), { timeoutMs: 60000 });
  const text = await res.text();
  assert.equal(res.status, 200, `resuming POST /upload -> ${res.status} ${text}`);
  assert.equal(text.trim(), String(SIZE), 'resuming POST body is the stored count == size');
  assert.equal(await getStatus(base, fileId), SIZE, 'status == size after the resume');
  const location = res.headers.get('location');
  assert.ok(location, 'successful POST /upload has a Location header');
  const dlUrl = new URL(location, `${base}/`);
  assert.match(dlUrl.pathname, /^\/files\/[^/]+$/, `Location ${location} should point at /files/{id}`);

  // 7. the whole POST completed the upload: download and compare
  const dl = await downloadSha256(dlUrl.href);
  assert.equal(dl.status, 200, `GET ${dlUrl.href}`);
  assert.equal(dl.length, SIZE, 'download length');
  assert.equal(dl.sha256, fileSha, 'downloaded SHA-256 equals the source file');

  // 8. once complete, the seed run again (start byte = size, an empty slice)
  // is answered 200 with the count; a restart from 0 is refused with it
  const rerun = await postUpload(base, fileId, SIZE, new Uint8Array(0));
  assert.deepEqual([rerun.status, await rerun.text()], [200, String(SIZE)], 'POST /upload at the size on a complete upload');
  const again = await postUpload(base, fileId, 0, Buffer.alloc(16));
  const againText = await again.text();
  assert.equal(again.status, 409, `POST /upload from 0 on a complete upload -> ${again.status} ${againText}`);
  assert.equal(againText.trim(), String(SIZE));
  assert.deepEqual(await dataFileSizes(server), [SIZE], 'nothing written after completion');
});

test('with X-File-Size (as resumable.js sends it): a whole POST short of the size leaves the upload open, the rest completes it', { timeout: 30000 }, async (t) => {
  const server = await startServer();
  t.after(() => server.stop());
  const base = server.url;
  const data = Buffer.from('hello, sized world');
  const fileId = `sized.txt-${data.length}-1700000000000`;

  const first = await postUpload(base, fileId, 0, data.subarray(0, 5), { size: data.length });
  assert.deepEqual([first.status, await first.text()], [200, '5']);
  const download = new URL(first.headers.get('location'), `${base}/`).href;
  assert.equal((await downloadSha256(download)).status, 409, 'not complete before X-File-Size bytes arrived');

  const rest = await postUpload(base, fileId, 5, data.subarray(5), { size: data.length });
  assert.deepEqual([rest.status, await rest.text()], [200, String(data.length)]);
  const done = await downloadSha256(download);
  assert.equal(done.status, 200);
  assert.equal(done.sha256, createHash('sha256').update(data).digest('hex'));
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
