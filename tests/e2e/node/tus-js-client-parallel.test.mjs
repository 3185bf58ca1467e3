// Concatenation: tus-js-client with `parallelUploads: 4` splits a 24 MiB file
// into 4 partial uploads (`Upload-Concat: partial`), is aborted at >= 30% in
// one process, resumes the parts in a fresh process (findPreviousUploads() +
// resumeFromPreviousUpload(), which restores `parallelUploadUrls` from the URL
// storage) and then creates the final upload (`Upload-Concat: final;...`).
// A raw test covers concatenation-unfinished (final created before its parts
// are complete) and PATCH on a final upload (403).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  MiB, startServer, downloadSha256, runNodeChild, lastJsonLine, tusHead, stableOffset,
  makeRandomSource, removeDir,
} from './helpers.mjs';

const CHILD = path.join(path.dirname(fileURLToPath(import.meta.url)), 'tus-ext-child.mjs');
const SIZE_MIB = 24;
const SIZE = SIZE_MIB * MiB;
const PARTS = 4;

let tmp;
let file;
let fileSha;

before(async () => {
  ({ dir: tmp, path: file, sha: fileSha } = await makeRandomSource(SIZE_MIB, 'random-24MiB.bin'));
});

after(() => removeDir(tmp));

const pathOf = (u, base) => new URL(u, base).pathname;

test('tus-js-client parallelUploads: 4 — abort at >=30%, resume the parts in a new process, final upload downloads intact', { timeout: 60000 }, async (t) => {
  const server = await startServer();
  t.after(() => server.stop());
  const endpoint = `${server.url}/files/`;
  const storage = path.join(tmp, 'urls-parallel.json');
  const common = { endpoint, file, input: 'file', storage, parallelUploads: PARTS, filename: 'random-24MiB.bin' };
  const diag = () => `\nserver stderr=${server.stderr().slice(-2000)}`;

  // ---- phase 1 ----
  const p1 = await runNodeChild(CHILD, ['phase1', JSON.stringify({
    ...common, abortAtBytes: 0.3 * SIZE, paceMs: 4, expectStored: true,
  })], { timeoutMs: 55000 });
  assert.equal(p1.code, 0, `phase1 child failed: code=${p1.code}\nstdout=${p1.stdout}\nstderr=${p1.stderr}${diag()}`);
  const r1 = lastJsonLine(p1.stdout);
  const posts1 = r1.requests.filter((r) => r.method === 'POST');
  assert.equal(posts1.length, PARTS, `phase1: expected ${PARTS} creation POSTs: ${JSON.stringify(posts1)}`);
  for (const p of posts1) {
    assert.equal(p.headers['upload-concat'], 'partial', `partial POST lacks Upload-Concat: partial: ${JSON.stringify(p)}`);
    assert.equal(p.status, 201, `partial POST -> ${p.status}: ${JSON.stringify(p)}`);
    assert.ok(p.response.location, `partial POST without Location: ${JSON.stringify(p)}`);
  }
  assert.equal(posts1.reduce((s, p) => s + Number(p.headers['upload-length']), 0), SIZE, 'part lengths add up to the file size');
  assert.equal(r1.url, null, 'no final upload exists before the parts are done');
  assert.ok(r1.requests.some((r) => r.method === 'PATCH'), 'phase1 sent no PATCH');

  const entries = Object.values(r1.storage ?? {});
  assert.equal(entries.length, 1, `URL storage after phase 1: ${JSON.stringify(r1.storage)}`);
  const partUrls = entries[0].parallelUploadUrls;
  assert.ok(Array.isArray(partUrls) && partUrls.length === PARTS, `stored parallelUploadUrls: ${JSON.stringify(entries[0])}`);
  assert.deepEqual([...partUrls].sort(), posts1.map((p) => new URL(p.response.location, endpoint).href).sort(),
    'stored parallelUploadUrls are the partial uploads created');

  // What the server holds for each part after the abort.
  const stored = [];
  for (const u of partUrls) {
    const off = await stableOffset(u);
    const h = await tusHead(u);
    assert.equal(h.headers.get('upload-concat'), 'partial', `HEAD ${u} Upload-Concat`);
    assert.ok(off <= h.length, `part offset ${off} > length ${h.length}`);
    stored.push({ url: u, offset: off, length: h.length });
  }
  const storedTotal = stored.reduce((s, p) => s + p.offset, 0);
  assert.ok(storedTotal > 0 && storedTotal < SIZE, `bytes stored over the parts after the abort: ${JSON.stringify(stored)}`);
  assert.equal(stored.reduce((s, p) => s + p.length, 0), SIZE);

  // ---- phase 2: a fresh process resumes from the URL storage ----
  const p2 = await runNodeChild(CHILD, ['phase2', JSON.stringify({ ...common, resume: 'storage' })], { timeoutMs: 55000 });
  assert.equal(p2.code, 0, `phase2 child failed: code=${p2.code}\nstdout=${p2.stdout}\nstderr=${p2.stderr}${diag()}`);
  const r2 = lastJsonLine(p2.stdout);
  assert.equal(r2.previousUploads.length, 1, `findPreviousUploads(): ${JSON.stringify(r2.previousUploads)}`);
  assert.deepEqual(r2.previousUploads[0].parallelUploadUrls, partUrls, 'findPreviousUploads() returns the stored part URLs');

  const partPosts = r2.requests.filter((r) => r.method === 'POST' && r.headers['upload-concat'] === 'partial');
  assert.deepEqual(partPosts, [], 'resume must not create new partial uploads');
  for (const part of stored) {
    const reqs = r2.requests.filter((r) => r.url === part.url);
    assert.equal(reqs[0]?.method, 'HEAD', `resume of ${part.url} starts with HEAD: ${JSON.stringify(reqs)}`);
    assert.equal(reqs[0].status, 200);
    assert.equal(Number(reqs[0].response['upload-offset']), part.offset, `HEAD of ${part.url} in phase 2`);
    const patches = reqs.filter((r) => r.method === 'PATCH');
    if (part.offset < part.length) {
      assert.equal(patches.length, 1, `one PATCH (default chunkSize) resumes ${part.url}: ${JSON.stringify(reqs)}`);
      assert.equal(Number(patches[0].headers['upload-offset']), part.offset, `part ${part.url} resumed at its stored offset, not 0`);
      assert.equal(patches[0].bodySize, part.length - part.offset, 'the resuming PATCH carries only the rest of the part');
      assert.equal(patches[0].status, 204);
      assert.equal(Number(patches[0].response['upload-offset']), part.length);
    } else {
      assert.equal(patches.length, 0, `completed part ${part.url} re-sent: ${JSON.stringify(reqs)}`);
    }
  }

  const finals = r2.requests.filter((r) => r.method === 'POST');
  assert.equal(finals.length, 1, `expected exactly one final POST: ${JSON.stringify(finals)}`);
  const fin = finals[0];
  assert.equal(fin.headers['upload-concat'], `final;${partUrls.join(' ')}`, 'final POST lists the parts in order');
  assert.equal(fin.headers['upload-length'], undefined, 'final POST carries no Upload-Length');
  assert.equal(fin.status, 201, `final POST -> ${fin.status}: ${JSON.stringify(fin)}`);
  const finalUrl = new URL(fin.response.location, endpoint).href;
  assert.equal(r2.url, finalUrl);
  assert.ok(!partUrls.includes(finalUrl));
  // The final POST only came after every part PATCH had been answered.
  const lastPatch = r2.requests.map((r) => r.method).lastIndexOf('PATCH');
  assert.ok(r2.requests.indexOf(fin) > lastPatch);

  // ---- the final upload ----
  const h = await tusHead(finalUrl);
  assert.equal(h.status, 200, `HEAD final ${finalUrl}`);
  assert.equal(h.length, SIZE, 'final Upload-Length = sum of the parts');
  assert.equal(h.offset, SIZE, 'final upload is complete');
  const concat = h.headers.get('upload-concat') ?? '';
  assert.match(concat, /^final;/, `HEAD final Upload-Concat: ${concat}`);
  assert.deepEqual(concat.slice('final;'.length).trim().split(/ +/).map((u) => pathOf(u, endpoint)),
    partUrls.map((u) => pathOf(u, endpoint)), 'HEAD final echoes the part list');
  const dl = await downloadSha256(finalUrl);
  assert.equal(dl.status, 200, `GET ${finalUrl}`);
  assert.equal(dl.length, SIZE, 'download length');
  assert.equal(dl.sha256, fileSha, 'downloaded SHA-256 of the final upload equals the source file');
});

test('concatenation-unfinished: final created before its parts complete, PATCH on it is 403, completes with the parts', { timeout: 30000 }, async (t) => {
  const server = await startServer();
  t.after(() => server.stop());
  const endpoint = `${server.url}/files/`;
  const tus = { 'Tus-Resumable': '1.0.0' };
  const req = (url, method, headers = {}, body) => fetch(url, {
    method, headers: { ...tus, ...headers }, body, signal: AbortSignal.timeout(10000),
  });
  const patch = (url, offset, body) => req(url, 'PATCH', {
    'Content-Type': 'application/offset+octet-stream', 'Upload-Offset': String(offset),
  }, body);

  const a = Buffer.from('hello ');
  const b = Buffer.from('world!!');
  const create = async (len) => {
    const res = await req(endpoint, 'POST', { 'Upload-Length': String(len), 'Upload-Concat': 'partial' });
    assert.equal(res.status, 201, `partial POST -> ${res.status}`);
    return new URL(res.headers.get('location'), endpoint).href;
  };
  const urlA = await create(a.length);
  const urlB = await create(b.length);
  assert.equal((await patch(urlA, 0, a)).status, 204, 'PATCH part A');
  assert.equal((await patch(urlB, 0, b.subarray(0, 3))).status, 204, 'PATCH first bytes of part B');

  // Relative and absolute part URLs mixed.
  const fin = await req(endpoint, 'POST', { 'Upload-Concat': `final;${new URL(urlA).pathname} ${urlB}` });
  assert.equal(fin.status, 201, `final POST before part B is complete -> ${fin.status}: ${await fin.text()}`);
  const finalUrl = new URL(fin.headers.get('location'), endpoint).href;

  let h = await tusHead(finalUrl);
  assert.equal(h.status, 200, 'HEAD unfinished final');
  assert.match(h.headers.get('upload-concat') ?? '', /^final;/, 'HEAD unfinished final echoes Upload-Concat');
  assert.ok(h.offset == null || h.offset < a.length + b.length, `unfinished final claims offset ${h.offset}`);
  const early = await req(finalUrl, 'GET');
  await early.arrayBuffer();
  assert.notEqual(early.status, 200, 'GET of an unfinished final must not serve a download');

  const p = await patch(finalUrl, 0, Buffer.from('x'));
  assert.equal(p.status, 403, `PATCH on a final upload -> ${p.status}`);

  assert.equal((await patch(urlB, 3, b.subarray(3))).status, 204, 'PATCH rest of part B');
  h = await tusHead(finalUrl);
  assert.equal(h.status, 200);
  assert.equal(h.length, a.length + b.length, 'final Upload-Length');
  assert.equal(h.offset, a.length + b.length, 'final complete once its parts are');
  const got = await req(finalUrl, 'GET');
  assert.equal(got.status, 200);
  assert.equal(Buffer.from(await got.arrayBuffer()).toString(), 'hello world!!', 'final = concatenation of the parts');
});
