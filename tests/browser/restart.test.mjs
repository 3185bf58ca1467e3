// The helpers' server restart on the same port (page.test.mjs restarts the server mid-upload):
// while the server is down another process may take its port; the restart waits it out, and
// fails saying so when the port stays taken. No browser needed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import net from 'node:net';
import { startServer, waitUntil } from './helpers.mjs';

/** Another process's listener on 127.0.0.1:`port` (while the server is down). */
async function takePort(port) {
  const squatter = net.createServer((socket) => socket.destroy());
  squatter.listen(port, '127.0.0.1');
  await once(squatter, 'listening');
  return { close: () => new Promise((resolve) => squatter.close(resolve)) };
}

test('a restart on the same port waits while another process holds the port briefly', { timeout: 30000 }, async (t) => {
  const server = await startServer();
  t.after(() => server.stop());
  const { port } = server;
  await server.halt();
  const squatter = await takePort(port);
  t.after(() => squatter.close());

  const started = server.start().then(() => null, (error) => error);
  // The restart has found the port taken (at least once) before it is freed.
  await waitUntil(() => server.bindRetries >= 1, { what: 'a bind attempt refused with "address in use"' });
  await squatter.close();
  assert.equal(await started, null, 'the restart succeeds once the port is free');
  assert.equal(server.port, port, 'same port');
  const response = await fetch(`${server.url}/files/`, { method: 'OPTIONS', signal: AbortSignal.timeout(5000) });
  assert.equal(response.status, 204, 'the restarted server answers');
});

test('a restart on a port that stays taken fails, saying so', { timeout: 30000 }, async (t) => {
  const server = await startServer({ portRetryMs: 500 });
  t.after(() => server.stop());
  const { port } = server;
  await server.halt();
  const squatter = await takePort(port);
  t.after(() => squatter.close());

  await assert.rejects(server.start(), (error) => {
    assert.match(error.message, new RegExp(`port ${port}: another process held the port for more than 500 ms`));
    assert.match(error.message, /address already in use/i, 'with the server\'s own words');
    return true;
  });
  assert.ok(server.bindRetries >= 1);
});
