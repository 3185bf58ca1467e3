// resumable.js against `resumable serve --auth tokens`: `headers` as an async function is called
// before every request, so each request can carry a freshly refreshed token; without headers the
// server answers 401 and the upload fails instead of retrying.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import {
  MiB, startServer, openBrowser, recordRequests, tempDir, makeRandomFile, sha256File, downloadSha256,
} from './helpers.mjs';

const NAME = 'auth.bin';
/** Two tokens of one owner: what a token refresh hands out in turn. */
const TOKENS = ['browser-token-one-5e1f', 'browser-token-two-9b07'];
/** Small chunks: one creation and several PATCHes, each asking for its headers. */
const CHUNK = 256 * 1024;

let dir;
let file;
let fileSha;

before(async () => {
  dir = await tempDir('resumable-browser-auth-');
  file = await makeRandomFile(path.join(dir, NAME), 1);
  fileSha = await sha256File(file);
});

after(() => rm(dir, { recursive: true, force: true }));

async function setUp(t) {
  const tokensFile = path.join(dir, 'tokens');
  await writeFile(tokensFile, TOKENS.map((token) => `${token} alice\n`).join(''));
  const server = await startServer({ args: ['--auth', 'tokens', '--tokens-file', tokensFile] });
  const browser = await openBrowser(t);
  t.after(async () => {
    await browser.close();
    await server.stop();
  });
  const { page } = browser;
  const requests = recordRequests(page);
  // The page's own assets need no credentials; a picker of our own keeps the page's uploader
  // out of it.
  await page.goto(`${server.url}/`);
  await page.evaluate(() => {
    const input = document.createElement('input');
    input.type = 'file';
    input.id = 'auth-picker';
    document.body.append(input);
  });
  await page.setInputFiles('#auth-picker', file);
  return { server, page, errors: browser.errors, requests };
}

/**
 * Uploads the picked file in the page with resumable.js; with `refresh`, `headers` is an async
 * function handing out the next token on each call. Resolves once the upload is done or failed.
 */
function uploadInPage(page, { refresh }) {
  return page.evaluate(async ({ refresh, tokens, chunkSize }) => {
    const { Uploader } = await import('/resumable.js');
    let calls = 0;
    const headers = refresh
      ? async () => {
          // A token endpoint would be asked here; a tick stands in for its round trip.
          await new Promise((resolve) => setTimeout(resolve, 1));
          const token = tokens[calls++ % tokens.length];
          return { Authorization: `Bearer ${token}` };
        }
      : {};
    const uploader = new Uploader({ headers, chunkSize, storage: null, maxRetries: 3 });
    const upload = uploader.add(document.querySelector('#auth-picker').files[0]);
    await new Promise((resolve) => {
      upload.addEventListener('statechange', () => {
        if (upload.state === 'done' || upload.state === 'failed') resolve();
      });
    });
    return {
      state: upload.state,
      url: upload.url,
      status: upload.error?.status ?? null,
      error: upload.error?.message ?? null,
      calls,
    };
  }, { refresh, tokens: TOKENS, chunkSize: CHUNK });
}

test('headers as an async function: a refreshed token on every request', { timeout: 60000 }, async (t) => {
  const { page, errors, requests } = await setUp(t);
  const result = await uploadInPage(page, { refresh: true });
  assert.equal(result.state, 'done', `upload: ${result.error}`);

  const sent = requests.map((request) => request.headers.authorization);
  assert.ok(sent.length >= 1 + MiB / CHUNK, `a creation and a PATCH per chunk: ${sent.length}`);
  assert.equal(result.calls, sent.length, 'headers() was called once per request');
  for (const [index, authorization] of sent.entries()) {
    assert.equal(authorization, `Bearer ${TOKENS[index % TOKENS.length]}`, `request ${index}`);
  }

  const download = await downloadSha256(result.url, { headers: { Authorization: `Bearer ${TOKENS[1]}` } });
  assert.equal(download.status, 200);
  assert.equal(download.length, MiB);
  assert.equal(download.sha256, fileSha, 'the downloaded bytes are the picked file');

  // The same request without credentials is refused, with the challenge.
  const anonymous = await page.evaluate(async (url) => {
    const response = await fetch(url, { method: 'HEAD', headers: { 'Tus-Resumable': '1.0.0' } });
    return { status: response.status, challenge: response.headers.get('WWW-Authenticate') };
  }, result.url);
  assert.equal(anonymous.status, 401);
  assert.match(anonymous.challenge ?? '', /^Bearer realm="resumable"/);
  assert.deepEqual(errors, []);
});

test('without headers the server answers 401 and the upload fails without retrying', { timeout: 60000 }, async (t) => {
  const { page, errors, requests } = await setUp(t);
  const result = await uploadInPage(page, { refresh: false });
  assert.equal(result.state, 'failed');
  assert.equal(result.status, 401, result.error);
  assert.equal(requests.length, 1, 'one refused creation, not retried');
  assert.equal(requests[0].headers.authorization, undefined);
  assert.deepEqual(errors, []);
});
