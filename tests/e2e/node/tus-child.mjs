// Child process used by tus-js-client.test.mjs. Each phase runs in its own
// process so that resuming really happens from a fresh client.
//
//   node tus-child.mjs phase1 '<json>'   start an upload, abort it at >= abortAtFraction
//   node tus-child.mjs phase2 '<json>'   resume the upload and finish it
//
// Prints exactly one JSON line with the outcome on stdout.
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { Readable, Transform } from 'node:stream';
import { Upload, FileUrlStorage, DefaultHttpStack } from 'tus-js-client';

const [phase, rawOpts] = process.argv.slice(2);
const opts = JSON.parse(rawOpts);

function finish(obj, code = 0) {
  process.stdout.write(`${JSON.stringify(obj)}\n`, () => process.exit(code));
}

// Hard bound on the child's life time.
setTimeout(() => finish({ error: `phase ${phase} timed out` }, 4), opts.timeoutMs ?? 50000).unref();

// Delays every chunk of a request body a little, so that an upload over
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

class PacedHttpStack extends DefaultHttpStack {
  constructor(delayMs) {
    super();
    this.delayMs = delayMs;
  }
  createRequest(method, url) {
    const req = super.createRequest(method, url);
    const send = req.send.bind(req);
    req.send = (body = null) => {
      if (body instanceof Readable) {
        const paced = body.pipe(new Pacer(this.delayMs));
        paced.size = body.size; // used by the stack for Content-Length
        return send(paced);
      }
      return send(body);
    };
    return req;
  }
}

function baseOptions(requests) {
  const o = {
    endpoint: opts.endpoint,
    metadata: { filename: opts.filename ?? 'file.bin', filetype: 'application/octet-stream' },
    retryDelays: null, // report failures instead of hiding them behind retries
    onBeforeRequest(req) {
      requests.push({
        method: req.getMethod(),
        url: req.getURL(),
        uploadOffset: req.getHeader('Upload-Offset') ?? null,
        tusResumable: req.getHeader('Tus-Resumable') ?? null,
        interopVersion: req.getHeader('Upload-Draft-Interop-Version') ?? null,
        uploadComplete: req.getHeader('Upload-Complete') ?? null,
        contentType: req.getHeader('Content-Type') ?? null,
      });
    },
  };
  if (opts.protocol) o.protocol = opts.protocol; // 'tus-v1' (default), 'ietf-draft-03', 'ietf-draft-05'
  if (opts.chunkSize != null) o.chunkSize = opts.chunkSize;
  if (opts.storage) o.urlStorage = new FileUrlStorage(opts.storage);
  return o;
}

async function phase1() {
  const { size } = await stat(opts.file);
  const requests = [];
  let aborted = false;
  const upload = new Upload(createReadStream(opts.file), {
    ...baseOptions(requests),
    httpStack: new PacedHttpStack(opts.paceMs ?? 4),
    storeFingerprintForResuming: Boolean(opts.storage),
    onProgress(sent, total) {
      if (aborted || sent < opts.abortAtFraction * total) return;
      aborted = true;
      // Abort synchronously inside the progress callback: nothing more is
      // written into the request after this point.
      upload.abort().then(() => {
        finish({ url: upload.url, sentAtAbort: sent, total, size, requests });
      });
    },
    onSuccess() {
      finish({ error: 'upload completed before it could be aborted', url: upload.url, requests }, 2);
    },
    onError(err) {
      if (!aborted) finish({ error: `phase1 onError: ${err}`, url: upload.url, requests }, 3);
    },
  });
  upload.start();
}

async function phase2() {
  const { size } = await stat(opts.file);
  const requests = [];
  const progress = [];

  // What the server says before the client touches the upload (asked in the client's protocol).
  const head = await fetch(opts.uploadUrl, { method: 'HEAD', headers: opts.headHeaders ?? { 'Tus-Resumable': '1.0.0' } });
  const headOffset = head.headers.get('upload-offset');

  const options = {
    ...baseOptions(requests),
    onProgress(sent) { progress.push(sent); },
    onSuccess() {
      finish({
        url: upload.url,
        size,
        headStatus: head.status,
        headOffset: headOffset == null ? null : Number(headOffset),
        previousUploads,
        requests,
        firstProgress: progress[0] ?? null,
        progressCount: progress.length,
      });
    },
    onError(err) {
      finish({ error: `phase2 onError: ${err}`, requests, headOffset }, 3);
    },
  };
  let previousUploads = null;
  if (opts.resume === 'uploadUrl') options.uploadUrl = opts.uploadUrl;

  const upload = new Upload(createReadStream(opts.file), options);
  if (opts.resume === 'storage') {
    const previous = await upload.findPreviousUploads();
    previousUploads = previous.map((p) => p.uploadUrl);
    if (previous.length === 0) {
      finish({ error: 'findPreviousUploads() found nothing in the URL storage', requests }, 5);
      return;
    }
    upload.resumeFromPreviousUpload(previous[0]);
  }
  upload.start();
}

if (phase === 'phase1') await phase1();
else if (phase === 'phase2') await phase2();
else finish({ error: `unknown phase ${phase}` }, 9);
