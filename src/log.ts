/** Structured logs: JSON on stderr, one line per event; `--v` raises verbosity as in klog. */
import { pino, type Logger } from 'pino';

export function createLogger(verbosity: number): Logger {
  const level = verbosity >= 6 ? 'trace' : verbosity >= 4 ? 'debug' : 'info';
  return pino({ level, base: { component: 'kube-proxy-ts' } }, pino.destination({ fd: 2, sync: true }));
}
