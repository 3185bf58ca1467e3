// Takes pictures of the page mid-upload (screenshot.png, and a phone-sized screenshot-phone.png):
// one file done, one paused, one uploading with bytes sent that the server has not confirmed yet.
// They go to tests/browser/out/ (ignored by git) so a test run leaves the tree clean; with
// UPDATE_SCREENSHOTS=1 they replace the README's pictures in docs/.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, rm } from 'node:fs/promises';
import path from 'node:path';
import {
  startServer, startSlowLink, openBrowser, pick, waitForRow, clickInRow, tempDir, makeRandomFile,
} from './helpers.mjs';

const DOCS = process.env.UPDATE_SCREENSHOTS === '1'
  ? path.resolve(import.meta.dirname, '../../docs')
  : path.resolve(import.meta.dirname, 'out');

test('screenshot of the page mid-upload', { timeout: 60000 }, async (t) => {
  const server = await startServer();
  const link = await startSlowLink(server.port, 6e6);
  const browser = await openBrowser(t, { viewport: { width: 900, height: 700 } });
  const dir = await tempDir('resumable-browser-shot-');
  t.after(async () => {
    await browser.close();
    await link.close();
    await server.stop();
    await rm(dir, { recursive: true, force: true });
  });
  const { page } = browser;
  const file = (name, mib) => makeRandomFile(path.join(dir, name), mib);
  const [done, paused, uploading] = await Promise.all([
    file('Résumé — 2024.pdf', 1), file('backup.tar', 30), file('holiday-video.mp4', 40),
  ]);
  await page.goto(`${link.url}/?chunkSize=8388608`);

  await pick(page, done);
  await waitForRow(page, 'Résumé — 2024.pdf', (row) => row.state === 'done');
  await pick(page, paused);
  await waitForRow(page, 'backup.tar', (row) => row.confirmed > 0);
  await clickInRow(page, 'backup.tar', 'pause');
  await pick(page, uploading);
  const row = await waitForRow(page, 'holiday-video.mp4',
    (row) => row.confirmed > 0 && row.sent - row.confirmed > 2e6 && / left$/.test(row.text));
  assert.ok(row.sent > row.confirmed, 'the browser has sent more than the server confirmed');

  await page.mouse.move(0, 0); // no hover highlight in the picture
  await mkdir(DOCS, { recursive: true });
  await page.screenshot({ path: path.join(DOCS, 'screenshot.png') });
  await page.setViewportSize({ width: 390, height: 780 });
  await page.screenshot({ path: path.join(DOCS, 'screenshot-phone.png') });
  assert.deepEqual(browser.errors, []);
});
