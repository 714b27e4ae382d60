/**
 * The agent's HTTP servers face whatever the node's network sends: each has header,
 * request and idle timeouts and a cap on open connections, and an accept() that fails
 * (descriptors exhausted) is logged, never fatal. Debug work that costs event-loop time
 * goes through a gate that keeps it to a bounded share of it.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Logger } from 'pino';

/** A client gets this long to send its headers, and its whole request. */
const HEADERS_TIMEOUT_MS = 5_000;
const REQUEST_TIMEOUT_MS = 10_000;
const KEEP_ALIVE_TIMEOUT_MS = 5_000;
/** A connection that sends and receives nothing for this long is closed. */
const IDLE_TIMEOUT_MS = 30_000;
/** How often half-sent requests are checked against the timeouts (Node's default: 30 s). */
const CHECK_INTERVAL_MS = 1_000;
/** At most one error line per server this often: a flood must not become a log flood. */
const ERROR_LOG_INTERVAL_MS = 10_000;

export type Handler = (req: IncomingMessage, res: ServerResponse) => void;

export function createAgentServer(name: string, maxConnections: number, log: Logger, handler?: Handler): Server {
  const server = createServer(
    { headersTimeout: HEADERS_TIMEOUT_MS, requestTimeout: REQUEST_TIMEOUT_MS, keepAliveTimeout: KEEP_ALIVE_TIMEOUT_MS, connectionsCheckingInterval: CHECK_INTERVAL_MS },
    handler,
  );
  server.maxConnections = maxConnections;
  server.setTimeout(IDLE_TIMEOUT_MS, (socket) => socket.destroy());
  let lastLogged = -Infinity;
  let suppressed = 0;
  server.on('error', (err: NodeJS.ErrnoException) => {
    const now = Date.now();
    if (now - lastLogged < ERROR_LOG_INTERVAL_MS) {
      suppressed++;
      return;
    }
    log.error({ server: name, err: err.message, code: err.code, suppressed }, 'HTTP server error');
    lastLogged = now;
    suppressed = 0;
  });
  server.on('clientError', (_err, socket) => socket.destroy());
  return server;
}

/**
 * Lets work through at most once per window as long as the last piece took: whatever is
 * asked, it never holds the event loop more than half the time, so the sync loop and
 * /healthz keep their latency. Work is synchronous: no two pieces overlap.
 */
export class DutyCycleGate {
  private closedUntil = 0;

  constructor(private readonly now: () => number = () => performance.now()) {}

  /** The work's result, or how long to wait before asking again (ms). */
  run<T>(work: () => T): { ok: true; value: T } | { ok: false; retryAfterMs: number } {
    const start = this.now();
    if (start < this.closedUntil) return { ok: false, retryAfterMs: this.closedUntil - start };
    try {
      return { ok: true, value: work() };
    } finally {
      const end = this.now();
      this.closedUntil = end + (end - start);
    }
  }
}
