// An independent tus server for the CLI's tests: @tus/server with @tus/file-store.
//   node tests/peer/server.mjs DIRECTORY
// Listens on 127.0.0.1 on a free port and prints one line, `listening on http://127.0.0.1:PORT`;
// uploads are created at /files/ and stored as files in DIRECTORY (named by upload id).
import http from 'node:http';
import { Server } from '@tus/server';
import { FileStore } from '@tus/file-store';

const directory = process.argv[2];
if (!directory) {
  console.error('usage: node server.mjs DIRECTORY');
  process.exit(2);
}

const tus = new Server({ path: '/files', datastore: new FileStore({ directory }) });
const server = http.createServer((req, res) => tus.handle(req, res));
server.listen(0, '127.0.0.1', () => {
  console.log(`listening on http://127.0.0.1:${server.address().port}`);
});
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
