// creation-with-upload: tus-js-client with `uploadDataDuringCreation: true`.
//  - chunked (4 MiB): the creation POST carries the first chunk; the upload is
//    aborted at >= 30% in one process and resumed from the URL storage in a
//    fresh process.
//  - unchunked: the creation POST carries the whole file, so an abort during
//    it leaves the client without an upload URL (tus-js-client stores the URL
//    only once the POST is answered): the new process finds nothing to resume
//    and uploads the file again in one POST.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import {
  MiB, startServer, downloadSha256, tusHead, stableOffset, expectHttpDateAhead,
  runTusExtPhase, makeRandomSource, removeDir,
} from './helpers.mjs';

const SIZE_MIB = 24;
const SIZE = SIZE_MIB * MiB;
const CHUNK = 4 * MiB;
const DAY_MS = 24 * 3600 * 1000;
const OCTET = 'application/offset+octet-stream';

let tmp;
let file;
let fileSha;

before(async () => {
  ({ dir: tmp, path: file, sha: fileSha } = await makeRandomSource(SIZE_MIB, 'random-24MiB.bin'));
});

after(() => removeDir(tmp));

async function expectIntact(url) {
  const h = await tusHead(url);
  assert.equal(h.status, 200);
  assert.equal(h.offset, SIZE, 'HEAD after completion');
  assert.equal(h.length, SIZE);
  const dl = await downloadSha256(url);
  assert.equal(dl.status, 200, `GET ${url}`);
  assert.equal(dl.length, SIZE);
  assert.equal(dl.sha256, fileSha, 'downloaded SHA-256 equals the source file');
}

test('tus-js-client uploadDataDuringCreation, chunkSize 4 MiB — abort at >=30%, resume in a new process', { timeout: 60000 }, async (t) => {
  const server = await startServer();
  t.after(() => server.stop());
  const common = {
    endpoint: `${server.url}/files/`, file, input: 'file', storage: path.join(tmp, 'urls-cwu-chunked.json'),
    chunkSize: CHUNK, uploadDataDuringCreation: true, filename: 'random-24MiB.bin',
  };

  const r1 = await runTusExtPhase('phase1', { ...common, abortAtBytes: 0.3 * SIZE, paceMs: 4, expectStored: true }, server);
  const post = r1.requests[0];
  assert.equal(post.method, 'POST');
  assert.equal(post.headers['content-type'], OCTET, 'creation POST carries data');
  assert.equal(post.headers['upload-length'], String(SIZE));
  assert.equal(post.bodySize, CHUNK, 'creation POST body is the first chunk');
  assert.equal(post.status, 201, `creation POST -> ${post.status}`);
  assert.equal(Number(post.response['upload-offset']), CHUNK, 'creation-with-upload response carries Upload-Offset');
  expectHttpDateAhead(post.response['upload-expires'], DAY_MS, { what: 'POST Upload-Expires (default --expire-after 24h)' });
  assert.ok(r1.url);
  const patches1 = r1.requests.filter((r) => r.method === 'PATCH');
  assert.ok(patches1.length >= 1, 'phase1 went on with PATCHes');
  assert.equal(Number(patches1[0].headers['upload-offset']), CHUNK, 'first PATCH follows the POST data');

  const stored = await stableOffset(r1.url);
  assert.ok(stored >= CHUNK && stored < SIZE, `stored ${stored} after the abort (the POST's ${CHUNK} bytes at least)`);
  assert.ok(stored <= r1.sentAtAbort, `server claims ${stored}, the client had sent ${r1.sentAtAbort}`);

  const r2 = await runTusExtPhase('phase2', { ...common, resume: 'storage' }, server);
  assert.deepEqual(r2.previousUploads.map((p) => p.uploadUrl), [r1.url]);
  assert.equal(r2.url, r1.url);
  assert.ok(!r2.requests.some((r) => r.method === 'POST'), 'resume must not create a new upload');
  const patches = r2.requests.filter((r) => r.method === 'PATCH');
  assert.equal(Number(patches[0].headers['upload-offset']), stored, 'resume starts at the stored offset');
  assert.equal(patches.length, Math.ceil((SIZE - stored) / CHUNK));
  assert.ok(patches.every((p) => p.status === 204), JSON.stringify(patches));
  assert.ok(r2.firstProgress >= stored, `first progress ${r2.firstProgress} < ${stored}`);
  await expectIntact(r1.url);
});

test('tus-js-client uploadDataDuringCreation, unchunked — abort during the POST, a new process uploads again in one POST', { timeout: 60000 }, async (t) => {
  const server = await startServer();
  t.after(() => server.stop());
  const common = {
    endpoint: `${server.url}/files/`, file, input: 'file', storage: path.join(tmp, 'urls-cwu-whole.json'),
    uploadDataDuringCreation: true, filename: 'random-24MiB.bin',
  };

  const r1 = await runTusExtPhase('phase1', { ...common, abortAtBytes: 0.3 * SIZE, paceMs: 4 }, server);
  assert.equal(r1.requests.length, 1, `phase1 sent only the creation POST: ${JSON.stringify(r1.requests)}`);
  const post1 = r1.requests[0];
  assert.equal(post1.method, 'POST');
  assert.equal(post1.headers['content-type'], OCTET);
  assert.equal(post1.bodySize, SIZE, 'the creation POST carries the whole file');
  assert.equal(post1.status, undefined, 'the POST was aborted before an answer');
  assert.equal(r1.url, null, 'no upload URL without the POST response');
  assert.ok(r1.sentAtAbort >= 0.3 * SIZE && r1.sentAtAbort < SIZE);

  const r2 = await runTusExtPhase('phase2', { ...common, resume: 'storage' }, server);
  assert.deepEqual(r2.previousUploads, [], 'nothing was stored to resume from');
  assert.equal(r2.requests.length, 1, `phase2: one POST and nothing else: ${JSON.stringify(r2.requests)}`);
  const post = r2.requests[0];
  assert.equal(post.method, 'POST');
  assert.equal(post.headers['content-type'], OCTET);
  assert.equal(post.bodySize, SIZE);
  assert.equal(post.status, 201, `POST -> ${post.status}`);
  assert.equal(Number(post.response['upload-offset']), SIZE, 'POST response Upload-Offset = whole file');
  assert.equal(post.response['upload-expires'], undefined, 'a completed upload does not expire (no Upload-Expires)');
  assert.equal(r2.url, new URL(post.response.location, common.endpoint).href);
  await expectIntact(r2.url);
});
