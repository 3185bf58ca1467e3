// The upload page speaking the IETF draft "Resumable Uploads for HTTP" (resumable.js's
// `protocol: 'ietf'`, interop version 8) in a real Chromium: an upload cut by going offline
// finishes by itself from the server's offset; a page reload, a 409 (another client advanced the
// upload) and a refusal (the server's problem detail shown, not retried).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { open, rm } from 'node:fs/promises';
import path from 'node:path';
import {
  MiB, startServer, startSlowLink, openBrowser, recordRequests, slowUploads, pick, waitForRow, tempDir,
  makeRandomFile, sha256File, downloadSha256, tusHead,
} from './helpers.mjs';

const SIZE = 8 * MiB;
const CHUNK = 256 * 1024;
/** Each chunk's request waits this long, so 8 MiB take about 2 s on loopback. */
const DELAY_MS = 60;
/** The slow link's speed: 8 MiB take about 2 s. */
const LINK_BYTES_PER_SECOND = 4e6;
/** Not Latin-1, and with characters encodeURIComponent leaves alone but RFC 8187 does not. */
const NAME = "l'été (ietf) — 資料.bin";
const INTEROP = '8';

let dir;
let file;
let fileSha;

before(async () => {
  dir = await tempDir('resumable-browser-ietf-');
  file = await makeRandomFile(path.join(dir, NAME), SIZE / MiB);
  fileSha = await sha256File(file);
});

after(() => rm(dir, { recursive: true, force: true }));

/**
 * A server, a browser on the page with the IETF protocol chosen, and cleanup. Uploads go in
 * small delayed chunks, or, with `slowLink`, in one request through a slow link (so going
 * offline cuts the request body in the middle). `requests` and `responses` record the upload
 * traffic in order.
 */
async function setUp(t, { slowLink = false, args = [] } = {}) {
  const server = await startServer({ args });
  const browser = await openBrowser(t);
  const link = slowLink ? await startSlowLink(server.port, LINK_BYTES_PER_SECOND) : null;
  t.after(async () => {
    await browser.close();
    await link?.close();
    await server.stop();
  });
  const { page } = browser;
  const requests = recordRequests(page);
  const responses = [];
  page.on('response', (response) => {
    if (!new URL(response.url()).pathname.startsWith('/files/')) return;
    responses.push({ method: response.request().method(), url: response.url(), status: response.status(), headers: response.headers() });
  });
  if (link) {
    await page.goto(`${link.url}/?protocol=ietf`);
  } else {
    await slowUploads(page, DELAY_MS);
    await page.goto(`${server.url}/?protocol=ietf&chunkSize=${CHUNK}`);
  }
  assert.equal(await page.locator('#protocol').inputValue(), 'ietf', 'the page preselects the IETF protocol');
  return { server, browser, page, requests, responses };
}

/** Every request is the IETF draft's (interop 8), none is tus. */
function assertAllIetf(requests) {
  assert.ok(requests.length > 0, 'the page made upload requests');
  for (const request of requests) {
    assert.equal(request.headers['upload-draft-interop-version'], INTEROP, `${request.method} ${request.url}: interop version`);
    assert.equal(request.headers['tus-resumable'], undefined, `${request.method} ${request.url}: no tus header`);
  }
}

/** The creation request: Upload-Complete ?0, the length, the file name as RFC 8187 UTF-8. */
function assertCreation(request) {
  assert.equal(request.method, 'POST');
  assert.equal(request.headers['upload-complete'], '?0');
  assert.equal(request.headers['upload-length'], String(SIZE));
  const disposition = request.headers['content-disposition'];
  const encoded = /^inline; filename\*=UTF-8''([A-Za-z0-9!#$&+\-.^_`|~%]+)$/.exec(disposition);
  assert.ok(encoded, `Content-Disposition ${disposition}: filename* of attr-chars and percent-escapes only`);
  assert.equal(decodeURIComponent(encoded[1]), NAME);
}

/** An IETF HEAD from here: { status, offset, complete }. */
async function ietfHead(url) {
  const response = await fetch(url, {
    method: 'HEAD',
    headers: { 'Upload-Draft-Interop-Version': INTEROP },
    signal: AbortSignal.timeout(10000),
  });
  return { status: response.status, offset: Number(response.headers.get('upload-offset')), complete: response.headers.get('upload-complete') };
}

/** The upload is complete on the server, has the file's name, and downloads byte for byte. */
async function assertFinished(url) {
  assert.deepEqual(await ietfHead(url), { status: 204, offset: SIZE, complete: '?1' }, 'IETF HEAD after the upload');
  // The file name reached the server through Content-Disposition (a tus HEAD shows the metadata).
  const metadata = Object.fromEntries((await tusHead(url)).headers.get('upload-metadata').split(',').map((pair) => {
    const [key, value] = pair.split(' ');
    return [key, Buffer.from(value ?? '', 'base64').toString('utf8')];
  }));
  assert.equal(metadata.filename, NAME, 'the upload\'s metadata names the file');
  const download = await downloadSha256(url);
  assert.equal(download.status, 200, `GET ${url}`);
  assert.equal(download.length, SIZE);
  assert.equal(download.sha256, fileSha, 'the downloaded file equals the picked one');
}

const patchesOf = (requests) => requests.filter((request) => request.method === 'PATCH');

test('IETF draft: going offline mid-upload, the upload waits, then finishes from the server\'s offset', { timeout: 60000 }, async (t) => {
  const { browser, page, requests, responses } = await setUp(t, { slowLink: true });
  await pick(page, file);
  // One PATCH for the whole file: nothing is confirmed until it ends, so cut it in the middle.
  const cut = await waitForRow(page, NAME, (row) => row.sent >= 3 * 1024 * 1024);
  assert.equal(cut.confirmed, 0, 'the server confirms a request\'s bytes when it ends');
  assertCreation(requests[0]);
  const first = patchesOf(requests)[0];
  assert.equal(first.offset, 0);
  assert.equal(first.headers['content-type'], 'application/partial-upload');
  assert.equal(first.headers['upload-complete'], '?1', 'the whole file in one PATCH is its last');

  await browser.context.setOffline(true);
  const waiting = await waitForRow(page, NAME, (row) => row.state === 'retrying');
  await page.waitForSelector('#banner[data-kind="offline"]', { timeout: 5000 });
  assert.ok(waiting.confirmed < SIZE, 'the upload was interrupted mid-way');
  const probe = await page.evaluate(() => fetch('/healthz').then(() => 'reached', (error) => error.name));
  assert.equal(probe, 'TypeError', 'a request made while offline fails');

  const sentBefore = requests.length;
  const answeredBefore = responses.length;
  await browser.context.setOffline(false);
  const done = await waitForRow(page, NAME, (row) => row.state === 'done');

  const after = requests.slice(sentBefore);
  assert.equal(after[0].method, 'HEAD', 'back online, the page asked the server what it has');
  assert.equal(after[0].url, cut.url, 'about the same upload');
  const head = responses.slice(answeredBefore).find((response) => response.method === 'HEAD');
  assert.equal(head.status, 204);
  assert.equal(head.headers['upload-complete'], '?0');
  const stored = Number(head.headers['upload-offset']);
  assert.ok(stored > 0 && stored < SIZE, `the server kept the part of the cut PATCH that arrived: ${stored}`);
  const resumed = patchesOf(after);
  assert.equal(resumed[0].offset, stored, 'the next PATCH starts exactly at the offset the HEAD said');
  assert.equal(resumed.at(-1).headers['upload-complete'], '?1');
  assert.ok(!after.some((request) => request.method === 'POST'), 'no new upload was created');
  assert.deepEqual(responses.filter((response) => response.status >= 400).map((r) => `${r.method} ${r.status}`), [],
    'no request was refused (no 409: the offsets sent were the server\'s)');
  assertAllIetf(requests);
  assert.equal(done.url, cut.url);
  await assertFinished(done.url);
});

test('IETF draft: a page reload mid-upload, picking the same file continues the remembered upload', { timeout: 60000 }, async (t) => {
  const { page, requests } = await setUp(t);
  await pick(page, file);
  const before = await waitForRow(page, NAME, (row) => row.confirmed >= 2 * 1024 * 1024);
  const remembered = await page.evaluate(() => Object.keys(localStorage).filter((key) => key.startsWith('resumable:')));
  assert.equal(remembered.length, 1);
  assert.equal(JSON.parse(remembered[0].slice('resumable:'.length))[0], 'ietf', 'the stored key names the protocol');

  const sentBefore = requests.length;
  await page.reload();
  await page.locator('#unfinished').waitFor({ state: 'visible', timeout: 5000 });
  await pick(page, file);
  const done = await waitForRow(page, NAME, (row) => row.state === 'done');

  const after = requests.slice(sentBefore);
  assert.ok(!after.some((request) => request.method === 'POST'), 'no new upload was created after the reload');
  const head = after.find((request) => request.method === 'HEAD');
  assert.equal(head?.url, before.url, 'the page asked for the offset of the remembered upload');
  const patches = patchesOf(after);
  assert.ok(patches[0].offset >= before.confirmed && patches[0].offset > 0, `the first PATCH after the reload starts at ${patches[0].offset}`);
  // Contiguous chunks, only the last one completing the upload.
  for (const [index, patch] of patches.entries()) {
    const last = index === patches.length - 1;
    assert.equal(patch.headers['upload-complete'], last ? '?1' : '?0', `PATCH at ${patch.offset}`);
    if (!last) assert.equal(patches[index + 1].offset, patch.offset + CHUNK, `the chunk after ${patch.offset}`);
  }
  assert.ok(SIZE - patches.at(-1).offset <= CHUNK, 'the last PATCH ends the file');
  assertAllIetf(requests);
  assert.equal(done.url, before.url, 'the same upload finished');
  await assertFinished(done.url);
});

test('IETF draft: a 409 when another client advanced the upload, the page continues from the server\'s offset', { timeout: 60000 }, async (t) => {
  const { page, requests, responses } = await setUp(t);
  const handle = await open(file);
  t.after(() => handle.close());
  let advanced = null;
  // Routes registered later run first: hold one PATCH while another client sends the same chunk.
  await page.route((url) => url.pathname.startsWith('/files/'), async (route) => {
    const request = route.request();
    const offset = Number(request.headers()['upload-offset']);
    if (request.method() === 'PATCH' && advanced === null && offset >= MiB) {
      advanced = offset;
      const chunk = Buffer.alloc(CHUNK);
      await handle.read(chunk, 0, CHUNK, offset);
      const response = await fetch(request.url(), {
        method: 'PATCH',
        headers: {
          'Upload-Draft-Interop-Version': INTEROP,
          'Upload-Offset': String(offset),
          'Upload-Complete': '?0',
          'Content-Type': 'application/partial-upload',
        },
        body: chunk,
      });
      assert.equal(response.status, 204, 'the other client\'s PATCH');
    }
    await route.fallback();
  });
  await pick(page, file);
  const done = await waitForRow(page, NAME, (row) => row.state === 'done');

  assert.ok(advanced !== null, 'a PATCH was held');
  const conflict = responses.find((response) => response.status === 409);
  assert.ok(conflict, 'the held PATCH was refused with 409');
  assert.equal(conflict.headers['content-type'], 'application/problem+json');
  assert.equal(Number(conflict.headers['upload-offset']), advanced + CHUNK);
  const patches = patchesOf(requests);
  const held = patches.findIndex((patch) => patch.offset === advanced);
  assert.equal(patches[held + 1].offset, advanced + CHUNK, 'the next PATCH starts where the server is');
  assert.ok(!requests.some((request, index) => index > 0 && request.method === 'POST'), 'no new upload was created');
  assertAllIetf(requests);
  await assertFinished(done.url);
});

test('IETF draft: a file over --max-size fails with the server\'s problem detail, not retried', { timeout: 30000 }, async (t) => {
  const { page, requests } = await setUp(t, { args: ['--max-size', '4MiB'] });
  await pick(page, file);
  const failed = await waitForRow(page, NAME, (row) => row.state === 'failed');
  assert.equal(failed.text, `Failed: upload length ${SIZE} exceeds the maximum of ${4 * MiB} bytes`, 'the problem\'s detail, not its JSON');
  assert.deepEqual(requests.map((request) => request.method), ['POST'], 'a 413 is not retried');
  assertAllIetf(requests);
});
