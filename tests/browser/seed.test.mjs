// The seed's client (seed/resumable-file-upload.md, "Algorithm"), as written there, in a real
// Chromium on a page of our server's origin: its XHR upload is cut mid-way, the seed resumes
// (status -> slice -> POST), and the upload is complete: it downloads byte for byte.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { MiB, startServer, startSlowLink, openBrowser } from './helpers.mjs';

/** An odd size, so nothing lines up with a buffer by chance. */
const SIZE = 7 * MiB + 12345;
const NAME = 'seed-client.bin';
const LAST_MODIFIED = Date.UTC(2024, 0, 2, 3, 4, 5);
/** The slow link's speed: the whole file takes about 2.5 s to reach the server, so the cut lands mid-body. */
const LINK_BYTES_PER_SECOND = 3e6;
/**
 * The seed's progress log must have passed this many bytes before the upload is cut. (As the
 * seed says, "sent" is not "received": the socket buffers run far ahead of the slow link, so
 * the server has much less; what it has is what the seed's /status finds.)
 */
const CUT_AFTER = 3 * MiB;

/**
 * `size` deterministic pseudo-random bytes (xorshift32 from `seed`). Runs in Node and, as
 * source text, in the page: both sides make the same file.
 */
function pseudoRandomBytes(size, seed) {
  const bytes = new Uint8Array(size);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < size; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    bytes[i] = x & 0xff;
  }
  return bytes;
}

/** The seed's client, verbatim, with the wrapping its demo adds. */
const SEED_CLIENT = fileURLToPath(new URL('./seed-client.js', import.meta.url));
/** The seed's progress log line. */
const PROGRESS = /^Uploaded (\d+) of (\d+)$/;

test('the seed\'s client, verbatim: cut mid-upload, resumed as the seed does, the file is complete and downloads', { timeout: 60000 }, async (t) => {
  const server = await startServer();
  const link = await startSlowLink(server.port, LINK_BYTES_PER_SECOND);
  const browser = await openBrowser(t);
  t.after(async () => {
    await browser.close();
    await link.close();
    await server.stop();
  });
  const { page, errors } = browser;
  const progress = [];
  page.on('console', (message) => {
    const match = PROGRESS.exec(message.text());
    if (match) progress.push({ uploaded: Number(match[1]), of: Number(match[2]) });
  });
  const posts = [];
  page.on('request', (request) => {
    if (request.method() === 'POST') posts.push(request.headers());
  });

  // A page of the server's origin (through the slow link), so 'status' and "upload" resolve
  // against it exactly as they would for the seed's page. A blank page of the test's own, not
  // the server's: the seed's client is injected inline, which the server page's
  // Content-Security-Policy rightly refuses.
  await page.route(`${link.url}/seed.html`, (route) => route.fulfill({
    contentType: 'text/html; charset=utf-8',
    body: '<!doctype html><title>the seed\'s page</title>',
  }));
  await page.goto(`${link.url}/seed.html`);
  await page.addScriptTag({ path: SEED_CLIENT });
  await page.evaluate(
    ([source, size, name, lastModified]) => {
      const bytes = new Function(`return (${source})`)()(size, 11);
      window.seedFile = new File([bytes], name, { lastModified });
    },
    [pseudoRandomBytes.toString(), SIZE, NAME, LAST_MODIFIED],
  );
  const sourceSha = createHash('sha256').update(pseudoRandomBytes(SIZE, 11)).digest('hex');
  const pageSha = await page.evaluate(() => window.seedFile.arrayBuffer()
    .then((bytes) => crypto.subtle.digest('SHA-256', bytes))
    .then((digest) => Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, '0')).join('')));
  assert.equal(pageSha, sourceSha, 'the page made the same bytes as Node');

  // First try: cut once the seed's own progress log has passed CUT_AFTER, as its stop button would.
  const first = page.evaluate(() => window.seedUpload(window.seedFile));
  await page.waitForEvent('console', {
    predicate: (message) => Number(PROGRESS.exec(message.text())?.[1]) >= CUT_AFTER,
    timeout: 20000,
  });
  const sentAtCut = progress.at(-1).uploaded;
  await page.evaluate(() => window.seedXhr.abort());
  const cut = await first;
  assert.equal(cut.event, 'abort', `the first try was cut, not finished: ${JSON.stringify(cut)}`);
  assert.equal(cut.startByte, 0, 'a new file id starts at 0');
  // name-size-lastModifiedDate, or name-size-NaN in a browser without lastModifiedDate.
  assert.ok([`${NAME}-${SIZE}-${LAST_MODIFIED}`, `${NAME}-${SIZE}-NaN`].includes(cut.fileId), `the seed's file id: ${cut.fileId}`);

  // Resume exactly as the seed does: ask /status, send the slice from there.
  const progressBefore = progress.length;
  const resumed = await page.evaluate(() => window.seedUpload(window.seedFile));
  assert.equal(resumed.fileId, cut.fileId, 'the same file id on every try');
  assert.ok(resumed.startByte > 0 && resumed.startByte < SIZE,
    `the server kept the cut request's bytes: resumed at ${resumed.startByte} of ${SIZE}`);
  t.diagnostic(`file id ${resumed.fileId}; the seed's progress said ${sentAtCut} bytes sent at the cut; the server had ${resumed.startByte}`);
  assert.equal(resumed.event, 'load', JSON.stringify(resumed));
  assert.equal(resumed.status, 200, `the resumed POST: ${resumed.status} ${resumed.text}`);
  assert.equal(resumed.text, String(SIZE), 'the 200 carries the stored count, the size');
  assert.deepEqual(progress.at(-1), { uploaded: SIZE, of: SIZE }, 'the seed\'s last progress line');
  assert.ok(progress.length > progressBefore, 'the resumed upload reported progress');
  assert.equal(posts.length, 2);
  for (const headers of posts) {
    assert.equal(headers['x-file-id'], cut.fileId);
    assert.equal(headers['x-file-size'], undefined, 'the seed never sends X-File-Size');
  }

  // The seed's upload is complete: Location downloads it, byte for byte.
  assert.match(resumed.location ?? '', /^\/files\/[0-9a-f]+$/, `Location: ${resumed.location}`);
  const download = await page.evaluate(async (location) => {
    const response = await fetch(location);
    const body = await response.arrayBuffer();
    const digest = await crypto.subtle.digest('SHA-256', body);
    return {
      status: response.status,
      length: body.byteLength,
      sha256: Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, '0')).join(''),
    };
  }, resumed.location);
  assert.equal(download.status, 200, `GET ${resumed.location}`);
  assert.equal(download.length, SIZE);
  assert.equal(download.sha256, sourceSha, 'the download equals the source');

  const status = await page.evaluate((fileId) => fetch('status', { headers: { 'X-File-Id': fileId } })
    .then((response) => response.text()), cut.fileId);
  assert.equal(status, String(SIZE), 'GET /status answers the size');

  // Running the seed again on the finished file sends nothing and is still answered 200.
  const again = await page.evaluate(() => window.seedUpload(window.seedFile));
  assert.deepEqual([again.startByte, again.status, again.text], [SIZE, 200, String(SIZE)]);

  assert.deepEqual(errors, [], 'no page errors');
});
