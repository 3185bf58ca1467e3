// tus-js-client over HTTPS: the server runs with --tls-cert/--tls-key (a test CA made with the
// openssl CLI, an intermediate in the certificate file), the client trusts the CA through
// NODE_EXTRA_CA_CERTS (read at start-up, hence child processes), uploads a 24 MiB file, is
// aborted at >= 30%, resumes in a fresh process, and the download matches byte for byte.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  MiB, startServer, runNodeChild, lastJsonLine, makeRandomSource, makeTempDir, removeDir,
} from './helpers.mjs';

const CHILD = path.join(path.dirname(fileURLToPath(import.meta.url)), 'tus-child.mjs');
const SIZE_MIB = 24;

let source;
let pki;

/** Runs the openssl CLI in `dir`; throws with its stderr on failure. */
function openssl(dir, ...args) {
  execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
}

/** A root CA, an intermediate, and a server certificate for localhost and 127.0.0.1. */
async function makePki() {
  const dir = await makeTempDir('resumable-e2e-pki-');
  const ca = ['-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'];
  openssl(dir, 'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', 'root.key', '-out', 'root.pem', '-days', '2', '-subj', '/CN=resumable e2e root', ...ca);
  openssl(dir, 'req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', 'inter.key', '-out', 'inter.csr', '-subj', '/CN=resumable e2e intermediate');
  writeFileSync(path.join(dir, 'inter.ext'), 'basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n');
  openssl(dir, 'x509', '-req', '-in', 'inter.csr', '-CA', 'root.pem', '-CAkey', 'root.key', '-CAcreateserial',
    '-days', '2', '-extfile', 'inter.ext', '-out', 'inter.pem');
  openssl(dir, 'req', '-new', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'server.key', '-out', 'server.csr',
    '-subj', '/CN=localhost');
  writeFileSync(path.join(dir, 'server.ext'), 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n');
  openssl(dir, 'x509', '-req', '-in', 'server.csr', '-CA', 'inter.pem', '-CAkey', 'inter.key', '-CAcreateserial',
    '-days', '2', '-extfile', 'server.ext', '-out', 'server.pem');
  const chain = path.join(dir, 'chain.pem');
  writeFileSync(chain, readFileSync(path.join(dir, 'server.pem'), 'utf8') + readFileSync(path.join(dir, 'inter.pem'), 'utf8'));
  return { dir, root: path.join(dir, 'root.pem'), chain, key: path.join(dir, 'server.key') };
}

/** GET `url` over HTTPS trusting `ca`: { status, sha256, length, alpn }. */
function httpsSha256(url, ca) {
  return new Promise((resolve, reject) => {
    const request = https.get(url, { ca: readFileSync(ca), timeout: 60000 }, (response) => {
      const hash = createHash('sha256');
      let length = 0;
      response.on('data', (chunk) => { hash.update(chunk); length += chunk.length; });
      response.on('end', () => resolve({ status: response.statusCode, sha256: hash.digest('hex'), length }));
      response.on('error', reject);
    });
    request.on('timeout', () => request.destroy(new Error(`GET ${url} timed out`)));
    request.on('error', reject);
  });
}

before(async () => {
  source = await makeRandomSource(SIZE_MIB, 'random-24MiB.bin');
  pki = await makePki();
});

after(async () => {
  await removeDir(source?.dir);
  await removeDir(pki?.dir);
});

test('tus-js-client over HTTPS: abort at >=30%, resume in a new process, bytes identical', { timeout: 120000 }, async (t) => {
  const server = await startServer({ extraArgs: ['--tls-cert', pki.chain, '--tls-key', pki.key] });
  t.after(() => server.stop());
  assert.match(server.url, /^https:\/\//, 'the listening line says https://');
  const endpoint = `https://localhost:${server.port}/files/`;
  const env = { ...process.env, NODE_EXTRA_CA_CERTS: pki.root };
  const common = { endpoint, file: source.path, chunkSize: null, filename: 'random-24MiB.bin' };

  const p1 = await runNodeChild(CHILD, ['phase1', JSON.stringify({ ...common, abortAtFraction: 0.3 })], { timeoutMs: 55000, env });
  assert.equal(p1.code, 0, `phase1 failed: ${p1.stdout}\n${p1.stderr}\nserver: ${server.stderr().slice(-2000)}`);
  const r1 = lastJsonLine(p1.stdout);
  assert.ok(r1.url.startsWith(endpoint), `upload URL ${r1.url} is not under ${endpoint}`);

  const p2 = await runNodeChild(CHILD, ['phase2', JSON.stringify({ ...common, resume: 'uploadUrl', uploadUrl: r1.url })], { timeoutMs: 55000, env });
  assert.equal(p2.code, 0, `phase2 failed: ${p2.stdout}\n${p2.stderr}\nserver: ${server.stderr().slice(-2000)}`);
  const r2 = lastJsonLine(p2.stdout);
  assert.equal(r2.url, r1.url, 'resumed the same upload');
  assert.ok(r2.headOffset > 0 && r2.headOffset < SIZE_MIB * MiB, `resumed from ${r2.headOffset}`);
  assert.ok(!r2.requests.some((r) => r.method === 'POST'), 'the resume created nothing');

  const download = await httpsSha256(r1.url, pki.root);
  assert.equal(download.status, 200);
  assert.equal(download.length, SIZE_MIB * MiB);
  assert.equal(download.sha256, source.sha, 'downloaded bytes differ from the source');
});
