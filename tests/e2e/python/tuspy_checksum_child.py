"""Child process for test_tuspy_checksum.py: tuspy with upload_checksum=True, one
phase per process. Every POST/PATCH tuspy sends is logged (URL, Upload-Offset,
Upload-Checksum, body size, status, response Upload-Offset).

  python tuspy_checksum_child.py phase1-stop '<json>'  upload up to stop_at, then exit
  python tuspy_checksum_child.py phase1-slow '<json>'  upload chunk by chunk until killed
  python tuspy_checksum_child.py phase2      '<json>'  resume from the stored URL and finish

Prints JSON lines on stdout; the last one is the outcome.
"""
import json
import os
import sys
import time

import requests
from tusclient import client as tus_client
from tusclient.storage.filestorage import FileStorage

phase, raw = sys.argv[1], sys.argv[2]
opts = json.loads(raw)
log = []


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


real_patch, real_post = requests.patch, requests.post


class HalfThenHold:
    """A PATCH body handed over in 16 KiB pieces; once half of it has gone to the
    socket it announces {"half": offset, "sent": bytes handed over} on stdout and holds
    the request open (at most `hold` s) so that the parent can kill this process mid-PATCH."""

    def __init__(self, data: bytes, offset: str, hold: float):
        self.data, self.pos, self.offset, self.hold = data, 0, offset, hold
        self.announced = False

    def __len__(self):  # requests derives Content-Length from it
        return len(self.data)

    def read(self, n=-1):
        if not self.announced and self.pos >= len(self.data) // 2:
            self.announced = True
            emit({"half": int(self.offset), "sent": self.pos})
            time.sleep(self.hold)
        n = 16384 if n is None or n < 0 else min(n, 16384)
        piece = self.data[self.pos:self.pos + n]
        self.pos += len(piece)
        return piece


def patch(url, *a, **kw):
    headers = {k.lower(): v for k, v in (kw.get("headers") or {}).items()}
    entry = {"method": "PATCH", "url": url, "upload_offset": headers.get("upload-offset"),
             "upload_checksum": headers.get("upload-checksum"), "size": len(kw.get("data") or b"")}
    log.append(entry)
    if "cut_from" in opts and int(headers.get("upload-offset")) >= opts["cut_from"]:
        kw["data"] = HalfThenHold(kw["data"], headers.get("upload-offset"), opts["hold"])
    resp = real_patch(url, *a, **kw)
    entry["status"] = resp.status_code
    entry["response_offset"] = resp.headers.get("Upload-Offset")
    return resp


def post(url, *a, **kw):
    entry = {"method": "POST", "url": url}
    log.append(entry)
    resp = real_post(url, *a, **kw)
    entry["status"] = resp.status_code
    return resp


requests.patch, requests.post = patch, post  # tuspy calls requests.patch / requests.post


def make_uploader():
    c = tus_client.TusClient(opts["endpoint"])
    return c.uploader(
        file_path=opts["file"],
        chunk_size=opts["chunk_size"],
        store_url=True,
        url_storage=FileStorage(opts["storage"]),
        metadata={"filename": os.path.basename(opts["file"])},
        upload_checksum=True,
    )


if phase == "phase1-stop":
    up = make_uploader()
    if up.url is not None:
        emit({"error": f"fresh storage already had a URL: {up.url}"})
        sys.exit(2)
    up.upload(stop_at=opts["stop_at"])
    emit({"url": up.url, "offset": up.offset, "log": log})

elif phase == "phase1-slow":
    up = make_uploader()
    if up.url is not None:
        emit({"error": f"fresh storage already had a URL: {up.url}"})
        sys.exit(2)
    size = up.get_file_size()
    up.set_url(up.create_url())  # also persists it in the FileStorage
    up.offset = 0
    emit({"url": up.url})
    while up.offset < size:
        up.upload_chunk()
        emit({"offset": up.offset, "last": log[-1]})
        time.sleep(opts["delay"])
    emit({"error": "upload completed before the parent killed this process"})
    sys.exit(3)

elif phase == "phase2":
    up = make_uploader()  # looks the URL up in FileStorage and HEADs it for the offset
    stored_url, offset_before = up.url, up.offset
    if stored_url is None:
        emit({"error": "no URL found in FileStorage"})
        sys.exit(4)
    up.upload()
    emit({"url": up.url, "stored_url": stored_url, "offset_before": offset_before,
          "final_offset": up.offset, "size": up.get_file_size(), "log": log})
else:
    emit({"error": f"unknown phase {phase}"})
    sys.exit(9)
