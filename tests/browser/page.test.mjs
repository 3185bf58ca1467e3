// The upload page at `/` and its client (resumable.js) in a real Chromium: uploads that finish
// by themselves after the network goes away, after a server restart and after a page reload;
// pause, resume and cancel; the seed's simple protocol; all of it under the page's
// Content-Security-Policy (openBrowser fails a test on any violation).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import {
  MiB, startServer, startSlowLink, openBrowser, recordRequests, slowUploads, pick, waitForRow, clickInRow, tempDir,
  makeRandomFile, sha256File, downloadSha256, tusHead,
} from './helpers.mjs';

const CHUNK = 256 * 1024;
/** Each chunk's request waits this long, so 8 MiB take about 2 s on loopback. */
const DELAY_MS = 60;
/** The slow link's speed: 8 MiB take about 2 s. */
const LINK_BYTES_PER_SECOND = 4e6;
const NAME = 'big-random.bin';

let dir;
let file;
let fileSha;

before(async () => {
  dir = await tempDir('resumable-browser-files-');
  file = await makeRandomFile(path.join(dir, NAME), 8);
  fileSha = await sha256File(file);
});

after(() => rm(dir, { recursive: true, force: true }));

/**
 * A server, a browser on the page, and cleanup. Uploads go in small chunks whose requests are
 * delayed, or, with `slowLink`, in one request per file through a slow link (so an
 * interruption cuts a request body in the middle).
 */
async function setUp(t, { query = '', slowLink = false } = {}) {
  const server = await startServer();
  const browser = await openBrowser(t);
  const link = slowLink ? await startSlowLink(server.port, LINK_BYTES_PER_SECOND) : null;
  t.after(async () => {
    await browser.close();
    await link?.close();
    await server.stop();
  });
  const requests = await recordRequests(browser.page);
  if (link) {
    await browser.page.goto(`${link.url}/?${query}`);
  } else {
    await slowUploads(browser.page, DELAY_MS);
    await browser.page.goto(`${server.url}/?chunkSize=${CHUNK}&${query}`);
  }
  return { server, browser, page: browser.page, requests };
}

async function assertDownloadMatches(url) {
  const download = await downloadSha256(url);
  assert.equal(download.status, 200, `GET ${url}`);
  assert.equal(download.length, 8 * MiB);
  assert.equal(download.sha256, fileSha, 'the downloaded file equals the picked one');
}

const uploadsOf = (requests) => requests.filter((request) => ['PATCH', 'POST'].includes(request.method));

test('going offline mid-upload: the upload waits, then finishes by itself when back online', { timeout: 60000 }, async (t) => {
  const { browser, page, requests } = await setUp(t, { slowLink: true });
  const failed = [];
  page.on('requestfailed', (request) => failed.push(request.failure()?.errorText));
  await pick(page, file);
  // One PATCH for the whole file: nothing is confirmed until it ends, so cut it in the middle.
  const cut = await waitForRow(page, NAME, (row) => row.sent >= 3 * 1024 * 1024);
  assert.equal(cut.confirmed, 0, 'the server confirms a request\'s bytes when it ends');

  await browser.context.setOffline(true);
  const waiting = await waitForRow(page, NAME, (row) => row.state === 'retrying');
  await page.waitForSelector('#banner[data-kind="offline"]', { timeout: 5000 });
  await page.waitForTimeout(600);
  const still = await waitForRow(page, NAME, () => true);
  assert.equal(still.state, 'retrying', 'offline: the upload waits for the network');
  assert.equal(still.confirmed, waiting.confirmed, 'offline: nothing more is confirmed');
  assert.ok(still.confirmed < 8 * MiB, 'the upload was interrupted mid-way');
  // The page stopped its request when the browser said it was offline; and offline is real.
  assert.deepEqual(failed, ['net::ERR_ABORTED'], 'the cut request');
  const probe = await page.evaluate(() => fetch('/healthz').then(() => 'reached', (error) => error.name));
  assert.equal(probe, 'TypeError', 'a request made while offline fails');

  const sentBefore = requests.length;
  await browser.context.setOffline(false);
  const banner = await page.waitForSelector('#banner[data-kind="online"]', { timeout: 5000 });
  assert.match(await banner.textContent(), /^Back online/);
  const done = await waitForRow(page, NAME, (row) => row.state === 'done');
  const after = requests.slice(sentBefore);
  assert.equal(after[0].method, 'HEAD', 'the page asked the server what it has');
  const resumed = uploadsOf(after);
  // The server kept the part of the cut request that reached it; only the rest is sent again.
  assert.ok(resumed[0].offset > 0, `resumed from ${resumed[0].offset}, not from 0`);
  assert.ok(!resumed.some((request) => request.method === 'POST'), 'no new upload was created');
  await assertDownloadMatches(done.download);
});

test('a server restart mid-upload: the page resumes without anyone doing anything', { timeout: 60000 }, async (t) => {
  const { server, page, requests } = await setUp(t);
  await pick(page, file);
  const before = await waitForRow(page, NAME, (row) => row.confirmed >= 2 * 1024 * 1024);

  await server.halt();
  // Down long enough for the page to notice; then the same port and data dir again.
  await waitForRow(page, NAME, (row) => row.state === 'retrying');
  await page.waitForSelector('#banner[data-kind="unreachable"]', { timeout: 5000 });
  const sentBefore = requests.length;
  await server.start();
  const banner = await page.waitForSelector('#banner[data-kind="online"]', { timeout: 20000 });
  assert.match(await banner.textContent(), /^The server is back/);
  const done = await waitForRow(page, NAME, (row) => row.state === 'done');
  const after = requests.slice(sentBefore);
  assert.ok(after.some((request) => request.method === 'HEAD'), 'the page asked the restarted server for the offset');
  const patches = after.filter((request) => request.method === 'PATCH');
  assert.ok(patches[0].offset >= before.confirmed, `resumed at ${patches[0].offset}, not from 0`);
  assert.ok(!after.some((request) => request.method === 'POST'), 'no new upload was created');
  await assertDownloadMatches(done.download);
});

test('a page reload mid-upload: picking the same file continues from the server offset', { timeout: 60000 }, async (t) => {
  const { page, requests } = await setUp(t);
  await pick(page, file);
  const before = await waitForRow(page, NAME, (row) => row.confirmed >= 2 * 1024 * 1024);

  const sentBefore = requests.length;
  await page.reload();
  const unfinished = page.locator('#unfinished');
  await unfinished.waitFor({ state: 'visible', timeout: 5000 });
  assert.match(await unfinished.textContent(), new RegExp(NAME.replace('.', '\\.')));
  await pick(page, file);
  const done = await waitForRow(page, NAME, (row) => row.state === 'done');

  const after = requests.slice(sentBefore);
  assert.ok(!after.some((request) => request.method === 'POST'), 'no new upload was created after the reload');
  const head = after.find((request) => request.method === 'HEAD');
  assert.equal(head?.url, before.url, 'the page asked for the offset of the remembered upload');
  const firstPatch = after.find((request) => request.method === 'PATCH');
  assert.ok(firstPatch.offset > 0 && firstPatch.offset >= before.confirmed,
    `the first PATCH after the reload starts at ${firstPatch.offset}, not 0`);
  assert.equal(done.url, before.url, 'the same upload finished');
  await assertDownloadMatches(done.download);
  assert.ok(await unfinished.isHidden(), 'a finished upload is forgotten');
});

test('pause stops sending; resume continues from the server offset', { timeout: 60000 }, async (t) => {
  const { page, requests } = await setUp(t);
  await pick(page, file);
  await waitForRow(page, NAME, (row) => row.confirmed >= 1024 * 1024);
  await clickInRow(page, NAME, 'pause');
  const paused = await waitForRow(page, NAME, (row) => row.state === 'paused');

  const sentAtPause = requests.length;
  await page.waitForTimeout(500);
  const server = await tusHead(paused.url);
  assert.equal(requests.length, sentAtPause, 'nothing is sent while paused');
  assert.ok(server.offset >= paused.confirmed && server.offset < 8 * MiB, `server offset ${server.offset}`);

  await clickInRow(page, NAME, 'resume');
  const done = await waitForRow(page, NAME, (row) => row.state === 'done');
  const firstPatch = requests.slice(sentAtPause).find((request) => request.method === 'PATCH');
  assert.equal(firstPatch.offset, server.offset, 'resumed exactly at the server offset');
  await assertDownloadMatches(done.download);
});

test('cancel deletes the upload on the server', { timeout: 60000 }, async (t) => {
  const { page } = await setUp(t);
  await pick(page, file);
  const started = await waitForRow(page, NAME, (row) => row.confirmed >= 1024 * 1024);
  const deleted = page.waitForResponse((response) => response.request().method() === 'DELETE', { timeout: 10000 });
  await clickInRow(page, NAME, 'cancel');
  assert.equal((await deleted).status(), 204);
  await waitForRow(page, NAME, (row) => row.state === 'cancelled');
  assert.equal((await tusHead(started.url)).status, 404, 'HEAD on a cancelled upload');
});

test('the simple protocol (the seed\'s): interrupted by going offline, resumed from /status', { timeout: 60000 }, async (t) => {
  const { browser, page, requests } = await setUp(t, { query: 'protocol=simple', slowLink: true });
  // A name that is not Latin-1 must still fit the X-File-Id header.
  const name = 'données — 資料.bin';
  const renamed = path.join(dir, name);
  await copyFile(file, renamed);
  await pick(page, renamed);
  await waitForRow(page, name, (row) => row.sent >= 3 * 1024 * 1024);
  const simpleRequests = requests.filter((request) => /\/(status|upload)$/.test(request.url));
  assert.ok(simpleRequests.length > 0 && !requests.some((request) => request.url.includes('/files/')),
    'only /status and /upload are used');

  await browser.context.setOffline(true);
  const waiting = await waitForRow(page, name, (row) => row.state === 'retrying');
  const sentBefore = requests.length;
  await browser.context.setOffline(false);
  const done = await waitForRow(page, name, (row) => row.state === 'done');

  const after = requests.slice(sentBefore);
  assert.equal(after[0].method, 'GET', 'the page asked /status first');
  assert.match(after[0].url, /\/status$/);
  const firstPost = after.find((request) => request.method === 'POST');
  assert.equal(waiting.confirmed, 0, 'one POST for the whole file: nothing confirmed before it ends');
  assert.ok(firstPost.offset > 0, `the server kept the cut request's bytes: X-Start-Byte ${firstPost.offset}`);
  assert.match(done.download, /\/files\/[0-9a-f]+$/, 'a finished simple upload can be downloaded');
  await assertDownloadMatches(done.download);
});

test('several files at once: three upload at a time, the others wait their turn, all arrive', { timeout: 60000 }, async (t) => {
  const { page } = await setUp(t);
  const names = ['one.bin', 'two.bin', 'three.bin', 'four.bin', 'five.bin'];
  const files = await Promise.all(names.map((name) => makeRandomFile(path.join(dir, name), 1)));
  await page.evaluate(() => {
    window.mostRunning = 0;
    new MutationObserver(() => {
      const running = document.querySelectorAll('.upload:is([data-state="uploading"], [data-state="retrying"])');
      window.mostRunning = Math.max(window.mostRunning, running.length);
    }).observe(document.body, { subtree: true, attributeFilter: ['data-state'] });
  });
  await pick(page, ...files);
  const states = await page.$$eval('.upload', (rows) => rows.map((row) => row.dataset.state));
  assert.deepEqual(states.sort(), ['queued', 'queued', 'uploading', 'uploading', 'uploading']);
  for (const [index, name] of names.entries()) {
    const done = await waitForRow(page, name, (row) => row.state === 'done');
    const download = await downloadSha256(done.download);
    assert.equal(download.sha256, await sha256File(files[index]), name);
  }
  assert.equal(await page.evaluate(() => window.mostRunning), 3, 'never more than three at once');
});

test('edge cases: an empty file (any protocol), a file name that looks like HTML, a file over --max-size', { timeout: 30000 }, async (t) => {
  const server = await startServer({ args: ['--max-size', '4MiB'] });
  const browser = await openBrowser(t);
  t.after(async () => {
    await browser.close();
    await server.stop();
  });
  const { page } = browser;
  const requests = recordRequests(page);
  const empty = path.join(dir, 'empty.txt');
  await writeFile(empty, '');
  for (const protocol of ['tus', 'simple', 'ietf']) {
    await page.goto(`${server.url}/?protocol=${protocol}`);
    await pick(page, empty);
    const done = await waitForRow(page, 'empty.txt', (row) => row.state === 'done');
    const download = await downloadSha256(done.download);
    assert.equal(download.status, 200, `${protocol}: the empty file can be downloaded`);
    assert.equal(download.length, 0);
  }

  // A file name is text, never markup.
  const markup = '<img src=x onerror="window.pwned=1">.txt';
  await writeFile(path.join(dir, markup), 'x');
  await page.goto(server.url);
  await pick(page, path.join(dir, markup));
  await waitForRow(page, markup, (row) => row.state === 'done');
  assert.equal(await page.evaluate(() => window.pwned), undefined);
  assert.equal(await page.locator('.upload img').count(), 0);

  await page.goto(server.url);
  const before = requests.length;
  await pick(page, file);
  const failed = await waitForRow(page, NAME, (row) => row.state === 'failed');
  assert.match(failed.text, /^Failed: .*exceeds the maximum/, 'the server\'s reason is shown');
  assert.deepEqual(requests.slice(before).map((request) => request.method), ['POST'], 'a 413 is not retried');
});

test('the page works under its Content-Security-Policy, which blocks what it does not allow', { timeout: 60000 }, async (t) => {
  const server = await startServer();
  const browser = await openBrowser(t);
  t.after(async () => {
    await browser.close();
    await server.stop();
  });
  const { page, errors } = browser;
  for (const protocol of ['tus', 'ietf', 'simple']) {
    const response = await page.goto(`${server.url}/?protocol=${protocol}`);
    const policy = response.headers()['content-security-policy'] ?? '';
    assert.match(policy, /default-src 'none'/, 'the page is served with its policy');
    assert.match(policy, /frame-ancestors 'none'/);
    assert.equal(response.headers()['referrer-policy'], 'no-referrer');
    await pick(page, file);
    const done = await waitForRow(page, NAME, (row) => row.state === 'done');
    await assertDownloadMatches(done.download);
    assert.deepEqual(errors.map(String), [], `${protocol}: no violation, no page error`);
  }
  // The check sees a violation: inline code is refused, and reported.
  const ran = await page.evaluate(() => {
    const script = document.createElement('script');
    script.textContent = 'window.inlineRan = true';
    document.head.append(script);
    return new Promise((resolve) => setTimeout(() => resolve(window.inlineRan === true), 200));
  });
  assert.equal(ran, false, 'inline script is blocked');
  const deadline = Date.now() + 5000;
  while (errors.length === 0 && Date.now() < deadline) await page.waitForTimeout(50);
  assert.ok(errors.some((error) => /script-src/.test(String(error))), `the violation was reported: ${errors}`);
  errors.length = 0; // that one was on purpose
});
