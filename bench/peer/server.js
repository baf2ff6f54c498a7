// The peer Chorus is measured against: a Node.js `ws` broadcast server that
// does the same jobs as Chorus in the benchmarks, over a minimal plain-JSON
// protocol with no signatures and no plugins.
//
// Run with: node bench/peer/server.js --port 9901
//
// The protocol, mirroring the parts of Chorus the load generator uses:
// - WebSocket `ws://host:port/?user_id=N`: the first frame is
//   `{"action":"connected","user_id":N}`; a newer connection of the same
//   user replaces the older one.
// - client frame `{"action":"ping",...}`: answered with
//   `{"action":"pong","server_time":<unix s>}`.
// - `POST /api/v1/actions` with a JSON body:
//   - `{"action":"enter_room","user_id":N,"channel_name":"…"}` makes the
//     user a member of the room (no notification: the benchmarks enter
//     members before they connect, in Chorus too);
//   - `{"action":"send_gift","channel_name":"…","notify_type":"bc","gift":{…}}`
//     sends `{"action":"send_gift","notify_type","channel_name","gift","msg_id"}`
//     to every connected member of the room, serialized once, as Chorus does.
//   Answers `{"error_code":0,"error_reason":"","msg_ids":[…]}`.
// - `GET /healthz`: `ok`, for the bench script to wait on.
//
// A closed connection leaves its room, as a disconnect does in Chorus.
// Nothing here is bounded: it is the idiomatic `ws` broadcast server
// (`client.send(text)` per member), which is what a team would write.

'use strict';

const http = require('node:http');
const { WebSocketServer } = require('ws');

/** The `--port` argument, or 9901. */
function portFromArgs(argv) {
  const i = argv.indexOf('--port');
  return i >= 0 ? Number(argv[i + 1]) : 9901;
}

/** user_id -> the user's live socket. */
const sockets = new Map();
/** channel_name -> Set of member user_ids. */
const rooms = new Map();
/** user_id -> channel_name the user is in. */
const roomOf = new Map();
/** Counter behind each notification's msg_id. */
let nextMsgId = 1;

/** Makes `userId` a member of `channel`, leaving any other room first. */
function enterRoom(userId, channel) {
  leaveRoom(userId);
  if (!rooms.has(channel)) rooms.set(channel, new Set());
  rooms.get(channel).add(userId);
  roomOf.set(userId, channel);
}

/** Removes `userId` from its room, if any. */
function leaveRoom(userId) {
  const channel = roomOf.get(userId);
  if (channel === undefined) return;
  roomOf.delete(userId);
  const members = rooms.get(channel);
  members.delete(userId);
  if (members.size === 0) rooms.delete(channel);
}

/** Sends `text` to every connected member of `channel`; returns how many. */
function broadcast(channel, text) {
  const members = rooms.get(channel);
  if (!members) return 0;
  let sent = 0;
  for (const userId of members) {
    const ws = sockets.get(userId);
    if (ws !== undefined && ws.readyState === ws.OPEN) {
      ws.send(text);
      sent += 1;
    }
  }
  return sent;
}

/** Runs one server-API action; returns [status, answer]. */
function runAction(body) {
  switch (body.action) {
    case 'enter_room':
      enterRoom(body.user_id, body.channel_name);
      return [200, { error_code: 0, error_reason: '', msg_ids: [] }];
    case 'send_gift': {
      const msgId = `m${nextMsgId++}`;
      const frame = {
        action: 'send_gift',
        notify_type: body.notify_type,
        channel_name: body.channel_name,
        gift: body.gift,
        msg_id: msgId,
      };
      broadcast(body.channel_name, JSON.stringify(frame));
      return [200, { error_code: 0, error_reason: '', msg_ids: [msgId] }];
    }
    default:
      return [404, { error_code: 1007, error_reason: 'unknown action' }];
  }
}

/** Answers `res` with `status` and a JSON body. */
function answer(res, status, value) {
  const text = JSON.stringify(value);
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
  });
  res.end(text);
}

/** The HTTP side: the server API and the health check. */
function handleHttp(req, res) {
  if (req.method === 'GET' && req.url === '/healthz') {
    res.end('ok');
    return;
  }
  if (req.method !== 'POST' || req.url !== '/api/v1/actions') {
    answer(res, 404, { error_code: 1007, error_reason: 'no such route' });
    return;
  }
  const chunks = [];
  req.on('data', (chunk) => chunks.push(chunk));
  req.on('end', () => {
    let body;
    try {
      body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    } catch {
      answer(res, 400, { error_code: 1001, error_reason: 'not JSON' });
      return;
    }
    const [status, value] = runAction(body);
    answer(res, status, value);
  });
}

/** A new WebSocket: register it, greet it, answer its pings. */
function handleConnection(ws, req) {
  const url = new URL(req.url, 'http://peer');
  const userId = Number(url.searchParams.get('user_id'));
  const previous = sockets.get(userId);
  if (previous !== undefined) previous.close(4009, 'replaced');
  sockets.set(userId, ws);
  ws.send(JSON.stringify({ action: 'connected', user_id: userId }));
  ws.on('message', (data, isBinary) => {
    if (isBinary) return;
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    if (frame.action === 'ping') {
      ws.send(JSON.stringify({ action: 'pong', server_time: Math.floor(Date.now() / 1000) }));
    }
  });
  ws.on('close', () => {
    if (sockets.get(userId) !== ws) return;
    sockets.delete(userId);
    leaveRoom(userId);
  });
  ws.on('error', () => {});
}

function main() {
  const port = portFromArgs(process.argv);
  const server = http.createServer(handleHttp);
  const wss = new WebSocketServer({ server, perMessageDeflate: false });
  wss.on('connection', handleConnection);
  server.listen(port, '127.0.0.1', () => {
    console.error(`peer listening on 127.0.0.1:${port}`);
  });
  process.on('SIGTERM', () => process.exit(0));
  process.on('SIGINT', () => process.exit(0));
}

main();
