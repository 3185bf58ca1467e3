// The upload page: drop or pick files, watch them upload, pause, resume, cancel, download.
// Built on resumable.js; file names only ever reach the page through textContent.
import { Uploader } from './resumable.js';

const $ = (selector) => document.querySelector(selector);

/**
 * The server to upload to: the page's <meta name="resumable-server">, else where the page is
 * (its directory: behind a proxy under a path prefix, the uploads go under the prefix too).
 */
const server = new URL($('meta[name="resumable-server"]')?.content || './', location.href);
const uploader = new Uploader({ parallel: 3 });
/** What the banner shows (`offline`, `unreachable`, `online` or null) and its hide timer. */
let banner = { kind: null, timer: 0 };
/** The browser was offline since the banner last said all is well. */
let networkLost = false;

main();

function main() {
  applyQueryDefaults();
  setUpPicking();
  setUpBanner();
  showUnfinished();
  setInterval(refreshWaiting, 1000);
}

/** `?protocol=ietf&chunkSize=262144` preselect the options (handy for links and tests). */
function applyQueryDefaults() {
  const query = new URLSearchParams(location.search);
  for (const [name, select] of [['protocol', $('#protocol')], ['chunkSize', $('#chunk-size')]]) {
    const value = query.get(name);
    if (value !== null && [...select.options].some((option) => option.value === value)) {
      select.value = value;
    }
  }
}

function setUpPicking() {
  const drop = $('#drop');
  const picker = $('#picker');
  picker.addEventListener('change', () => {
    addFiles(picker.files);
    picker.value = ''; // picking the same file again must fire `change` again
  });
  // A file dropped anywhere must not make the browser navigate away from the page.
  for (const type of ['dragover', 'drop']) {
    window.addEventListener(type, (event) => event.preventDefault());
  }
  drop.addEventListener('dragenter', () => drop.classList.add('dragging'));
  drop.addEventListener('dragover', () => drop.classList.add('dragging'));
  drop.addEventListener('dragleave', () => drop.classList.remove('dragging'));
  drop.addEventListener('drop', (event) => {
    drop.classList.remove('dragging');
    addFiles(event.dataTransfer.files);
  });
}

function addFiles(files) {
  const protocol = $('#protocol').value;
  const endpoint = new URL(protocol === 'simple' ? './' : 'files/', server).href;
  const chunkSize = Number($('#chunk-size').value) || Infinity;
  for (const file of files) {
    const upload = uploader.add(file, { protocol, endpoint, chunkSize });
    $('#uploads').prepend(uploadRow(upload));
  }
  $('#legend').hidden = false;
  showUnfinished();
}

/** One upload's row; it keeps itself up to date. */
function uploadRow(upload) {
  const row = $('#upload-template').content.firstElementChild.cloneNode(true);
  const part = (name) => row.querySelector(`.${name}`);
  part('name').textContent = upload.file.name;
  part('name').title = upload.file.name;
  part('size').textContent = formatBytes(upload.size);
  part('pause').addEventListener('click', () => upload.pause());
  part('resume').addEventListener('click', () => upload.resume());
  part('cancel').addEventListener('click', () => upload.cancel());

  const speed = speedometer();
  let frame = 0;
  const render = () => {
    frame = 0;
    renderRow(row, upload, speed);
  };
  const schedule = () => { frame ||= requestAnimationFrame(render); };
  upload.addEventListener('progress', () => {
    speed.sample(upload.sent);
    schedule();
  });
  upload.addEventListener('statechange', () => {
    if (upload.state !== 'uploading') speed.reset();
    if (upload.state === 'done') speed.finish(upload.size);
    render();
    updateBanner();
  });
  row.refresh = render;
  render();
  return row;
}

function renderRow(row, upload, speed) {
  const percent = (bytes) => (upload.size ? (100 * bytes) / upload.size : 100);
  const part = (name) => row.querySelector(`.${name}`);
  row.dataset.state = upload.state;
  row.dataset.sent = upload.sent;
  row.dataset.confirmed = upload.confirmed;
  if (upload.url) row.dataset.url = upload.url;
  part('bar-sent').style.width = `${percent(upload.sent)}%`;
  part('bar-confirmed').style.width = `${percent(upload.confirmed)}%`;
  part('bar').setAttribute('aria-valuenow', Math.floor(percent(upload.confirmed)));
  part('figures').textContent = describe(upload, speed);
  const download = part('download');
  if (upload.state === 'done' && upload.url) download.href = upload.url;
  download.hidden = !(upload.state === 'done' && upload.url);
  part('resume').textContent = upload.state === 'failed' ? 'Retry' : 'Resume';
}

/** The line under a row's bar: what is happening, in words and numbers. */
function describe(upload, speed) {
  const confirmed = formatBytes(upload.confirmed);
  switch (upload.state) {
    case 'queued':
      return upload.confirmed ? `Waiting · ${confirmed} confirmed` : 'Waiting for a free slot…';
    case 'uploading': {
      const rate = speed.rate();
      const unconfirmed = upload.sent - upload.confirmed;
      const parts = [`${confirmed} confirmed`];
      if (unconfirmed > 0) parts.push(`${formatBytes(unconfirmed)} more sent`);
      if (rate > 0) {
        parts.push(`${formatBytes(rate)}/s`);
        parts.push(`${formatDuration((upload.size - upload.sent) / rate)} left`);
      }
      return parts.join(' · ');
    }
    case 'retrying': {
      const seconds = Math.max(0, Math.ceil((upload.retryAt - Date.now()) / 1000));
      const when = navigator.onLine ? `retrying in ${seconds} s` : 'waiting for the network';
      return `${reason(upload.error)} — ${when} · ${confirmed} confirmed`;
    }
    case 'paused':
      return `Paused · ${confirmed} confirmed`;
    case 'done':
      return `Done · ${speed.summary()}`;
    case 'cancelled':
      return 'Cancelled · deleted from the server';
    case 'failed':
      return `Failed: ${upload.error?.message ?? 'unknown error'}`;
  }
  return upload.state;
}

function reason(error) {
  const status = error?.status;
  if (!status) return 'Connection lost';
  if (status === 423) return 'Upload busy on the server';
  if (status === 503) return 'Server restarting';
  return `Server answered ${status}`;
}

/** Bytes per second over the last few seconds, and the whole upload's average. */
function speedometer() {
  const windowMs = 4000;
  let samples = [];
  let started = 0;
  let finished = 0;
  let total = 0;
  return {
    sample(bytes) {
      const now = performance.now();
      started ||= now;
      samples.push([now, bytes]);
      while (samples.length > 2 && now - samples[0][0] > windowMs) samples.shift();
    },
    reset() {
      samples = [];
    },
    rate() {
      if (samples.length < 2) return 0;
      const [[t0, b0], [t1, b1]] = [samples[0], samples[samples.length - 1]];
      return t1 - t0 < 250 ? 0 : ((b1 - b0) * 1000) / (t1 - t0);
    },
    finish(size) {
      finished = performance.now();
      total = size;
    },
    summary() {
      const seconds = started ? (finished - started) / 1000 : 0;
      return seconds > 0.5 ? `${formatBytes(total)} in ${formatDuration(seconds)}` : formatBytes(total);
    },
  };
}

/** Rows waiting for a retry count down every second. */
function refreshWaiting() {
  for (const row of document.querySelectorAll('.upload[data-state="retrying"]')) row.refresh();
}

// --- The banner: offline, server unreachable, back online.


function setUpBanner() {
  window.addEventListener('offline', updateBanner);
  window.addEventListener('online', updateBanner);
  updateBanner();
}

function updateBanner() {
  if (!navigator.onLine) {
    networkLost = true;
    return show('offline', 'You are offline. Uploads will continue by themselves when the connection is back.');
  }
  const stuck = uploader.uploads.find((upload) => upload.state === 'retrying');
  if (stuck) return show('unreachable', `${reason(stuck.error)} — retrying. Nothing confirmed is lost.`);
  if (banner.kind === 'offline' || banner.kind === 'unreachable') {
    flash('online', networkLost ? 'Back online — uploads are resuming.' : 'The server is back — uploads are resuming.');
    networkLost = false;
  } else if (banner.kind !== 'online') {
    hide();
  }
}

function flash(kind, message) {
  show(kind, message);
  banner.timer = setTimeout(() => {
    if (banner.kind === kind) hide();
  }, 4000);
}

function show(kind, message) {
  const element = $('#banner');
  clearTimeout(banner.timer);
  banner = { kind, timer: 0 };
  element.dataset.kind = kind;
  element.textContent = message;
  element.hidden = false;
}

function hide() {
  banner = { kind: null, timer: 0 };
  $('#banner').hidden = true;
}

// --- Uploads remembered from an earlier visit.

function showUnfinished() {
  const active = new Set(uploader.uploads.map((upload) => upload.key));
  const entries = uploader.remembered().filter((entry) => !active.has(entry.key));
  const list = $('#unfinished-list');
  list.replaceChildren(...entries.map(unfinishedItem));
  $('#unfinished').hidden = entries.length === 0;
}

function unfinishedItem(entry) {
  const item = document.createElement('li');
  const name = document.createElement('span');
  name.className = 'name';
  name.textContent = entry.name;
  const done = entry.size ? Math.floor((100 * entry.confirmed) / entry.size) : 0;
  const figures = document.createElement('span');
  figures.className = 'figures';
  figures.textContent = `${done}% of ${formatBytes(entry.size)}`;
  const forget = document.createElement('button');
  forget.type = 'button';
  forget.textContent = 'Forget';
  forget.addEventListener('click', () => {
    uploader.forget(entry);
    showUnfinished();
  });
  item.append(name, figures, forget);
  return item;
}

// --- Formatting.

function formatBytes(bytes) {
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit++;
  }
  const digits = unit === 0 || value >= 100 ? 0 : 1;
  return `${value.toFixed(digits)} ${units[unit]}`;
}

function formatDuration(seconds) {
  if (!Number.isFinite(seconds)) return '—';
  const s = Math.max(1, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}
