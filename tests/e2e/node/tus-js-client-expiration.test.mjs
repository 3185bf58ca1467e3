// expiration, as a real client sees it.
//  - `--expire-after 1h`: tus-js-client (1 MiB chunks) gets `Upload-Expires`
//    (IMF-fixdate, ~1 h ahead, never moving backwards) on the creation POST and
//    the PATCHes of the unfinished upload, HEAD shows it after the abort and in
//    the resuming process; once complete the upload no longer expires.
//  - `--expire-after 2s`: after the abort the unfinished upload expires
//    (HEAD 404/410); the resuming tus-js-client drops the stale URL from its
//    storage, creates a new upload and finishes it.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import {
  MiB, startServer, downloadSha256, tusHead, stableOffset, expectHttpDateAhead,
  runTusExtPhase, sleep, makeRandomSource, removeDir,
} from './helpers.mjs';

const SIZE_MIB = 16;
const SIZE = SIZE_MIB * MiB;
const CHUNK = MiB;
const HOUR_MS = 3600 * 1000;

let tmp;
let file;
let fileSha;

before(async () => {
  ({ dir: tmp, path: file, sha: fileSha } = await makeRandomSource(SIZE_MIB, 'random-16MiB.bin'));
});

after(() => removeDir(tmp));

test('Upload-Expires with --expire-after 1h: on POST, PATCH and HEAD of the unfinished upload, ~1 h ahead; gone once complete', { timeout: 60000 }, async (t) => {
  const server = await startServer({ extraArgs: ['--expire-after', '1h'] });
  t.after(() => server.stop());
  const common = {
    endpoint: `${server.url}/files/`, file, input: 'file', storage: path.join(tmp, 'urls-expire-1h.json'),
    chunkSize: CHUNK, filename: 'random-16MiB.bin',
  };

  const r1 = await runTusExtPhase('phase1', { ...common, abortAtBytes: 0.3 * SIZE, paceMs: 4, expectStored: true }, server);
  const answered = r1.requests.filter((r) => r.status != null);
  assert.equal(answered[0].method, 'POST');
  assert.equal(answered[0].status, 201);
  assert.ok(answered.some((r) => r.method === 'PATCH'), `no PATCH answered before the abort: ${JSON.stringify(r1.requests)}`);
  let previous = 0;
  for (const r of answered) {
    const at = expectHttpDateAhead(r.response['upload-expires'], HOUR_MS, { what: `${r.method} ${r.status} Upload-Expires` });
    assert.ok(at >= previous, `Upload-Expires moved backwards: ${JSON.stringify(answered.map((x) => x.response['upload-expires']))}`);
    previous = at;
  }

  await stableOffset(r1.url);
  const h1 = await tusHead(r1.url);
  const headExpires = expectHttpDateAhead(h1.headers.get('upload-expires'), HOUR_MS, { what: 'HEAD Upload-Expires' });
  assert.ok(headExpires >= previous, 'HEAD Upload-Expires is not before the last PATCH answer');

  const r2 = await runTusExtPhase('phase2', { ...common, resume: 'storage' }, server);
  assert.equal(r2.url, r1.url);
  const head = r2.requests[0];
  assert.equal(head.method, 'HEAD');
  expectHttpDateAhead(head.response['upload-expires'], HOUR_MS, { what: 'HEAD Upload-Expires seen by the resuming client' });
  const patches = r2.requests.filter((r) => r.method === 'PATCH');
  assert.ok(patches.length >= 2);
  for (const p of patches.slice(0, -1)) {
    assert.equal(p.status, 204);
    expectHttpDateAhead(p.response['upload-expires'], HOUR_MS, { what: 'PATCH Upload-Expires' });
  }
  const last = patches[patches.length - 1];
  assert.equal(Number(last.response['upload-offset']), SIZE);
  assert.equal(last.response['upload-expires'], undefined, `the completing PATCH still announces an expiry: ${JSON.stringify(last.response)}`);

  const h = await tusHead(r1.url);
  assert.equal(h.offset, SIZE);
  assert.equal(h.headers.get('upload-expires'), null, 'a completed upload does not expire (no Upload-Expires on HEAD)');
  const dl = await downloadSha256(r1.url);
  assert.equal(dl.status, 200);
  assert.equal(dl.sha256, fileSha, 'downloaded SHA-256 equals the source file');
});

test('an expired unfinished upload (--expire-after 2s): HEAD 404/410, tus-js-client starts over and finishes', { timeout: 60000 }, async (t) => {
  const server = await startServer({ extraArgs: ['--expire-after', '2s'] });
  t.after(() => server.stop());
  const common = {
    endpoint: `${server.url}/files/`, file, input: 'file', storage: path.join(tmp, 'urls-expire-2s.json'),
    chunkSize: CHUNK, filename: 'random-16MiB.bin',
  };

  const r1 = await runTusExtPhase('phase1', { ...common, abortAtBytes: 0.3 * SIZE, paceMs: 4, expectStored: true }, server);
  const post = r1.requests[0];
  expectHttpDateAhead(post.response['upload-expires'], 2000, { toleranceMs: 5000, what: 'POST Upload-Expires (2s)' });
  const stored = await stableOffset(r1.url);
  assert.ok(stored > 0);

  // Wait (bounded) for the upload to expire.
  const deadline = Date.now() + 20000;
  let status;
  for (;;) {
    status = (await tusHead(r1.url)).status;
    if (status === 404 || status === 410 || Date.now() > deadline) break;
    await sleep(200);
  }
  assert.ok(status === 404 || status === 410, `HEAD of the upload 20 s after expiry -> ${status}`);

  const r2 = await runTusExtPhase('phase2', { ...common, resume: 'storage' }, server);
  assert.deepEqual(r2.previousUploads.map((p) => p.uploadUrl), [r1.url]);
  const [head, create] = r2.requests;
  assert.equal(head.method, 'HEAD');
  assert.ok(head.status === 404 || head.status === 410, `client HEAD of the expired upload -> ${head.status}`);
  assert.equal(create.method, 'POST', 'the client creates a new upload');
  assert.equal(create.status, 201);
  assert.notEqual(r2.url, r1.url);
  const patches = r2.requests.filter((r) => r.method === 'PATCH');
  assert.equal(Number(patches[0].headers['upload-offset']), 0);
  assert.equal(patches.length, SIZE / CHUNK);

  const h = await tusHead(r2.url);
  assert.equal(h.offset, SIZE);
  const dl = await downloadSha256(r2.url);
  assert.equal(dl.status, 200);
  assert.equal(dl.sha256, fileSha, 'downloaded SHA-256 equals the source file');
});
