// creation-defer-length: tus-js-client with `uploadLengthDeferred: true` and
// 1 MiB chunks creates the upload with `Upload-Defer-Length: 1`, is aborted at
// >= 30% in one process, resumes in a fresh process, and declares the length
// with `Upload-Length` on its last PATCH.
//
// The input is a Buffer: with an fs.ReadStream, tus-js-client 4.3.1's
// FileSource never reports `done` for chunks smaller than the file, so it
// would never send the length (a client limitation, not a server one).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import {
  MiB, startServer, downloadSha256, tusHead, stableOffset, expectHttpDateAhead,
  runTusExtPhase, makeRandomSource, removeDir,
} from './helpers.mjs';

const SIZE_MIB = 24;
const SIZE = SIZE_MIB * MiB;
const CHUNK = MiB;
const DAY_MS = 24 * 3600 * 1000;

let tmp;
let file;
let fileSha;

before(async () => {
  ({ dir: tmp, path: file, sha: fileSha } = await makeRandomSource(SIZE_MIB, 'random-24MiB.bin'));
});

after(() => removeDir(tmp));

test('tus-js-client uploadLengthDeferred (1 MiB chunks) — abort at >=30%, resume in a new process, length sent on the last PATCH', { timeout: 60000 }, async (t) => {
  const server = await startServer();
  t.after(() => server.stop());
  const endpoint = `${server.url}/files/`;
  const common = {
    endpoint, file, input: 'buffer', storage: path.join(tmp, 'urls-deferred.json'),
    chunkSize: CHUNK, uploadLengthDeferred: true, filename: 'random-24MiB.bin',
  };

  // ---- phase 1 ----
  const r1 = await runTusExtPhase('phase1', { ...common, abortAtBytes: 0.3 * SIZE, paceMs: 4, expectStored: true }, server);
  const post = r1.requests[0];
  assert.equal(post.method, 'POST');
  assert.equal(post.headers['upload-defer-length'], '1', `creation POST: ${JSON.stringify(post)}`);
  assert.equal(post.headers['upload-length'], undefined, 'creation POST must not carry Upload-Length');
  assert.equal(post.status, 201, `creation POST -> ${post.status}`);
  expectHttpDateAhead(post.response['upload-expires'], DAY_MS, { what: 'POST Upload-Expires (default --expire-after 24h)' });
  assert.ok(r1.url, 'phase1 has an upload URL');
  assert.equal(r1.requests.filter((r) => r.method === 'POST').length, 1);
  const patches1 = r1.requests.filter((r) => r.method === 'PATCH');
  assert.ok(patches1.length >= 2, `phase1 sent ${patches1.length} PATCHes`);
  assert.ok(patches1.every((p) => p.headers['upload-length'] === undefined), 'no PATCH before the end declares the length');
  for (const p of patches1.filter((x) => x.status != null)) {
    assert.equal(p.status, 204, `phase1 PATCH: ${JSON.stringify(p)}`);
    assert.equal(p.response['upload-length'], undefined);
  }

  const stored = await stableOffset(r1.url);
  assert.ok(stored > 0 && stored < SIZE, `stored ${stored} after the abort`);
  assert.ok(stored <= r1.sentAtAbort, `server claims ${stored} bytes, the client had sent ${r1.sentAtAbort}`);
  const h1 = await tusHead(r1.url);
  assert.equal(h1.headers.get('upload-defer-length'), '1', 'HEAD of an unfinished deferred upload: Upload-Defer-Length: 1');
  assert.equal(h1.headers.get('upload-length'), null, 'HEAD of a deferred upload has no Upload-Length yet');
  expectHttpDateAhead(h1.headers.get('upload-expires'), DAY_MS, { what: 'HEAD Upload-Expires' });

  // ---- phase 2 ----
  const r2 = await runTusExtPhase('phase2', { ...common, resume: 'storage' }, server);
  assert.deepEqual(r2.previousUploads.map((p) => p.uploadUrl), [r1.url], 'findPreviousUploads() returns the phase-1 URL');
  assert.equal(r2.url, r1.url);
  assert.ok(!r2.requests.some((r) => r.method === 'POST'), 'resume must not create a new upload');
  const head = r2.requests[0];
  assert.equal(head.method, 'HEAD');
  assert.equal(head.status, 200);
  assert.equal(Number(head.response['upload-offset']), stored);
  assert.equal(head.response['upload-defer-length'], '1');
  const patches = r2.requests.filter((r) => r.method === 'PATCH');
  assert.equal(Number(patches[0].headers['upload-offset']), stored, 'resume starts at the stored offset');
  assert.equal(patches.length, Math.ceil((SIZE - stored) / CHUNK), `${patches.length} PATCHes of <= 1 MiB from ${stored}`);
  for (const p of patches) assert.equal(p.status, 204, `PATCH: ${JSON.stringify(p)}`);
  const last = patches[patches.length - 1];
  assert.equal(last.headers['upload-length'], String(SIZE), `the last PATCH declares the length: ${JSON.stringify(last)}`);
  assert.ok(patches.slice(0, -1).every((p) => p.headers['upload-length'] === undefined), 'only the last PATCH declares the length');
  assert.equal(Number(last.response['upload-offset']), SIZE);

  // ---- complete and intact ----
  const h = await tusHead(r1.url);
  assert.equal(h.length, SIZE, 'HEAD Upload-Length after the length was declared');
  assert.equal(h.offset, SIZE);
  assert.equal(h.headers.get('upload-defer-length'), null, 'no Upload-Defer-Length once the length is known');
  const dl = await downloadSha256(r1.url);
  assert.equal(dl.status, 200);
  assert.equal(dl.length, SIZE);
  assert.equal(dl.sha256, fileSha, 'downloaded SHA-256 equals the source file');
});
