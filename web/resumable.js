/**
 * resumable.js: a dependency-free browser client for resumable uploads.
 *
 * Speaks tus 1.0.0 (creation, HEAD/PATCH, termination) by default; on request the IETF draft
 * "Resumable Uploads for HTTP" (interop version 8: `POST` with `Upload-Complete`, `HEAD` for the
 * offset, `PATCH` with `application/partial-upload`, `DELETE`) or the seed's simple protocol
 * (`GET /status`, `POST /upload`). Each upload reports two figures: bytes *sent* (what the
 * browser handed to the network) and bytes *confirmed* (what the server says it has stored).
 * Only the confirmed figure is used to resume.
 *
 * Uploads resume by themselves after a network loss (retries with backoff and jitter, and at
 * once on the `online` event), after a server restart, and after a page reload: the upload URL
 * is remembered in localStorage under a fingerprint of the file and the endpoint, and forgotten
 * when the upload finishes or is cancelled.
 *
 * Checksums: no `Upload-Checksum` is sent, although the server verifies it: SubtleCrypto hashes
 * whole buffers only, so each chunk would have to sit in memory. The server's offset
 * (fdatasync'ed before it is reported) is the integrity guarantee; verify a finished file by
 * downloading it if you need more.
 *
 * @example
 * import { Uploader } from 'https://uploads.example.com/resumable.js';
 * const uploader = new Uploader({ endpoint: 'https://uploads.example.com/files/' });
 * const upload = uploader.add(file);
 * upload.addEventListener('progress', () => console.log(upload.sent, upload.confirmed));
 * upload.addEventListener('statechange', () => console.log(upload.state, upload.url));
 *
 * @module resumable
 */

const TUS_VERSION = '1.0.0';
/** The IETF draft's interop version spoken (draft-ietf-httpbis-resumable-upload-09 and later). */
const IETF_INTEROP_VERSION = '8';
const STORAGE_PREFIX = 'resumable:';
/** Consecutive 409s answered at once before they count as failures (a runaway guard). */
const MAX_QUICK_CONFLICTS = 3;

/**
 * @typedef {object} UploaderOptions
 * @property {'tus'|'simple'|'ietf'} [protocol='tus'] Which protocol to speak: tus 1.0.0, the
 *   seed's simple protocol, or the IETF resumable-upload draft (interop version 8).
 * @property {string|URL} [endpoint] tus and ietf: the creation URL (default `/files/`). simple:
 *   the base URL of `status` and `upload` (default `/`). Relative URLs resolve against the page;
 *   use an absolute URL for a server on another origin.
 * @property {number} [chunkSize=Infinity] Largest request body in bytes (Infinity: the rest of
 *   the file in one request; the server keeps the part of an interrupted request that arrived).
 * @property {number} [parallel=3] How many uploads run at once; the others wait in order.
 * @property {Record<string,string>|(() => Record<string,string>|Promise<Record<string,string>>)} [headers]
 *   Extra request headers, e.g. `{ Authorization: 'Bearer ...' }`, or a function returning them
 *   (called before every request, so a token can be refreshed).
 * @property {number} [minRetryDelay=500] First retry delay in ms; doubled per failure.
 * @property {number} [maxRetryDelay=15000] Longest retry delay in ms.
 * @property {number} [maxRetries=Infinity] Failures in a row (without progress) before giving up.
 * @property {number} [stallTimeout=30000] A request silent this long (ms) is aborted and retried.
 * @property {Storage|null} [storage=localStorage] Where upload URLs are remembered; null to
 *   remember nothing.
 */

/** @typedef {'queued'|'uploading'|'retrying'|'paused'|'done'|'cancelled'|'failed'} UploadState */

/**
 * A remembered, unfinished upload (see {@link Uploader#remembered}).
 * @typedef {object} RememberedUpload
 * @property {string} name
 * @property {number} size
 * @property {number} confirmed Bytes the server had confirmed when last seen.
 * @property {string|null} url
 * @property {number} updated When it was last seen (ms since the epoch).
 * @property {string} key Its storage key; the same as {@link Upload#key} for the same file.
 */

/** An HTTP failure: `status` 0 means the network failed or the request stalled. */
export class UploadError extends Error {
  /**
   * @param {number} status
   * @param {string} message
   * @param {number|null} [offset] The server's offset, when the response carried one.
   */
  constructor(status, message, offset = null) {
    super(message);
    this.name = 'UploadError';
    this.status = status;
    this.offset = offset;
  }
}

/** Uploads files, several at once, and keeps them going. */
export class Uploader extends EventTarget {
  /** @type {Upload[]} Every upload added, in order. */
  uploads = [];

  /** @param {UploaderOptions} [options] */
  constructor(options = {}) {
    super();
    this.options = withDefaults(options);
    this.#listen();
  }

  /**
   * Queues a file. It starts when fewer than `parallel` uploads are running.
   * @param {File} file
   * @param {UploaderOptions & {metadata?: Record<string,string>}} [overrides] Options for this
   *   file only; `metadata` adds tus metadata (`filename` and `filetype` are always sent; ietf
   *   sends them as `Content-Disposition` and `Content-Type`, the rest as `Upload-Metadata`).
   * @returns {Upload}
   */
  add(file, overrides = {}) {
    const upload = new Upload(file, withDefaults({ ...this.options, ...overrides }), () => this.#pump());
    this.uploads.push(upload);
    this.#pump();
    return upload;
  }

  /**
   * Unfinished uploads remembered from earlier visits (pick the same file again to continue).
   * @returns {RememberedUpload[]}
   */
  remembered() {
    const storage = this.options.storage;
    if (!storage) return [];
    const found = [];
    for (let i = 0; i < storage.length; i++) {
      const key = storage.key(i);
      if (!key?.startsWith(STORAGE_PREFIX)) continue;
      const entry = readEntry(storage, key);
      if (entry) found.push({ ...entry, key });
    }
    return found.sort((a, b) => b.updated - a.updated);
  }

  /**
   * Forgets a remembered upload here (the server drops unfinished uploads when they expire).
   * @param {RememberedUpload} entry
   */
  forget(entry) {
    removeEntry(this.options.storage, entry.key);
  }

  /** Starts queued uploads while fewer than `parallel` are running. */
  #pump() {
    const running = this.uploads.filter((upload) => upload.isRunning).length;
    const queued = this.uploads.filter((upload) => upload.state === 'queued');
    for (const upload of queued.slice(0, Math.max(0, this.options.parallel - running))) {
      upload.start();
    }
  }

  #listen() {
    if (typeof window === 'undefined') return;
    // Back online: retry now instead of waiting out the backoff.
    window.addEventListener('online', () => {
      for (const upload of this.uploads) upload.wake();
    });
  }
}

/** One file's upload. Events: `progress`, `statechange`. */
export class Upload extends EventTarget {
  /** @type {UploadState} */
  state = 'queued';
  /** Bytes handed to the network (may include bytes the server never got). */
  sent = 0;
  /** Bytes the server has confirmed it stores. */
  confirmed = 0;
  /** The upload's URL on the server (tus, ietf: from creation; simple: from the first response). */
  url = null;
  /** @type {UploadError|Error|null} The last failure (while retrying, or why it failed). */
  error = null;
  /** When the next retry happens (ms since the epoch), while `state` is `retrying`. */
  retryAt = 0;

  #options;
  #schedule;
  #protocol;
  #controller = null;
  #wake = null;
  #failures = 0;
  #conflicts = 0;
  #restarted = false;

  /**
   * @param {File} file
   * @param {Required<UploaderOptions> & {metadata?: Record<string,string>}} options
   * @param {() => void} schedule Asks the uploader to start queued uploads.
   */
  constructor(file, options, schedule) {
    super();
    this.file = file;
    this.size = file.size;
    this.#options = options;
    this.#schedule = schedule;
    this.#protocol = PROTOCOLS[options.protocol] ?? tusProtocol;
    /** Where the upload goes, as an absolute URL. */
    this.endpoint = new URL(options.endpoint, baseUrl()).href;
    /** Identifies this file at this endpoint in storage, across page loads. */
    this.key = STORAGE_PREFIX + JSON.stringify([options.protocol, this.endpoint, file.name, file.size, file.lastModified]);
    this.url = this.#recall()?.url ?? null;
  }

  /** True while the upload holds one of the uploader's `parallel` slots. */
  get isRunning() {
    return this.state === 'uploading' || this.state === 'retrying';
  }

  /** Stops sending; `resume()` continues from the server's offset. */
  pause() {
    if (!this.isRunning && this.state !== 'queued') return;
    this.#stop();
    this.#setState('paused');
    this.#schedule();
  }

  /** Continues a paused or failed upload. */
  resume() {
    if (this.state !== 'paused' && this.state !== 'failed') return;
    this.#failures = 0;
    this.#setState('queued');
    this.#schedule();
  }

  /**
   * Stops the upload and deletes it on the server (the simple protocol can only delete it once
   * the server has named it, i.e. after its first successful request).
   * @returns {Promise<void>}
   */
  async cancel() {
    if (this.state === 'done' || this.state === 'cancelled') return;
    this.#stop();
    this.#setState('cancelled');
    this.#forget();
    this.#schedule();
    if (this.url) {
      await this.#protocol.terminate(this.#context()).catch((error) => { this.error = error; });
    }
  }

  /** Ends a retry's wait early (the uploader calls it when the network is back). */
  wake() {
    this.#wake?.();
  }

  /** Starts a queued upload; the uploader calls it when a slot is free. */
  start() {
    if (this.state !== 'queued') return;
    this.#controller = new AbortController();
    this.#setState('uploading');
    this.#run(this.#controller.signal);
  }

  /** The upload's life: learn the offset, send chunks, recover from failures. */
  async #run(signal) {
    let located = false;
    for (;;) {
      try {
        if (!located) {
          const complete = await this.#locate(signal);
          located = true;
          if (complete) break;
        }
        if (await this.#sendChunk(signal)) break;
        this.#conflicts = 0;
      } catch (error) {
        if (signal.aborted) return;
        located = await this.#recover(error, signal);
        if (signal.aborted) return;
        if (this.state === 'failed') return;
        this.#setState('uploading');
      }
    }
    if (signal.aborted) return; // paused or cancelled as the last response came in
    this.#forget();
    this.#setState('done');
    this.#schedule();
  }

  /** Learns where to continue; true when the server already has the whole file. */
  async #locate(signal) {
    const { offset, url, complete } = await this.#protocol.locate(this.#context(), signal);
    this.#confirm(offset, url);
    return complete ?? (offset === this.size && (this.size > 0 || this.#protocol.createsEmpty));
  }

  /** Sends the next chunk; true when the server confirms the whole file. */
  async #sendChunk(signal) {
    const start = this.confirmed;
    const end = Math.min(this.size, start + this.#options.chunkSize);
    const onProgress = (loaded) => this.#progress(this.confirmed, start + loaded);
    const { offset, url, complete } = await this.#protocol.send(this.#context(), start, end, signal, onProgress);
    if (offset > start) this.#failures = 0;
    this.#confirm(offset, url);
    return complete ?? offset === this.size;
  }

  /** Takes the server's word for the offset (and the URL, if it named one), and remembers it. */
  #confirm(offset, url) {
    if (url) this.url = url;
    this.#progress(offset, offset);
    this.#remember();
  }

  /** @returns {Context} */
  #context() {
    const options = this.#options;
    const metadata = { filename: this.file.name, ...options.metadata };
    if (this.file.type) metadata.filetype = this.file.type;
    return {
      file: this.file,
      endpoint: this.endpoint,
      url: this.url,
      metadata,
      http: (init) => request(init, options),
    };
  }

  /**
   * Decides what a failure means. Returns whether the confirmed offset is still known (so the
   * next step can send at once); throws nothing: fatal errors end in the `failed` state.
   */
  async #recover(error, signal) {
    this.error = error;
    const status = error instanceof UploadError ? error.status : -1;
    if (status === 409 && error.offset !== null && this.#conflicts++ < MAX_QUICK_CONFLICTS) {
      this.#progress(error.offset, error.offset);
      return true;
    }
    if ((status === 404 || status === 410) && !this.#restarted) {
      // The upload is gone (expired, deleted, or a URL remembered from long ago): start over.
      this.#restarted = true;
      this.#forget();
      this.url = null;
      this.#progress(0, 0);
      return false;
    }
    if (!isRetryable(status) || ++this.#failures > this.#options.maxRetries) {
      this.#setState('failed');
      this.#schedule();
      return false;
    }
    await this.#waitToRetry(signal);
    return false;
  }

  /** Waits out the backoff (or until `online`); while offline, waits for the network. */
  async #waitToRetry(signal) {
    const { minRetryDelay, maxRetryDelay } = this.#options;
    const backoff = Math.min(maxRetryDelay, minRetryDelay * 2 ** (this.#failures - 1));
    const offline = typeof navigator !== 'undefined' && navigator.onLine === false;
    const delay = offline ? maxRetryDelay : backoff * (0.5 + Math.random() / 2);
    this.retryAt = Date.now() + delay;
    this.#setState('retrying');
    await new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        signal.removeEventListener('abort', done);
        this.#wake = null;
        resolve();
      };
      const timer = setTimeout(done, delay);
      signal.addEventListener('abort', done);
      this.#wake = done;
    });
  }

  #stop() {
    this.#controller?.abort();
    this.#controller = null;
    this.wake();
  }

  #progress(confirmed, sent) {
    this.confirmed = confirmed;
    this.sent = Math.max(confirmed, Math.min(sent, this.size));
    this.dispatchEvent(new Event('progress'));
  }

  #setState(state) {
    if (state === this.state) return;
    this.state = state;
    if (state === 'uploading' || state === 'done') this.error = null;
    this.dispatchEvent(new Event('statechange'));
  }

  #recall() {
    const storage = this.#options.storage;
    return storage ? readEntry(storage, this.key) : null;
  }

  #remember() {
    const entry = {
      name: this.file.name,
      size: this.size,
      confirmed: this.confirmed,
      url: this.url,
      updated: Date.now(),
    };
    try {
      this.#options.storage?.setItem(this.key, JSON.stringify(entry));
    } catch {
      // Storage full or disabled: the upload still works, it just won't survive a reload.
    }
  }

  #forget() {
    removeEntry(this.#options.storage, this.key);
  }
}

/**
 * What a protocol needs to know about an upload: the file, where it goes, its URL if known, and
 * `http` to send a request with the upload's extra headers and stall timeout.
 * @typedef {object} Context
 * @property {File} file
 * @property {string} endpoint
 * @property {string|null} url
 * @property {Record<string,string>} metadata
 * @property {(init: object) => Promise<Response>} http
 */

/**
 * What a protocol step learnt: the server's offset, the upload's URL when the server named it,
 * and whether the upload is complete when the server says so (otherwise: offset === size).
 * @typedef {{offset: number, url?: string, complete?: boolean}} Step
 */

/** tus 1.0.0: create once, then HEAD to learn the offset and PATCH from it. */
const tusProtocol = {
  /** A zero-byte tus upload is complete once created. */
  createsEmpty: true,

  /** The offset to continue from; creates the upload when there is none (or it is another file's). */
  async locate(context, signal) {
    if (context.url) {
      const response = await context.http({ method: 'HEAD', url: context.url, headers: tusHeaders(), signal });
      expect(response, 200, 204);
      const length = response.header('Upload-Length');
      if (length === null || Number(length) === context.file.size) return { offset: offsetOf(response) };
    }
    return tusProtocol.create(context, signal);
  },

  async create(context, signal) {
    const headers = tusHeaders({
      'Upload-Length': String(context.file.size),
      'Upload-Metadata': encodeMetadata(context.metadata),
    });
    const response = await context.http({ method: 'POST', url: context.endpoint, headers, signal });
    expect(response, 201);
    const location = response.header('Location');
    if (!location) throw new UploadError(response.status, 'the server sent no Location');
    return { offset: 0, url: new URL(location, context.endpoint).href };
  },

  async send(context, start, end, signal, onProgress) {
    const headers = tusHeaders({
      'Upload-Offset': String(start),
      'Content-Type': 'application/offset+octet-stream',
    });
    const body = context.file.slice(start, end);
    const response = await context.http({ method: 'PATCH', url: context.url, headers, body, signal, onProgress });
    expect(response, 204, 200);
    return { offset: offsetOf(response) };
  },

  async terminate(context) {
    const response = await context.http({ method: 'DELETE', url: context.url, headers: tusHeaders() });
    if (response.status !== 404 && response.status !== 410) expect(response, 204, 200);
  },
};

/** The seed's protocol: `GET status` for the count, `POST upload` from it. */
const simpleProtocol = {
  /** `/status` says 0 for unknown ids too, so a zero-byte file still needs one POST. */
  createsEmpty: false,

  async locate(context, signal) {
    const url = new URL('status', context.endpoint).href;
    const response = await context.http({ method: 'GET', url, headers: fileIdHeaders(context.file), signal });
    expect(response, 200);
    return { offset: countOf(response) };
  },

  async send(context, start, end, signal, onProgress) {
    const url = new URL('upload', context.endpoint).href;
    const headers = {
      ...fileIdHeaders(context.file),
      'X-Start-Byte': String(start),
      'X-File-Size': String(context.file.size),
    };
    const body = context.file.slice(start, end);
    const response = await context.http({ method: 'POST', url, headers, body, signal, onProgress });
    expect(response, 200);
    const location = response.header('Location');
    return { offset: countOf(response), url: location ? new URL(location, context.endpoint).href : undefined };
  },

  // A simple upload is a tus upload too: the URL its responses name can be deleted with tus.
  terminate: (context) => tusProtocol.terminate(context),
};

/**
 * The IETF draft "Resumable Uploads for HTTP", interop version 8: `POST` creates (with
 * `Upload-Complete: ?0` and no content), `HEAD` reads `Upload-Offset` and `Upload-Complete`,
 * `PATCH` appends (`application/partial-upload`, `Upload-Complete: ?1` on the last chunk).
 */
const ietfProtocol = {
  /** The server says `Upload-Complete: ?1` for a created zero-byte upload. */
  createsEmpty: true,

  /** The offset to continue from; creates the upload when there is none (or it is another file's). */
  async locate(context, signal) {
    if (context.url) {
      const response = await context.http({ method: 'HEAD', url: context.url, headers: ietfHeaders(), signal });
      expect(response, 204, 200);
      const step = ietfStep(response);
      const length = response.header('Upload-Length');
      const sameFile = length === null || Number(length) === context.file.size;
      // Complete at another length is another file's upload, like a different Upload-Length.
      if (sameFile && !(step.complete && step.offset !== context.file.size)) return step;
    }
    return ietfProtocol.create(context, signal);
  },

  async create(context, signal) {
    const { file, metadata } = context;
    const { filename, filetype, ...rest } = metadata;
    const headers = ietfHeaders({
      'Upload-Complete': '?0',
      'Upload-Length': String(file.size),
      'Content-Disposition': `inline; filename*=UTF-8''${encodeRfc8187(filename)}`,
    });
    if (filetype) headers['Content-Type'] = filetype;
    if (Object.keys(rest).length > 0) headers['Upload-Metadata'] = encodeMetadata(rest);
    const response = await context.http({ method: 'POST', url: context.endpoint, headers, signal });
    expect(response, 201);
    const location = response.header('Location');
    if (!location) throw new UploadError(response.status, 'the server sent no Location');
    return { ...ietfStep(response), url: new URL(location, context.endpoint).href };
  },

  async send(context, start, end, signal, onProgress) {
    const last = end === context.file.size;
    const headers = ietfHeaders({
      'Upload-Offset': String(start),
      'Upload-Complete': last ? '?1' : '?0',
      'Content-Type': 'application/partial-upload',
    });
    const body = context.file.slice(start, end);
    const response = await context.http({ method: 'PATCH', url: context.url, headers, body, signal, onProgress });
    expect(response, 204, 200, 201);
    const step = ietfStep(response);
    if (step.complete && step.offset !== context.file.size) {
      throw new UploadError(response.status, `the server completed the upload at ${step.offset} of ${context.file.size} bytes`);
    }
    if (last && !step.complete && step.offset === context.file.size) {
      throw new UploadError(response.status, 'the server did not complete the upload after its last byte');
    }
    return step;
  },

  async terminate(context) {
    const response = await context.http({ method: 'DELETE', url: context.url, headers: ietfHeaders() });
    if (response.status !== 404 && response.status !== 410) expect(response, 204, 200);
  },
};

const PROTOCOLS = { tus: tusProtocol, simple: simpleProtocol, ietf: ietfProtocol };

function ietfHeaders(headers = {}) {
  return { 'Upload-Draft-Interop-Version': IETF_INTEROP_VERSION, ...headers };
}

/** The offset and completeness an IETF response states (`Upload-Complete` is a Boolean, `?1`/`?0`). */
function ietfStep(response) {
  const complete = response.header('Upload-Complete')?.trim();
  if (complete !== '?1' && complete !== '?0') {
    throw new UploadError(response.status, `the server sent no valid Upload-Complete (${complete ?? null})`);
  }
  return { offset: offsetOf(response), complete: complete === '?1' };
}

/** RFC 8187 `value-chars`: UTF-8, percent-encoded except for `attr-char`. */
function encodeRfc8187(text) {
  return encodeURIComponent(text).replace(/['()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

function tusHeaders(headers = {}) {
  return { 'Tus-Resumable': TUS_VERSION, ...headers };
}

/** The seed's file id (`name-size-lastModified`), percent-encoded so any name fits a header. */
function fileIdHeaders({ name, size, lastModified }) {
  return { 'X-File-Id': encodeURIComponent(`${name}-${size}-${lastModified}`) };
}

/**
 * Sends one request with XMLHttpRequest (fetch cannot report upload progress).
 * Resolves with any HTTP status; rejects with an UploadError of status 0 when the network fails,
 * nothing moves for `stallTimeout`, or the browser goes offline (a connection caught in a network
 * loss can hang for minutes; the server keeps what arrived, and the retry asks it how much), and
 * with the signal's reason when aborted.
 * @returns {Promise<Response>}
 */
async function request({ method, url, headers = {}, body = null, signal, onProgress }, options) {
  const extra = typeof options.headers === 'function' ? await options.headers() : options.headers;
  signal?.throwIfAborted();
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open(method, url);
    for (const [name, value] of Object.entries({ ...extra, ...headers })) {
      xhr.setRequestHeader(name, value);
    }
    let watchdog;
    const settle = (outcome) => {
      clearTimeout(watchdog);
      signal?.removeEventListener('abort', abort);
      globalThis.removeEventListener?.('offline', offline);
      outcome();
    };
    const fail = (message) => settle(() => reject(new UploadError(0, message)));
    const offline = () => {
      xhr.abort();
      fail('the browser went offline');
    };
    const arm = () => {
      clearTimeout(watchdog);
      watchdog = setTimeout(() => {
        xhr.abort();
        fail(`no progress for ${options.stallTimeout} ms`);
      }, options.stallTimeout);
    };
    const abort = () => {
      xhr.abort();
      settle(() => reject(signal.reason));
    };
    xhr.upload.onprogress = (event) => {
      arm();
      onProgress?.(event.loaded);
    };
    xhr.onload = () => settle(() => resolve(responseOf(xhr)));
    xhr.onerror = () => fail('network error');
    xhr.onabort = () => fail('request aborted');
    signal?.addEventListener('abort', abort);
    globalThis.addEventListener?.('offline', offline);
    arm();
    xhr.send(body);
  });
}

/**
 * The parts of a response the protocols read.
 * @typedef {{status: number, text: string, header: (name: string) => string|null}} Response
 */

/** @returns {Response} */
function responseOf(xhr) {
  return {
    status: xhr.status,
    text: xhr.responseText,
    header: (name) => xhr.getResponseHeader(name),
  };
}

/**
 * Throws an UploadError (with the server's offset, if any) unless the status is expected. Its
 * message is the server's: a problem's `detail` (RFC 9457, the IETF draft's errors), else the
 * body's text.
 */
function expect(response, ...statuses) {
  if (statuses.includes(response.status)) return;
  const problem = problemOf(response);
  const header = response.header('Upload-Offset');
  let offset = header !== null && /^\d+$/.test(header.trim()) ? Number(header) : null;
  if (offset === null && Number.isSafeInteger(problem?.['expected-offset'])) offset = problem['expected-offset'];
  const text = typeof problem?.detail === 'string' ? problem.detail : (problem?.title ?? response.text);
  const message = String(text).trim().slice(0, 200) || `HTTP ${response.status}`;
  throw new UploadError(response.status, message, offset);
}

/** A problem details body (`application/problem+json`), or null. */
function problemOf(response) {
  if (!/^application\/problem\+json\b/i.test(response.header('Content-Type') ?? '')) return null;
  try {
    const problem = JSON.parse(response.text);
    return problem && typeof problem === 'object' ? problem : null;
  } catch {
    return null;
  }
}

function offsetOf(response) {
  return parseCount(response.header('Upload-Offset'), response.status);
}

function countOf(response) {
  return parseCount(response.text.trim(), response.status);
}

function parseCount(text, status) {
  if (text === null || !/^\d+$/.test(text)) {
    throw new UploadError(status, `the server sent no valid offset (${text})`);
  }
  return Number(text);
}

/** Retry network failures, stalls, offset conflicts, busy uploads, rate limits, server errors. */
function isRetryable(status) {
  return [0, 408, 409, 423, 429].includes(status) ||
    (status >= 500 && ![501, 505, 507].includes(status));
}

/** tus `Upload-Metadata`: `key base64,key base64` with UTF-8 values. */
export function encodeMetadata(metadata) {
  return Object.entries(metadata)
    .map(([key, value]) => `${key} ${base64(String(value))}`)
    .join(',');
}

function base64(text) {
  let binary = '';
  for (const byte of new TextEncoder().encode(text)) binary += String.fromCharCode(byte);
  return btoa(binary);
}

function withDefaults(options) {
  const protocol = options.protocol ?? 'tus';
  return {
    protocol,
    endpoint: options.endpoint ?? (protocol === 'simple' ? '/' : '/files/'),
    chunkSize: options.chunkSize > 0 ? options.chunkSize : Infinity,
    parallel: options.parallel ?? 3,
    headers: options.headers ?? {},
    minRetryDelay: options.minRetryDelay ?? 500,
    maxRetryDelay: options.maxRetryDelay ?? 15000,
    maxRetries: options.maxRetries ?? Infinity,
    stallTimeout: options.stallTimeout ?? 30000,
    storage: options.storage === undefined ? defaultStorage() : options.storage,
    metadata: options.metadata ?? {},
  };
}

function defaultStorage() {
  try {
    return globalThis.localStorage ?? null;
  } catch {
    return null; // e.g. storage blocked for this origin
  }
}

function baseUrl() {
  return globalThis.document?.baseURI ?? globalThis.location?.href;
}

function readEntry(storage, key) {
  try {
    const entry = JSON.parse(storage.getItem(key));
    return entry && typeof entry === 'object' ? entry : null;
  } catch {
    return null;
  }
}

function removeEntry(storage, key) {
  try {
    storage?.removeItem(key);
  } catch {
    // Storage disabled: there is nothing to forget.
  }
}
