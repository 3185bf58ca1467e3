// The fleet (issue 13): two `resumable serve` nodes on one S3 bucket (Garage) with Redis locks,
// behind nginx's per-request round robin, started by the testkit's `resumable-fleet` binary
// ($RESUMABLE_FLEET_BIN; ./test.sh builds it). Every request of an upload may land on either
// node, so consecutive PATCHes alternate between them:
//   (a) tus-js-client in 256 KiB chunks, aborted in the middle and resumed from a new process;
//   (b) `resumable upload --chunk-size 256KiB` through the same round robin.
// Both must finish with the source's bytes, and both nodes must have taken PATCHes.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  MiB, serverBinary, downloadSha256, runNodeChild, lastJsonLine, stableOffset, tusHead,
  makeRandomSource, makeTempDir, removeDir,
} from './helpers.mjs';

const CHILD = path.join(path.dirname(fileURLToPath(import.meta.url)), 'tus-child.mjs');
const SIZE_MIB = 4;
const SIZE = SIZE_MIB * MiB;
const CHUNK = 256 * 1024;

const fleetBinary = process.env.RESUMABLE_FLEET_BIN;
const skip = fleetBinary
  ? false
  : 'RESUMABLE_FLEET_BIN is not set (cargo build --release -p resumable-testkit --bin resumable-fleet; ./test.sh does)';
if (skip) {
  if (process.env.RESUMABLE_REQUIRE_FLEET) throw new Error(`${skip} (RESUMABLE_REQUIRE_FLEET is set)`);
  process.stderr.write(`\nWARNING: fleet tests SKIPPED, nothing was tested: ${skip}\n\n`);
}

/**
 * Starts `resumable-fleet` and resolves to its JSON line plus stop(); it stops everything when
 * its stdin closes.
 */
async function startFleet({ timeoutMs = 120000 } = {}) {
  const proc = spawn(fleetBinary, [], {
    stdio: ['pipe', 'pipe', 'pipe'],
    env: { ...process.env, RESUMABLE_BIN: serverBinary() },
  });
  let stderr = '';
  proc.stderr.setEncoding('utf8').on('data', (d) => { stderr += d; });
  const info = await new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => {
      proc.kill('SIGTERM');
      reject(new Error(`resumable-fleet printed nothing within ${timeoutMs} ms; stderr=${stderr.slice(-3000)}`));
    }, timeoutMs);
    proc.stdout.setEncoding('utf8').on('data', (d) => {
      out += d;
      const nl = out.indexOf('\n');
      if (nl < 0) return;
      clearTimeout(timer);
      try { resolve(JSON.parse(out.slice(0, nl))); } catch (e) { reject(new Error(`not JSON: ${out}`)); }
    });
    proc.on('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`resumable-fleet exited (code=${code} signal=${signal}); stderr=${stderr.slice(-3000)}`));
    });
  });
  async function stop() {
    if (proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = once(proc, 'exit');
    proc.stdin.end();
    const t = setTimeout(() => proc.kill('SIGKILL'), 20000);
    const [code] = await exited;
    clearTimeout(t);
    assert.equal(code, 0, `resumable-fleet exited with ${code}; stderr=${stderr.slice(-3000)}`);
  }
  return { ...info, stop, stderr: () => stderr };
}

/** PATCHes a node answered 204 to, from its /metrics. */
async function patchesServed(node) {
  const res = await fetch(`${node.url}/metrics`, { signal: AbortSignal.timeout(10000) });
  assert.equal(res.status, 200, `GET ${node.url}/metrics`);
  let total = 0;
  for (const line of (await res.text()).split('\n')) {
    const m = /^resumable_http_requests_total\{([^}]*)\} (\d+)$/.exec(line);
    if (m && m[1].includes('method="PATCH"') && m[1].includes('status="204"')) total += Number(m[2]);
  }
  return total;
}

/** What the nodes' logs say, for failure messages. */
async function nodeLogs(fleet) {
  const logs = await Promise.all(fleet.nodes.map((n) => readFile(n.log, 'utf8').catch((e) => `${e}`)));
  return logs.map((text, i) => `--- node ${i} (${fleet.nodes[i].url}):\n${text.slice(-3000)}`).join('\n');
}

let tmp;
let file;
let fileSha;
let fleet;

before(async () => {
  if (skip) return;
  ({ dir: tmp, path: file, sha: fileSha } = await makeRandomSource(SIZE_MIB, 'random-4MiB.bin'));
  fleet = await startFleet();
});

after(async () => {
  if (fleet) await fleet.stop();
  await removeDir(tmp);
});

test('fleet: tus-js-client in 256 KiB chunks through a round robin of two nodes, aborted and resumed', { skip, timeout: 120000 }, async (t) => {
  assert.equal(fleet.nodes.length, 2);
  const before = await Promise.all(fleet.nodes.map(patchesServed));
  const endpoint = `${fleet.url}/files/`;

  // ---- phase 1: a child process starts the upload and aborts it, usually in the middle of a
  // PATCH's body (bodies are paced so tus-js-client's throttled progress reports land inside
  // one); the node that had it keeps what arrived and holds the lock while it does ----
  const p1 = await runNodeChild(CHILD, ['phase1', JSON.stringify({
    endpoint, file, chunkSize: CHUNK, abortAtFraction: 0.4, paceMs: 60, filename: 'random-4MiB.bin',
  })], { timeoutMs: 55000 });
  assert.equal(p1.code, 0, `phase1 failed: code=${p1.code}\nstdout=${p1.stdout}\nstderr=${p1.stderr}\n${await nodeLogs(fleet)}`);
  const r1 = lastJsonLine(p1.stdout);
  assert.ok(r1.url?.startsWith(`${fleet.url}/files/`), `upload URL ${r1.url} is not under the balancer's ${fleet.url}/files/`);
  assert.ok(r1.sentAtAbort >= 0.4 * SIZE && r1.sentAtAbort < SIZE, `aborted at ${r1.sentAtAbort}`);

  // HEADs go round the nodes too: whichever answers must agree once the cut PATCH settled.
  const stored = await stableOffset(r1.url);
  assert.ok(stored > 0 && stored < SIZE && stored <= r1.sentAtAbort, `stored ${stored} after aborting at ${r1.sentAtAbort}`);

  // ---- phase 2: a fresh process resumes from the stored offset ----
  const p2 = await runNodeChild(CHILD, ['phase2', JSON.stringify({
    endpoint, file, chunkSize: CHUNK, resume: 'uploadUrl', uploadUrl: r1.url, filename: 'random-4MiB.bin',
  })], { timeoutMs: 55000 });
  assert.equal(p2.code, 0, `phase2 failed: code=${p2.code}\nstdout=${p2.stdout}\nstderr=${p2.stderr}\n${await nodeLogs(fleet)}`);
  const r2 = lastJsonLine(p2.stdout);
  assert.equal(r2.headOffset, stored, 'HEAD in the new process reports the stored offset');
  const patches = r2.requests.filter((r) => r.method === 'PATCH');
  assert.equal(Number(patches[0].uploadOffset), stored, 'the resume starts at the stored offset');
  assert.equal(patches.length, Math.ceil((SIZE - stored) / CHUNK), `PATCHes of <= 256 KiB from ${stored}`);
  assert.ok(!r2.requests.some((r) => r.method === 'POST'), 'the resume creates nothing');

  // ---- complete, and byte-identical from either node ----
  assert.equal((await tusHead(r1.url)).offset, SIZE);
  const dl = await downloadSha256(r1.url);
  assert.equal(dl.status, 200);
  assert.equal(dl.length, SIZE);
  assert.equal(dl.sha256, fileSha, 'downloaded SHA-256 equals the source file');
  const id = new URL(r1.url).pathname;
  for (const node of fleet.nodes) {
    const direct = await downloadSha256(`${node.url}${id}`);
    assert.equal(direct.sha256, fileSha, `GET ${id} from node ${node.url} directly`);
  }

  // ---- both nodes took PATCHes of this upload ----
  const after = await Promise.all(fleet.nodes.map(patchesServed));
  const served = after.map((n, i) => n - before[i]);
  t.diagnostic(`aborted at ${r1.sentAtAbort}, stored ${stored}; PATCHes answered 204 per node: ${served}`);
  assert.ok(served.every((n) => n > 0), `PATCHes answered 204 per node: ${served} (both must have served some)`);
  const log = await readFile(fleet.nginx_access_log, 'utf8');
  const upstreams = new Set(log.split('\n').filter((l) => l.startsWith(`PATCH ${id} `)).map((l) => l.split(' ').pop()));
  assert.equal(upstreams.size, 2, `nginx sent this upload's PATCHes to ${[...upstreams]}`);
});

test('fleet: `resumable upload --chunk-size 256KiB` through the round robin finishes with the same bytes', { skip, timeout: 120000 }, async (t) => {
  const before = await Promise.all(fleet.nodes.map(patchesServed));
  const state = await makeTempDir('resumable-e2e-state-');
  try {
    const p = await new Promise((resolve, reject) => {
      const child = spawn(serverBinary(), [
        'upload', file, '--to', `${fleet.url}/files/`, '--chunk-size', '256KiB',
        '--state-dir', state, '--json',
      ], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout.setEncoding('utf8').on('data', (d) => { stdout += d; });
      child.stderr.setEncoding('utf8').on('data', (d) => { stderr += d; });
      const t = setTimeout(() => child.kill('SIGKILL'), 60000);
      child.on('error', reject);
      child.on('exit', (code) => { clearTimeout(t); resolve({ code, stdout, stderr }); });
    });
    assert.equal(p.code, 0, `resumable upload failed: ${p.stdout}\n${p.stderr}\n${await nodeLogs(fleet)}`);
    const report = lastJsonLine(p.stdout);
    assert.equal(report.status, 'done', JSON.stringify(report));
    assert.equal(report.offset, SIZE);
    assert.ok(report.url.startsWith(`${fleet.url}/files/`), `upload URL ${report.url}`);
    const dl = await downloadSha256(report.url);
    assert.equal(dl.status, 200);
    assert.equal(dl.sha256, fileSha, 'downloaded SHA-256 equals the source file');
    const after = await Promise.all(fleet.nodes.map(patchesServed));
    const served = after.map((n, i) => n - before[i]);
    t.diagnostic(`PATCHes answered 204 per node: ${served}; ${report.seconds} s`);
    assert.equal(served[0] + served[1], SIZE / CHUNK, `one PATCH per 256 KiB: ${served}`);
    assert.ok(served.every((n) => n > 0), `PATCHes per node: ${served}`);
  } finally {
    await removeDir(state);
  }
});
