// Scenario A: tus-js-client uploads a 24 MiB file, is aborted at >= 30% in one
// process, and resumes (not restarts) in a fresh process.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  MiB, startServer, downloadSha256, runNodeChild, lastJsonLine, pollUntilStable, tusHead,
  makeRandomSource, removeDir,
} from './helpers.mjs';

const CHILD = path.join(path.dirname(fileURLToPath(import.meta.url)), 'tus-child.mjs');
const SIZE_MIB = 24;
const SIZE = SIZE_MIB * MiB;

let tmp;
let file;
let fileSha;

before(async () => {
  ({ dir: tmp, path: file, sha: fileSha } = await makeRandomSource(SIZE_MIB, 'random-24MiB.bin'));
});

after(() => removeDir(tmp));

const variants = [
  { name: 'default chunkSize (one PATCH), resumed via FileUrlStorage/findPreviousUploads', chunkSize: null, resume: 'storage' },
  { name: 'chunkSize 1 MiB, resumed via the uploadUrl option', chunkSize: MiB, resume: 'uploadUrl' },
];

for (const v of variants) {
  test(`tus-js-client: abort at >=30% then resume in a new process — ${v.name}`, { timeout: 60000 }, async (t) => {
    const server = await startServer();
    t.after(() => server.stop());
    const endpoint = `${server.url}/files/`;
    const storage = v.resume === 'storage' ? path.join(tmp, `urls-${v.chunkSize ?? 'inf'}.json`) : null;

    // ---- phase 1: child process starts the upload and aborts it ----
    const p1 = await runNodeChild(CHILD, ['phase1', JSON.stringify({
      endpoint, file, storage, chunkSize: v.chunkSize, abortAtFraction: 0.3, filename: 'random-24MiB.bin',
    })], { timeoutMs: 55000 });
    assert.equal(p1.code, 0, `phase1 child failed: code=${p1.code} signal=${p1.signal}\nstdout=${p1.stdout}\nstderr=${p1.stderr}\nserver stderr=${server.stderr().slice(-2000)}`);
    const r1 = lastJsonLine(p1.stdout);
    assert.ok(r1.url, `phase1 printed no upload URL: ${p1.stdout}`);
    assert.ok(r1.url.startsWith(`${server.url}/files/`), `upload URL ${r1.url} is not under ${server.url}/files/`);
    assert.equal(r1.requests[0].method, 'POST', 'phase1 should start with a creation POST');
    assert.ok(r1.requests.some((r) => r.method === 'PATCH'), 'phase1 sent no PATCH');
    assert.ok(r1.sentAtAbort >= 0.3 * SIZE && r1.sentAtAbort < SIZE, `aborted at ${r1.sentAtAbort}`);

    // The server may need a moment to notice the dropped connection; wait
    // (bounded) until the offset it reports stops moving.
    const stored = await pollUntilStable(async () => {
      const h = await tusHead(r1.url);
      assert.equal(h.status, 200, `HEAD ${r1.url} -> ${h.status}`);
      return h.offset;
    }, { what: 'Upload-Offset after abort', timeoutMs: 10000 });
    assert.ok(stored > 0, `after the abort the server stored nothing (Upload-Offset ${stored}); interrupted PATCH bodies must keep what arrived`);
    assert.ok(stored < SIZE, `Upload-Offset ${stored} should be < ${SIZE} after aborting at ${r1.sentAtAbort}`);
    assert.ok(stored <= r1.sentAtAbort, `server claims ${stored} bytes but the client had only sent ${r1.sentAtAbort}`);
    const h0 = await tusHead(r1.url);
    assert.equal(h0.length, SIZE, 'HEAD Upload-Length');
    assert.equal(h0.headers.get('tus-resumable'), '1.0.0', 'HEAD Tus-Resumable');
    assert.match(h0.headers.get('cache-control') ?? '', /no-store/, 'HEAD Cache-Control');

    // ---- phase 2: a fresh child process resumes ----
    const p2 = await runNodeChild(CHILD, ['phase2', JSON.stringify({
      endpoint, file, storage, chunkSize: v.chunkSize, resume: v.resume, uploadUrl: r1.url, filename: 'random-24MiB.bin',
    })], { timeoutMs: 55000 });
    assert.equal(p2.code, 0, `phase2 child failed: code=${p2.code}\nstdout=${p2.stdout}\nstderr=${p2.stderr}\nserver stderr=${server.stderr().slice(-2000)}`);
    const r2 = lastJsonLine(p2.stdout);
    assert.equal(r2.headStatus, 200);
    assert.equal(r2.headOffset, stored, 'HEAD in the new process reports the stored offset');
    assert.ok(r2.headOffset > 0 && r2.headOffset < SIZE, `HEAD before resume: 0 < ${r2.headOffset} < ${SIZE}`);
    if (v.resume === 'storage') {
      assert.deepEqual(r2.previousUploads, [r1.url], 'findPreviousUploads() returns the URL stored by phase 1');
    }
    assert.equal(r2.url, r1.url, 'the resumed upload uses the same URL');
    assert.ok(!r2.requests.some((r) => r.method === 'POST'), `resume must not create a new upload: ${JSON.stringify(r2.requests)}`);
    const patches = r2.requests.filter((r) => r.method === 'PATCH');
    assert.ok(patches.length >= 1, 'resume sent no PATCH');
    assert.equal(Number(patches[0].uploadOffset), stored, `first PATCH of the resume must start at the stored offset, not 0: ${JSON.stringify(patches[0])}`);
    assert.ok(patches.every((p) => p.url === r1.url), 'all PATCHes go to the upload URL');
    if (v.chunkSize != null) {
      const expected = Math.ceil((SIZE - stored) / v.chunkSize);
      assert.equal(patches.length, expected, `expected ${expected} PATCHes of <= 1 MiB from ${stored}`);
    } else {
      assert.equal(patches.length, 1, 'default chunkSize resumes with a single PATCH');
    }
    assert.ok(r2.firstProgress >= stored, `first onProgress ${r2.firstProgress} < stored ${stored}: restarted from 0?`);

    // ---- the upload is complete and downloads byte-identical ----
    const h = await tusHead(r1.url);
    assert.equal(h.offset, SIZE, 'HEAD after completion');
    const dl = await downloadSha256(r1.url);
    assert.equal(dl.status, 200, `GET ${r1.url}`);
    assert.equal(dl.length, SIZE, 'download length');
    assert.equal(dl.sha256, fileSha, 'downloaded SHA-256 equals the source file');
  });
}
