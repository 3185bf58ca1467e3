// Hooks as tus-js-client sees them: a pre-create refusal is an error carrying the hook's
// message (and status); a pre-finish refusal is an error carrying its reason; an accepted
// upload's post-finish reaches the receiver with the metadata pre-create set.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { once } from 'node:events';
import { Upload } from 'tus-js-client';
import { startServer, waitUntil } from './helpers.mjs';

/** A hook receiver on 127.0.0.1:0 answering with `answer(event)` (a JSON-able object or null). */
async function startReceiver(answer) {
  const events = [];
  const server = http.createServer(async (req, res) => {
    let body = '';
    for await (const chunk of req) body += chunk;
    const event = JSON.parse(body);
    events.push(event);
    const reply = answer(event);
    res.writeHead(200, { 'Content-Type': 'application/json' });
    res.end(reply == null ? '' : JSON.stringify(reply));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address();
  return {
    url: `http://127.0.0.1:${port}/hook`,
    events,
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}

/** Uploads `data` with tus-js-client; resolves to { url } or { error }. */
function upload(endpoint, data, metadata) {
  return new Promise((resolve) => {
    const u = new Upload(data, {
      endpoint,
      metadata,
      retryDelays: [],
      onError: (error) => resolve({ error }),
      onSuccess: () => resolve({ url: u.url }),
    });
    u.start();
  });
}

function policy(event) {
  const filename = event.upload.metadata.filename;
  if (event.type === 'pre-create' && filename === 'forbidden.txt') {
    return { reject: { status: 403, message: 'forbidden.txt is not welcome here' } };
  }
  if (event.type === 'pre-create') return { metadata: { reviewed: 'by-hook' } };
  if (event.type === 'pre-finish' && filename === 'infected.bin') {
    return { reject: { status: 422, message: 'virus found in infected.bin' } };
  }
  return null;
}

test('tus-js-client: hook refusals reach the client with their message', { timeout: 60000 }, async (t) => {
  const receiver = await startReceiver(policy);
  t.after(() => receiver.close());
  const server = await startServer({ extraArgs: ['--hook-url', receiver.url] });
  t.after(() => server.stop());
  const endpoint = `${server.url}/files/`;

  const refused = await upload(endpoint, Buffer.from('hello'), { filename: 'forbidden.txt' });
  assert.ok(refused.error, 'the upload must fail');
  assert.match(refused.error.message, /forbidden\.txt is not welcome here/);
  assert.equal(refused.error.originalResponse?.getStatus(), 403);

  const infected = await upload(endpoint, Buffer.from('X5O!P%@AP'), { filename: 'infected.bin' });
  assert.ok(infected.error, 'the upload must fail at its finish');
  assert.match(infected.error.message, /virus found in infected\.bin/);
  assert.equal(infected.error.originalResponse?.getStatus(), 422);

  const accepted = await upload(endpoint, Buffer.from('fine bytes'), { filename: 'fine.txt' });
  assert.equal(accepted.error, undefined, String(accepted.error));
  const id = accepted.url.split('/').pop();
  const finished = await waitUntil(
    () => receiver.events.find((e) => e.type === 'post-finish' && e.upload.id === id),
    { what: 'post-finish of the accepted upload', timeoutMs: 15000 },
  );
  assert.equal(finished.upload.metadata.filename, 'fine.txt');
  assert.equal(finished.upload.metadata.reviewed, 'by-hook', 'metadata set by pre-create');
  assert.equal(finished.upload.offset, 10);
  const download = await fetch(accepted.url);
  assert.equal(await download.text(), 'fine bytes');
});
