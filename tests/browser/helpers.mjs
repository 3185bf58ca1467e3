// Helpers for the browser tests: the server binary (restartable on the same port and data dir),
// a fresh headless Chromium, a slow network for PATCHes, and waits on the page's upload rows.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { after } from 'node:test';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { readFile } from 'node:fs/promises';
import { chromium } from 'playwright-core';

export { MiB, makeRandomFile, sha256File, downloadSha256, tusHead, waitUntil } from '../e2e/node/helpers.mjs';

const CHROMIUM = process.env.CHROMIUM_BIN ?? '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--disable-quic', '--no-first-run',
];
const LISTENING = /^resumable listening on (http:\/\/127\.0\.0\.1:(\d+))\s*$/m;

export const tempDir = (prefix) => mkdtemp(path.join(tmpdir(), prefix));

/** How long a restart on the same port keeps retrying while another process holds the port. */
const PORT_RETRY_MS = 10000;
const ADDRESS_IN_USE = /address already in use|os error 98/i;

/**
 * `resumable serve` on 127.0.0.1 (port 0: a free one) with a fresh data dir.
 * `halt()` stops it (SIGTERM: uploads in flight persist and answer 503) and `start()` starts it
 * again on the same port and data dir; `stop()` ends it and removes the data dir.
 * While the server is down another process may take its port: `start()` retries while the
 * bind fails with "address in use" (counted in `bindRetries`), for `portRetryMs` at most, then
 * fails saying so.
 */
export async function startServer({ args = [], portRetryMs = PORT_RETRY_MS } = {}) {
  const dataDir = await tempDir('resumable-browser-data-');
  const server = { dataDir, proc: null, url: '', port: 0, bindRetries: 0 };
  const spawnOnce = async (port) => {
    const all = ['serve', '--listen', `127.0.0.1:${port}`, '--data-dir', dataDir, ...args];
    const proc = spawn(process.env.RESUMABLE_BIN, all, { stdio: ['ignore', 'pipe', 'pipe'] });
    server.proc = proc;
    let stderr = '';
    proc.stderr.setEncoding('utf8').on('data', (data) => {
      stderr = (stderr + data).slice(-4000);
    });
    try {
      const match = await waitForLine(proc, LISTENING);
      proc.stdout.resume();
      return match;
    } catch (error) {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
      // Let the last of stderr arrive: it says why the server exited.
      if (proc.stderr.readable) await once(proc.stderr, 'close');
      error.stderr = stderr;
      error.message += `\nserver stderr: ${stderr}`;
      throw error;
    }
  };
  const launch = async (port) => {
    const deadline = Date.now() + portRetryMs;
    for (;;) {
      try {
        const match = await spawnOnce(port);
        server.url = match[1];
        server.port = Number(match[2]);
        return;
      } catch (error) {
        const taken = port !== 0 && ADDRESS_IN_USE.test(error.stderr ?? '');
        if (!taken) throw error;
        if (Date.now() > deadline) {
          throw new Error(
            `restarting the server on port ${port}: another process held the port for more than ${portRetryMs} ms` +
              `\nlast attempt: ${error.message}`,
          );
        }
        server.bindRetries += 1;
        await new Promise((resolve) => setTimeout(resolve, 50)); // back off before the next attempt
      }
    }
  };
  const terminate = async () => {
    const { proc } = server;
    if (proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = once(proc, 'exit');
    proc.kill('SIGTERM');
    const killer = setTimeout(() => proc.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(killer);
  };
  server.halt = terminate;
  server.start = () => launch(server.port);
  server.stop = async () => {
    await terminate();
    await rm(dataDir, { recursive: true, force: true });
  };
  await launch(0);
  return server;
}

function waitForLine(proc, pattern, timeoutMs = 15000) {
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => finish(new Error(`no listening line in ${timeoutMs} ms: ${out}`)), timeoutMs);
    const onData = (data) => {
      out += data;
      const match = pattern.exec(out);
      if (match) finish(null, match);
    };
    const onExit = (code) => finish(new Error(`server exited (${code}) before listening: ${out}`));
    function finish(error, match) {
      clearTimeout(timer);
      proc.stdout.off('data', onData);
      proc.off('exit', onExit);
      if (error) reject(error); else resolve(match);
    }
    proc.stdout.setEncoding('utf8').on('data', onData);
    proc.on('exit', onExit);
  });
}

const uncheckedBrowsers = new Set();
after(() => {
  assert.equal(uncheckedBrowsers.size, 0, 'a browser whose page errors were never checked (openBrowser(t))');
});

/**
 * A fresh Chromium (its own user-data-dir, so its own localStorage) with one page, for the
 * test `t`. Page errors and Content-Security-Policy violations fail loudly: they are collected
 * in `errors`, and the test fails when any occurred (checked in `t.after`, once the test is
 * over).
 */
export async function openBrowser(t, { viewport = { width: 1000, height: 760 } } = {}) {
  if (typeof t?.after !== 'function') throw new TypeError('openBrowser(t): pass the test context');
  const userDataDir = await tempDir('resumable-browser-profile-');
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport,
  });
  // Content-Security-Policy violations fail the test like page errors: the page must work under
  // the policy the server sends. Chromium reports each on the console ("Refused to ...") and as
  // a `securitypolicyviolation` event, reported here on the console too.
  await context.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (event) => {
      console.error(`CSP violation: ${event.effectiveDirective} blocked ${event.blockedURI || 'inline code'}`
        + ` (${event.sourceFile || 'the page'}:${event.lineNumber})`);
    });
  });
  const page = context.pages()[0] ?? (await context.newPage());
  const errors = [];
  page.on('pageerror', (error) => errors.push(error));
  page.on('console', (message) => {
    if (message.type() === 'error' && /CSP violation|Content Security Policy/.test(message.text())) {
      errors.push(new Error(message.text()));
    }
  });
  // The check runs after the test's own cleanup hooks: a hook that throws skips the hooks after
  // it (the server and browser would be left running), so this hook appends the check to the
  // end of the list. `uncheckedBrowsers` catches a Node whose hooks do not run what is
  // appended while they run: the file fails instead of passing unchecked.
  const browser = { errors };
  uncheckedBrowsers.add(browser);
  t.after(() => {
    t.after(() => {
      uncheckedBrowsers.delete(browser);
      const messages = errors.map((error) => error.stack ?? String(error));
      assert.deepEqual(messages, [], `page errors during the test:\n${messages.join('\n')}`);
    });
  });
  const close = async () => {
    await context.close();
    await rm(userDataDir, { recursive: true, force: true });
  };
  return { context, page, errors, close };
}

/**
 * Records the page's upload requests (tus and simple) as `{ method, url, offset, headers }`
 * (offset: Upload-Offset or X-Start-Byte), in the order they are made.
 */
export function recordRequests(page) {
  const requests = [];
  page.on('request', (request) => {
    if (!isUploadRequest(new URL(request.url()))) return;
    const headers = request.headers();
    const offset = headers['upload-offset'] ?? headers['x-start-byte'];
    requests.push({ method: request.method(), url: request.url(), offset: offset == null ? null : Number(offset), headers });
  });
  return requests;
}

/**
 * Delays every upload request by `ms`, so a loopback upload in small chunks takes long enough
 * to be interrupted mid-way. (Chromium reports no upload progress for routed requests, and
 * routing a body of many MiB stalls: keep chunks small.)
 */
export async function slowUploads(page, ms) {
  await page.route(isUploadRequest, async (route) => {
    await new Promise((resolve) => setTimeout(resolve, ms));
    await route.continue().catch(() => {}); // the page may have gone offline or away meanwhile
  });
}

function isUploadRequest(url) {
  return url.pathname.startsWith('/files/') || ['/upload', '/status'].includes(url.pathname);
}

/** Picks files with the page's file input, as a person would. */
export function pick(page, ...files) {
  return page.setInputFiles('#picker', files);
}

/**
 * Waits until the upload row of `name` satisfies `condition(row)`, where row is
 * `{ state, sent, confirmed, url, text, download }`; returns that row. Bounded by `timeout`.
 * The rows are read in the page and `condition` runs here, in Node: the page's
 * Content-Security-Policy forbids evaluating code from a string there.
 */
export async function waitForRow(page, name, condition, { timeout = 30000 } = {}) {
  const deadline = Date.now() + timeout;
  let rows = [];
  for (;;) {
    try {
      rows = await page.evaluate((name) => [...document.querySelectorAll('.upload')]
        .filter((element) => element.querySelector('.name').textContent === name)
        .map((element) => ({
          state: element.dataset.state,
          sent: Number(element.dataset.sent),
          confirmed: Number(element.dataset.confirmed),
          url: element.dataset.url ?? null,
          text: element.querySelector('.figures').textContent,
          download: element.querySelector('.download').href || null,
        })), name);
    } catch (error) {
      // A reload or navigation replaced the document meanwhile: read the new one.
      if (!/context was destroyed|navigat/i.test(error.message)) throw error;
      rows = [];
    }
    const row = rows.find((row) => condition(row));
    if (row) return row;
    if (Date.now() > deadline) {
      throw new Error(`waitForRow: no row of ${name} satisfied ${condition} within ${timeout} ms; rows: ${JSON.stringify(rows)}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Clicks a button (pause, resume, cancel) in the upload row of `name`. */
export function clickInRow(page, name, button) {
  return page.locator('.upload', { has: page.locator('.name', { hasText: name }) }).locator(`.${button}`).click();
}

/**
 * A tiny static file server on another port (another origin): `files` maps URL paths to
 * `{ file }` (read from disk) or `{ body }`, each with a `type`.
 */
export async function startStaticServer(files) {
  const server = createServer(async (request, response) => {
    const entry = files[new URL(request.url, 'http://x').pathname];
    if (!entry) {
      response.writeHead(404).end('not found');
      return;
    }
    const body = entry.body ?? (await readFile(entry.file));
    response.writeHead(200, { 'Content-Type': entry.type, 'Cache-Control': 'no-store' }).end(body);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const url = `http://127.0.0.1:${server.address().port}`;
  return { url, close: () => new Promise((resolve) => server.close(resolve)) };
}

/**
 * A TCP proxy to the server on 127.0.0.1:`targetPort` that forwards what the browser sends at
 * about `bytesPerSecond`, like a slow uplink: the browser's "sent" runs ahead of what the
 * server has, by what the socket buffers hold, and an interruption lands mid-request.
 */
export async function startSlowLink(targetPort, bytesPerSecond) {
  const sockets = new Set();
  const proxy = net.createServer((client) => {
    const upstream = net.connect(targetPort, '127.0.0.1');
    const close = () => {
      client.destroy();
      upstream.destroy();
    };
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on('error', close).on('close', () => { sockets.delete(socket); close(); });
    }
    upstream.pipe(client);
    client.on('data', (chunk) => {
      upstream.write(chunk);
      client.pause();
      setTimeout(() => client.resume(), (1000 * chunk.length) / bytesPerSecond);
    });
  });
  proxy.listen(0, '127.0.0.1');
  await once(proxy, 'listening');
  return {
    url: `http://127.0.0.1:${proxy.address().port}`,
    close: () => {
      for (const socket of sockets) socket.destroy();
      return new Promise((resolve) => proxy.close(resolve));
    },
  };
}
