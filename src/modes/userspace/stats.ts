/** What the data path reports per endpoint; the mode turns it into Prometheus metrics. */
export interface EndpointStats {
  /** A connection (TCP) or session (UDP) to `endpoint` opened or closed. */
  opened(listener: string, endpoint: string): void;
  closed(listener: string, endpoint: string): void;
  /** Bytes carried: `toEndpoint` from the client, `fromEndpoint` back to it. */
  bytes(listener: string, endpoint: string, toEndpoint: number, fromEndpoint: number): void;
}

export const NO_STATS: EndpointStats = { opened: () => {}, closed: () => {}, bytes: () => {} };
