// The seed's client (seed/resumable-file-upload.md, "Algorithm"): steps 1-3 verbatim, between
// the markers, wrapped in what a page needs around them: the XMLHttpRequest kept where a
// stop button can abort it (`window.seedXhr`), and the outcome of its load, error or abort.
// seed.test.mjs loads this into a page of the server's origin.
//
// `+file.lastModifiedDate` is the seed's own spelling. lastModifiedDate is non-standard: where a
// browser lacks it, it is NaN and the id `name-size-NaN`, the same on every try, which is all
// the algorithm needs.
window.seedUpload = async function seedUpload(file) {
  let xhr = window.seedXhr = new XMLHttpRequest();
  // ---- seed, step 1
  let fileId = file.name + '-' + file.size + '-' + +file.lastModifiedDate;
  // ---- seed, step 2
  let response = await fetch('status', {
    headers: {
      'X-File-Id': fileId
    }
  });

  // The server has that many bytes
  let startByte = +await response.text();
  // ---- seed, step 3
  xhr.open("POST", "upload", true);

  // File id, so that the server knows which file we upload
  xhr.setRequestHeader('X-File-Id', fileId);

  // The byte we're resuming from, so the server knows we're resuming
  xhr.setRequestHeader('X-Start-Byte', startByte);

  xhr.upload.onprogress = (e) => {
    console.log(`Uploaded ${startByte + e.loaded} of ${startByte + e.total}`);
  };

  // file can be from input.files[0] or another source
  xhr.send(file.slice(startByte));
  // ---- end of the seed's code
  return new Promise((resolve) => {
    const outcome = (event) => () => resolve({
      event,
      fileId,
      startByte,
      status: xhr.status,
      text: xhr.responseText,
      location: xhr.getResponseHeader('Location'),
    });
    xhr.onload = outcome('load');
    xhr.onerror = outcome('error');
    xhr.onabort = outcome('abort');
  });
};
