// The @tus/server peer for bench/run.sh: a FileStore server on 127.0.0.1.
//   node tus-node-server.mjs PORT DATA_DIR
// Prints "listening on http://127.0.0.1:PORT" once it accepts connections.
import http from 'node:http';
import { Server } from '@tus/server';
import { FileStore } from '@tus/file-store';

const [port, directory] = process.argv.slice(2);
if (!port || !directory) {
  console.error('usage: node tus-node-server.mjs PORT DATA_DIR');
  process.exit(2);
}

const tus = new Server({ path: '/files', datastore: new FileStore({ directory }) });
const server = http.createServer(tus.handle.bind(tus));
// Node's defaults would cut the idle-connection scenario short (requests must finish in 5 min,
// idle keep-alive sockets close after 5 s); the bench bounds its own waits.
server.requestTimeout = 0;
server.keepAliveTimeout = 60_000;
server.listen(Number(port), '127.0.0.1', () => {
  console.log(`listening on http://127.0.0.1:${port}`);
});
