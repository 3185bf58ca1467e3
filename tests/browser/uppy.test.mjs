// Uppy (core + its tus plugin, from the `uppy` package's prebuilt ES module bundle) on a page of
// another origin uploads to the server and resumes after the network goes away mid-upload.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { createRequire } from 'node:module';
import {
  MiB, startServer, startStaticServer, openBrowser, recordRequests, slowUploads, pick, tempDir,
  makeRandomFile, sha256File, downloadSha256,
} from './helpers.mjs';

const bundle = path.join(path.dirname(createRequire(import.meta.url).resolve('uppy/package.json')), 'dist/uppy.min.mjs');

const PAGE = `<!doctype html>
<meta charset="utf-8">
<title>Uppy test page</title>
<input id="picker" type="file">
<script type="module">
  import { Uppy, Tus } from '/uppy.min.mjs';
  const endpoint = new URLSearchParams(location.search).get('endpoint');
  const uppy = new Uppy({ autoProceed: true })
    .use(Tus, { endpoint, chunkSize: 256 * 1024, retryDelays: [0, 500, 1000, 2000, 4000] });
  window.result = { uploaded: 0, url: null, error: null };
  uppy.on('upload-progress', (file, progress) => { result.uploaded = progress.bytesUploaded; });
  uppy.on('upload-success', (file, response) => { result.url = response.uploadURL; });
  uppy.on('upload-error', (file, error) => { result.error = String(error); });
  document.querySelector('#picker').addEventListener('change', (event) => {
    for (const file of event.target.files) uppy.addFile({ name: file.name, type: file.type, data: file });
  });
</script>`;

test('Uppy uploads to the server and resumes after going offline mid-upload', { timeout: 60000 }, async (t) => {
  const server = await startServer();
  const site = await startStaticServer({
    '/': { body: PAGE, type: 'text/html; charset=utf-8' },
    '/uppy.min.mjs': { file: bundle, type: 'text/javascript; charset=utf-8' },
  });
  const browser = await openBrowser(t);
  const dir = await tempDir('resumable-browser-uppy-');
  t.after(async () => {
    await browser.close();
    await site.close();
    await server.stop();
    await rm(dir, { recursive: true, force: true });
  });
  const file = await makeRandomFile(path.join(dir, 'uppy-upload.bin'), 6);
  const { page, context } = browser;
  const requests = recordRequests(page);
  await slowUploads(page, 60);
  await page.goto(`${site.url}/?endpoint=${encodeURIComponent(`${server.url}/files/`)}`);

  await pick(page, file);
  await page.waitForFunction(() => result.uploaded >= 2 * 1024 * 1024, null, { timeout: 20000 });
  await context.setOffline(true);
  await page.waitForTimeout(700);
  const sentBefore = requests.length;
  await context.setOffline(false);
  const result = await (await page.waitForFunction(() => (result.url || result.error) && result, null, { timeout: 30000 })).jsonValue();

  assert.equal(result.error, null);
  const after = requests.slice(sentBefore);
  assert.ok(after.some((request) => request.method === 'HEAD'), 'tus-js-client asked for the offset');
  const firstPatch = after.find((request) => request.method === 'PATCH');
  assert.ok(firstPatch.offset >= 2 * 1024 * 1024, `resumed at ${firstPatch.offset}`);
  assert.ok(!after.some((request) => request.method === 'POST'), 'no new upload was created');
  const download = await downloadSha256(result.url);
  assert.equal(download.length, 6 * MiB);
  assert.equal(download.sha256, await sha256File(file));
});
