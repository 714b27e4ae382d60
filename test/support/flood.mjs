#!/usr/bin/env node
/**
 * A hostile client for the agent's HTTP servers, run inside a test namespace.
 *   flood.mjs HOST PORT COUNT half HOLD_MS   COUNT connections that send half a request and
 *                                            hold; prints how many the server closed
 *   flood.mjs HOST PORT COUNT get:PATH MS    COUNT GETs of PATH in flight for MS; prints
 *                                            the status codes seen
 * Prints one JSON line when done: { opened, closedByServer, errors, statuses }.
 */
import http from 'node:http';
import net from 'node:net';

const [host, portText, countText, mode, msText] = process.argv.slice(2);
const port = Number(portText);
const count = Number(countText);
const ms = Number(msText);
const result = { opened: 0, closedByServer: 0, errors: {}, statuses: {} };
const bump = (o, k) => (o[k] = (o[k] ?? 0) + 1);
const deadline = Date.now() + ms;
const sockets = new Set();

function half() {
  const s = net.connect({ host, port });
  sockets.add(s);
  s.on('connect', () => {
    result.opened++;
    s.write('GET /healthz HTTP/1.1\r\nHost: agent\r\n');
  });
  s.on('error', (e) => bump(result.errors, e.code ?? e.message));
  s.on('close', () => {
    if (sockets.delete(s) && Date.now() < deadline) result.closedByServer++;
  });
}

function get(path) {
  if (Date.now() >= deadline) return;
  const req = http.get({ host, port, path, agent: false, timeout: 5000 }, (res) => {
    bump(result.statuses, res.statusCode);
    res.resume();
    res.on('end', () => get(path));
  });
  req.on('error', (e) => {
    bump(result.errors, e.code ?? e.message);
    setTimeout(() => get(path), 50);
  });
  req.on('socket', () => result.opened++);
}

if (mode === 'half') for (let i = 0; i < count; i++) half();
else for (let i = 0; i < count; i++) get(mode.slice('get:'.length));

setTimeout(() => {
  for (const s of sockets) {
    sockets.delete(s);
    s.destroy();
  }
  process.stdout.write(`${JSON.stringify(result)}\n`);
  process.exit(0);
}, ms);
