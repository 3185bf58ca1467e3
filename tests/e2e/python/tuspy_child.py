"""Child process for test_tuspy.py: each phase of an upload runs in its own process.

  python tuspy_child.py phase1-stop  '<json>'  upload up to stop_at, then exit
  python tuspy_child.py phase1-slow  '<json>'  upload slowly until killed by the parent
  python tuspy_child.py phase2       '<json>'  resume from the stored URL and finish

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


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def make_uploader():
    c = tus_client.TusClient(opts["endpoint"])
    return c.uploader(
        file_path=opts["file"],
        chunk_size=opts["chunk_size"],
        store_url=True,
        url_storage=FileStorage(opts["storage"]),
        metadata={"filename": os.path.basename(opts["file"])},
    )


if phase == "phase1-stop":
    up = make_uploader()
    if up.url is not None:
        emit({"error": f"fresh storage already had a URL: {up.url}"})
        sys.exit(2)
    up.upload(stop_at=opts["stop_at"])
    emit({"url": up.url, "offset": up.offset})

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
        emit({"offset": up.offset})
        time.sleep(opts["delay"])
    emit({"error": "upload completed before the parent killed this process"})
    sys.exit(3)

elif phase == "phase2":
    patches, posts = [], []
    real_patch, real_post = requests.patch, requests.post

    def patch(url, *a, **kw):
        patches.append({"url": url, "upload_offset": (kw.get("headers") or {}).get("upload-offset")})
        return real_patch(url, *a, **kw)

    def post(url, *a, **kw):
        posts.append(url)
        return real_post(url, *a, **kw)

    requests.patch, requests.post = patch, post

    up = make_uploader()  # looks the URL up in FileStorage and HEADs it for the offset
    stored_url, offset_before = up.url, up.offset
    if stored_url is None:
        emit({"error": "no URL found in FileStorage"})
        sys.exit(4)
    head = requests.head(stored_url, headers={"Tus-Resumable": "1.0.0"}, timeout=10)
    up.upload()
    emit({
        "url": up.url,
        "stored_url": stored_url,
        "offset_before": offset_before,
        "head_status": head.status_code,
        "head_offset": head.headers.get("Upload-Offset"),
        "patches": patches,
        "posts": posts,
        "final_offset": up.offset,
        "size": up.get_file_size(),
    })
else:
    emit({"error": f"unknown phase {phase}"})
    sys.exit(9)
