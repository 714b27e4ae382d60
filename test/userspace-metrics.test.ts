/** userspace mode's per-endpoint metrics, as the agent's /metrics shows them. */
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { PromEndpointStats } from '../src/modes/userspace/metrics.js';

describe('userspace endpoint metrics', () => {
  it('counts active connections and bytes per endpoint, adds open connections\' bytes at scrape time, and forgets closed listeners', async () => {
    const registry = new Registry();
    let scrapes = 0;
    const stats = new PromEndpointStats(registry, () => {
      scrapes++;
      stats.bytes('shop/web:http TCP', '10.244.0.5:8080', 10, 0);
    });
    stats.opened('shop/web:http TCP', '10.244.0.5:8080');
    stats.opened('shop/web:http TCP', '10.244.0.5:8080');
    stats.opened('shop/web:http TCP', '10.244.1.5:8080');
    stats.closed('shop/web:http TCP', '10.244.1.5:8080');
    stats.bytes('shop/web:http TCP', '10.244.1.5:8080', 100, 2048);
    const text = await registry.metrics();
    expect(scrapes).toBe(1);
    expect(text).toContain('kubeproxy_ts_userspace_endpoint_active_connections{listener="shop/web:http TCP",endpoint="10.244.0.5:8080"} 2');
    expect(text).toContain('kubeproxy_ts_userspace_endpoint_active_connections{listener="shop/web:http TCP",endpoint="10.244.1.5:8080"} 0');
    expect(text).toContain('kubeproxy_ts_userspace_endpoint_bytes_total{listener="shop/web:http TCP",endpoint="10.244.1.5:8080",direction="from_endpoint"} 2048');
    expect(text).toContain('kubeproxy_ts_userspace_endpoint_bytes_total{listener="shop/web:http TCP",endpoint="10.244.0.5:8080",direction="to_endpoint"} 10');
    stats.forget('shop/web:http TCP');
    expect(await registry.metrics()).not.toContain('endpoint="10.244.1.5:8080"');
  });
});
