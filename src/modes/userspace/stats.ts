/** What the data path reports per endpoint; the mode turns it into Prometheus metrics. */
export interface EndpointStats {
  /** A connection (TCP) or session (UDP) to `endpoint` opened or closed. */
  opened(listener: string, endpoint: string): void;
  closed(listener: string, endpoint: string): void;
  /** Bytes carried: `toEndpoint` from the client, `fromEndpoint` back to it. */
  bytes(listener: string, endpoint: string, toEndpoint: number, fromEndpoint: number): void;
}

export const NO_STATS: EndpointStats = { opened: () => {}, closed: () => {}, bytes: () => {} };

/** Bytes one connection has reported so far: each report carries what moved since. */
export interface Counted {
  in: number;
  out: number;
}

/** Reports what a connection moved since `counted` (totals `toEndpoint`, `fromEndpoint` so far), and advances it. */
export function reportMoved(stats: EndpointStats, listener: string, endpoint: string, counted: Counted, toEndpoint: number, fromEndpoint: number): void {
  const inb = toEndpoint - counted.in;
  const outb = fromEndpoint - counted.out;
  if (inb === 0 && outb === 0) return;
  counted.in = toEndpoint;
  counted.out = fromEndpoint;
  stats.bytes(listener, endpoint, inb, outb);
}
