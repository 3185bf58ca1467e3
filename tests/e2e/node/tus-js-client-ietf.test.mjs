// tus-js-client in its IETF draft modes against the server: `protocol: 'ietf-draft-03'` (it sends
// Upload-Draft-Interop-Version 5) and `'ietf-draft-05'` (6: appends are
// application/partial-upload). Each upload is aborted at >= 30% in one process and resumed (not
// restarted) in a fresh one, from the URL storage or the uploadUrl option (tus-child.mjs, as in
// tus-js-client.test.mjs); the download's SHA-256 equals the source's.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  MiB, startServer, downloadSha256, runNodeChild, lastJsonLine, pollUntilStable, tusHead,
  makeRandomSource, removeDir,
} from './helpers.mjs';

const CHILD = path.join(path.dirname(fileURLToPath(import.meta.url)), 'tus-child.mjs');
const SIZE_MIB = 16;
const SIZE = SIZE_MIB * MiB;
const FILENAME = 'ietf-random-16MiB.bin';

let tmp;
let file;
let fileSha;

before(async () => {
  ({ dir: tmp, path: file, sha: fileSha } = await makeRandomSource(SIZE_MIB, FILENAME));
});

after(() => removeDir(tmp));

/** An IETF HEAD at `version`: { status, offset, complete, headers }. */
async function ietfHead(url, version) {
  const response = await fetch(url, {
    method: 'HEAD',
    headers: { 'Upload-Draft-Interop-Version': version },
    signal: AbortSignal.timeout(10000),
  });
  const offset = response.headers.get('upload-offset');
  return {
    status: response.status,
    offset: offset == null ? null : Number(offset),
    complete: response.headers.get('upload-complete'),
    headers: response.headers,
  };
}

/** Every request of a phase is the draft's at `version`, none is tus; appends as `version` wants. */
function assertIetfRequests(requests, version, phase) {
  assert.ok(requests.length > 0, `${phase}: no requests`);
  for (const r of requests) {
    assert.equal(r.interopVersion, version, `${phase}: ${r.method} ${r.url} Upload-Draft-Interop-Version`);
    assert.equal(r.tusResumable, null, `${phase}: ${r.method} ${r.url} carries Tus-Resumable`);
    if (r.method === 'PATCH' && version === '6') {
      assert.equal(r.contentType, 'application/partial-upload', `${phase}: PATCH at ${r.uploadOffset} Content-Type`);
    }
  }
}

const protocols = [
  { protocol: 'ietf-draft-03', version: '5' },
  { protocol: 'ietf-draft-05', version: '6' },
];
const variants = [
  { name: 'default chunkSize (one PATCH), resumed via FileUrlStorage/findPreviousUploads', chunkSize: null, resume: 'storage' },
  { name: 'chunkSize 1 MiB, resumed via the uploadUrl option', chunkSize: MiB, resume: 'uploadUrl' },
];

for (const { protocol, version } of protocols) {
  for (const v of variants) {
    test(`tus-js-client protocol '${protocol}' (interop ${version}): abort at >=30% then resume in a new process — ${v.name}`, { timeout: 60000 }, async (t) => {
      const server = await startServer();
      t.after(() => server.stop());
      const endpoint = `${server.url}/files/`;
      const storage = v.resume === 'storage' ? path.join(tmp, `urls-${protocol}-${v.chunkSize ?? 'inf'}.json`) : null;
      const common = { endpoint, file, storage, chunkSize: v.chunkSize, filename: FILENAME, protocol };

      // ---- phase 1: a child process starts the upload and aborts it ----
      const p1 = await runNodeChild(CHILD, ['phase1', JSON.stringify({ ...common, abortAtFraction: 0.3 })], { timeoutMs: 55000 });
      assert.equal(p1.code, 0, `phase1 child failed: code=${p1.code} signal=${p1.signal}\nstdout=${p1.stdout}\nstderr=${p1.stderr}\nserver stderr=${server.stderr().slice(-2000)}`);
      const r1 = lastJsonLine(p1.stdout);
      assert.ok(r1.url?.startsWith(`${server.url}/files/`), `upload URL ${r1.url} is not under ${server.url}/files/`);
      assert.equal(r1.requests[0].method, 'POST', 'phase1 starts with a creation POST');
      assert.equal(r1.requests[0].uploadComplete, '?0', 'the creation POST says Upload-Complete: ?0');
      assert.ok(r1.requests.some((r) => r.method === 'PATCH'), 'phase1 sent no PATCH');
      assertIetfRequests(r1.requests, version, 'phase1');
      if (v.chunkSize == null) {
        // One PATCH for the whole file, cut by the abort: it had announced the upload's end.
        const cut = r1.requests.filter((r) => r.method === 'PATCH');
        assert.deepEqual(cut.map((r) => [r.uploadOffset, r.uploadComplete]), [['0', '?1']], 'phase1: the one PATCH');
      }
      assert.ok(r1.sentAtAbort >= 0.3 * SIZE && r1.sentAtAbort < SIZE, `aborted at ${r1.sentAtAbort}`);

      // The server may need a moment to notice the dropped connection: wait (bounded) until the
      // offset an IETF HEAD reports stops moving.
      const stored = await pollUntilStable(async () => {
        const h = await ietfHead(r1.url, version);
        assert.equal(h.status, 204, `IETF HEAD ${r1.url} -> ${h.status}`);
        return h.offset;
      }, { what: 'Upload-Offset after abort', timeoutMs: 10000 });
      assert.ok(stored > 0, `after the abort the server stored nothing (Upload-Offset ${stored}); interrupted PATCH bodies must keep what arrived`);
      assert.ok(stored < SIZE && stored <= r1.sentAtAbort, `Upload-Offset ${stored} after aborting at ${r1.sentAtAbort} of ${SIZE}`);
      const h0 = await ietfHead(r1.url, version);
      assert.equal(h0.complete, '?0', 'IETF HEAD of the interrupted upload: Upload-Complete');
      assert.equal(h0.headers.get('upload-length'), String(SIZE), 'IETF HEAD: Upload-Length');
      assert.match(h0.headers.get('cache-control') ?? '', /no-store/, 'IETF HEAD: Cache-Control');
      assert.equal(h0.headers.get('tus-resumable'), null, 'an IETF answer is not tus');
      if (version === '6') assert.match(h0.headers.get('upload-limit') ?? '', /max-size=\d+/, 'IETF HEAD: Upload-Limit');

      // ---- phase 2: a fresh child process resumes ----
      const p2 = await runNodeChild(CHILD, ['phase2', JSON.stringify({
        ...common, resume: v.resume, uploadUrl: r1.url, headHeaders: { 'Upload-Draft-Interop-Version': version },
      })], { timeoutMs: 55000 });
      assert.equal(p2.code, 0, `phase2 child failed: code=${p2.code}\nstdout=${p2.stdout}\nstderr=${p2.stderr}\nserver stderr=${server.stderr().slice(-2000)}`);
      const r2 = lastJsonLine(p2.stdout);
      assert.equal(r2.headStatus, 204);
      assert.equal(r2.headOffset, stored, 'HEAD in the new process reports the stored offset');
      if (v.resume === 'storage') {
        assert.deepEqual(r2.previousUploads, [r1.url], 'findPreviousUploads() returns the URL stored by phase 1');
      }
      assert.equal(r2.url, r1.url, 'the resumed upload uses the same URL');
      assertIetfRequests(r2.requests, version, 'phase2');
      assert.equal(r2.requests[0].method, 'HEAD', 'the resume asks for the offset first');
      assert.ok(!r2.requests.some((r) => r.method === 'POST'), `resume must not create a new upload: ${JSON.stringify(r2.requests)}`);
      const patches = r2.requests.filter((r) => r.method === 'PATCH');
      assert.equal(Number(patches[0]?.uploadOffset), stored, `first PATCH of the resume must start at the stored offset, not 0: ${JSON.stringify(patches[0])}`);
      assert.ok(patches.every((p) => p.url === r1.url), 'all PATCHes go to the upload URL');
      const expected = v.chunkSize == null ? 1 : Math.ceil((SIZE - stored) / v.chunkSize);
      assert.equal(patches.length, expected, `PATCHes from ${stored}`);
      // Upload-Complete: ?0 on every PATCH but the last. The last says ?0 too: tus-js-client
      // 4.3.1's file source calls a slice done only when it spans the whole file
      // (lib/node/sources/FileSource.js), so a resumed upload never says ?1; the server
      // completes an upload once every declared byte is stored, whatever the last request said.
      assert.deepEqual(patches.slice(0, -1).map((p) => p.uploadComplete), Array(expected - 1).fill('?0'), 'PATCHes before the last');
      assert.ok(['?0', '?1'].includes(patches.at(-1).uploadComplete), `the last PATCH's Upload-Complete: ${patches.at(-1).uploadComplete}`);
      assert.ok(r2.firstProgress >= stored, `first onProgress ${r2.firstProgress} < stored ${stored}: restarted from 0?`);

      // ---- the upload is complete, carries the file name, and downloads byte-identical ----
      const h = await ietfHead(r1.url, version);
      assert.equal(h.offset, SIZE, 'IETF HEAD after completion: Upload-Offset');
      assert.equal(h.complete, '?1', 'IETF HEAD after completion: Upload-Complete');
      const metadata = (await tusHead(r1.url)).headers.get('upload-metadata') ?? '';
      assert.ok(metadata.split(',').includes(`filename ${Buffer.from(FILENAME).toString('base64')}`),
        `the Upload-Metadata tus-js-client sent is kept: ${metadata}`);
      const dl = await downloadSha256(r1.url);
      assert.equal(dl.status, 200, `GET ${r1.url}`);
      assert.equal(dl.length, SIZE, 'download length');
      assert.equal(dl.sha256, fileSha, 'downloaded SHA-256 equals the source file');
    });
  }
}
