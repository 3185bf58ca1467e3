// Pages on another origin upload to the server: the README's example, importing resumable.js
// from the server, and the upload page itself served elsewhere (configured by its meta tag).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import {
  MiB, startServer, startStaticServer, openBrowser, recordRequests, pick, waitForRow, tempDir,
  makeRandomFile, sha256File, downloadSha256,
} from './helpers.mjs';

const WEB = path.resolve(import.meta.dirname, '../../web');
const NAME = 'cross-origin.bin';

let dir;
let file;
let fileSha;

before(async () => {
  dir = await tempDir('resumable-browser-cors-');
  file = await makeRandomFile(path.join(dir, NAME), 3);
  fileSha = await sha256File(file);
});

after(() => rm(dir, { recursive: true, force: true }));

/** The README's example, pointed at `server`, with `options` added to the Uploader's. */
const examplePage = (server, options = '') => `<!doctype html>
<meta charset="utf-8">
<input type="file" id="picker" multiple>
<script type="module">
  import { Uploader } from '${server}/resumable.js';

  const uploader = new Uploader({
    endpoint: '${server}/files/',
    headers: { Authorization: 'Bearer example-token' }, // for a server that asks for auth
    ${options}
  });
  document.querySelector('#picker').addEventListener('change', (event) => {
    for (const file of event.target.files) {
      const upload = uploader.add(file);
      upload.addEventListener('progress', () => console.log(upload.confirmed, 'of', upload.size));
      upload.addEventListener('statechange', () => {
        if (upload.state === 'done') window.uploaded = upload.url;
      });
    }
  });
</script>`;

async function setUp(t, files) {
  const server = await startServer();
  const site = await startStaticServer(files(server.url));
  const browser = await openBrowser(t);
  t.after(async () => {
    await browser.close();
    await site.close();
    await server.stop();
  });
  assert.notEqual(new URL(site.url).origin, new URL(server.url).origin);
  return { server, site, page: browser.page, errors: browser.errors };
}

async function assertUploaded(url, server) {
  assert.equal(new URL(url).origin, new URL(server.url).origin, 'the upload is on the server');
  const download = await downloadSha256(url);
  assert.equal(download.length, 3 * MiB);
  assert.equal(download.sha256, fileSha);
}

test('the README example: another origin imports resumable.js from the server and uploads', { timeout: 30000 }, async (t) => {
  const { server, site, page, errors } = await setUp(t, (server) => ({
    '/': { body: examplePage(server), type: 'text/html; charset=utf-8' },
  }));
  const requests = recordRequests(page);
  await page.goto(site.url);
  await pick(page, file);
  const url = await (await page.waitForFunction(() => window.uploaded, null, { timeout: 20000 })).jsonValue();
  await assertUploaded(url, server);
  const patch = requests.find((request) => request.method === 'PATCH');
  assert.equal(patch.headers.authorization, 'Bearer example-token', 'extra headers are sent');
  assert.deepEqual(errors, []);
});

test('another origin uploads with the IETF draft: its headers pass CORS both ways', { timeout: 30000 }, async (t) => {
  const { server, site, page, errors } = await setUp(t, (server) => ({
    '/': { body: examplePage(server, "protocol: 'ietf',"), type: 'text/html; charset=utf-8' },
  }));
  const requests = recordRequests(page);
  await page.goto(site.url);
  await pick(page, file);
  const url = await (await page.waitForFunction(() => window.uploaded, null, { timeout: 20000 })).jsonValue();
  await assertUploaded(url, server);
  // Done means the page read Upload-Offset / Upload-Complete from cross-origin answers.
  const patch = requests.find((request) => request.method === 'PATCH');
  assert.equal(patch.headers['upload-draft-interop-version'], '8');
  assert.equal(patch.headers['content-type'], 'application/partial-upload');
  assert.deepEqual(errors, []);
});

test('the upload page served by another origin uploads to the server named in its meta tag', { timeout: 30000 }, async (t) => {
  const index = await readFile(path.join(WEB, 'index.html'), 'utf8');
  const { server, site, page, errors } = await setUp(t, (server) => {
    const configured = index.replace('<meta name="resumable-server" content="">',
      `<meta name="resumable-server" content="${server}/">`);
    assert.notEqual(configured, index, 'index.html has the resumable-server meta tag');
    const asset = (name, type) => ({ file: path.join(WEB, name), type });
    return {
      '/': { body: configured, type: 'text/html; charset=utf-8' },
      '/app.js': asset('app.js', 'text/javascript'),
      '/resumable.js': asset('resumable.js', 'text/javascript'),
      '/style.css': asset('style.css', 'text/css'),
    };
  });
  await page.goto(site.url);
  await pick(page, file);
  const row = await waitForRow(page, NAME, (row) => row.state === 'done');
  await assertUploaded(row.download, server);
  assert.deepEqual(errors, []);
});
