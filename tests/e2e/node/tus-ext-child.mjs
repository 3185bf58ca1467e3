// Child process for the tus-js-client extension tests (parallel uploads /
// concatenation, deferred length, creation-with-upload, expiration). Each
// phase runs in its own process so that resuming happens from a fresh client.
//
//   node tus-ext-child.mjs phase1 '<json>'  start an upload, abort it once abortAtBytes were sent
//   node tus-ext-child.mjs phase2 '<json>'  resume (or, if nothing is stored, restart) and finish
//
// Every HTTP request the client sends is logged (method, URL, tus request
// headers, body size, status and tus response headers) and printed with the
// outcome as one JSON line on stdout.
//
// Options (JSON): endpoint, file, input ('file' = fs.ReadStream | 'buffer'),
// storage (FileUrlStorage path or null), chunkSize, parallelUploads,
// uploadLengthDeferred, uploadDataDuringCreation, abortAtBytes, paceMs,
// resume ('storage' | 'uploadUrl'), uploadUrl, timeoutMs.
import { createReadStream } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { Readable, Transform } from 'node:stream';
import { Upload, FileUrlStorage, DefaultHttpStack } from 'tus-js-client';

const [phase, rawOpts] = process.argv.slice(2);
const opts = JSON.parse(rawOpts);

const requests = [];

function finish(obj, code = 0) {
  process.stdout.write(`${JSON.stringify({ ...obj, requests })}\n`, () => process.exit(code));
}

setTimeout(() => finish({ error: `phase ${phase} timed out` }, 4), opts.timeoutMs ?? 50000).unref();

const REQ_HEADERS = ['Upload-Length', 'Upload-Defer-Length', 'Upload-Offset', 'Upload-Concat', 'Upload-Metadata', 'Content-Type'];
const RES_HEADERS = ['Location', 'Upload-Offset', 'Upload-Length', 'Upload-Defer-Length', 'Upload-Concat', 'Upload-Expires', 'Tus-Resumable', 'Date'];

function pick(get, names) {
  const out = {};
  for (const n of names) {
    const v = get(n);
    if (v != null) out[n.toLowerCase()] = v;
  }
  return out;
}

// Delays every piece of a request body a little, so that an upload over
// loopback takes long enough for the abort to land in the middle of it.
class Pacer extends Transform {
  constructor(delayMs) {
    super();
    this.delayMs = delayMs;
  }
  _transform(chunk, _enc, cb) {
    setTimeout(() => cb(null, chunk), this.delayMs);
  }
}

function* pieces(buf, size = 64 * 1024) {
  for (let i = 0; i < buf.length; i += size) yield buf.subarray(i, i + size);
}

// Paces request bodies (streams and buffers alike) and logs every exchange.
class LoggingHttpStack extends DefaultHttpStack {
  constructor(delayMs) {
    super();
    this.delayMs = delayMs;
  }
  createRequest(method, url) {
    const req = super.createRequest(method, url);
    const send = req.send.bind(req);
    req.send = async (body = null) => {
      const entry = {
        method,
        url,
        headers: pick((n) => req.getHeader(n), REQ_HEADERS),
        bodySize: body?.size ?? body?.length ?? 0,
      };
      requests.push(entry);
      let paced = body;
      if (this.delayMs > 0 && body != null && (body instanceof Readable || body instanceof Uint8Array)) {
        const src = body instanceof Readable ? body : Readable.from(pieces(body), { objectMode: false });
        paced = src.pipe(new Pacer(this.delayMs));
        paced.size = body.size ?? body.length; // the stack derives Content-Length from it
      }
      try {
        const res = await send(paced);
        entry.status = res.getStatus();
        entry.response = pick((n) => res.getHeader(n), RES_HEADERS);
        return res;
      } catch (err) {
        entry.error = String(err);
        throw err;
      }
    };
    return req;
  }
}

async function input() {
  return opts.input === 'buffer' ? readFile(opts.file) : createReadStream(opts.file);
}

function baseOptions() {
  const o = {
    endpoint: opts.endpoint,
    metadata: { filename: opts.filename ?? 'file.bin', filetype: 'application/octet-stream' },
    retryDelays: null, // report failures instead of hiding them behind retries
    httpStack: new LoggingHttpStack(opts.paceMs ?? 0),
  };
  for (const k of ['chunkSize', 'parallelUploads', 'uploadLengthDeferred', 'uploadDataDuringCreation']) {
    if (opts[k] != null) o[k] = opts[k];
  }
  if (opts.storage) o.urlStorage = new FileUrlStorage(opts.storage);
  o.storeFingerprintForResuming = Boolean(opts.storage);
  return o;
}

async function readStorage() {
  if (!opts.storage) return null;
  try {
    return JSON.parse(await readFile(opts.storage, 'utf8'));
  } catch {
    return null;
  }
}

// tus-js-client writes the URL storage asynchronously (not awaited by anyone);
// wait (bounded) until it holds an entry before this process exits.
async function waitForStorage(ms = 5000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const data = await readStorage();
    if (data && Object.keys(data).length > 0) return data;
    if (Date.now() > deadline) return data;
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function phase1() {
  let aborted = false;
  const upload = new Upload(await input(), {
    ...baseOptions(),
    onProgress(sent, total) {
      if (aborted || sent < opts.abortAtBytes) return;
      aborted = true;
      // Abort synchronously inside the progress callback.
      upload.abort().then(async () => {
        const storage = opts.expectStored ? await waitForStorage() : await readStorage();
        finish({ url: upload.url, sentAtAbort: sent, total, storage });
      });
    },
    onSuccess() {
      finish({ error: 'upload completed before it could be aborted', url: upload.url }, 2);
    },
    onError(err) {
      if (!aborted) finish({ error: `phase1 onError: ${err}`, url: upload.url }, 3);
    },
  });
  upload.start();
}

async function phase2() {
  const progress = [];
  let previousUploads = null;
  const options = {
    ...baseOptions(),
    onProgress(sent) { progress.push(sent); },
    onSuccess() {
      finish({ url: upload.url, previousUploads, firstProgress: progress[0] ?? null });
    },
    onError(err) {
      finish({ error: `phase2 onError: ${err}`, previousUploads }, 3);
    },
  };
  if (opts.resume === 'uploadUrl') options.uploadUrl = opts.uploadUrl;
  const upload = new Upload(await input(), options);
  if (opts.resume === 'storage') {
    const previous = await upload.findPreviousUploads();
    previousUploads = previous.map(({ uploadUrl, parallelUploadUrls, size }) => ({ uploadUrl, parallelUploadUrls, size }));
    if (previous.length > 0) upload.resumeFromPreviousUpload(previous[0]);
  }
  upload.start();
}

if (phase === 'phase1') await phase1();
else if (phase === 'phase2') await phase2();
else finish({ error: `unknown phase ${phase}` }, 9);
