/**
 * Prometheus metrics under upstream kube-proxy's names, so existing dashboards and alerts
 * keep working.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

const SYNC_BUCKETS = [0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096, 8.192, 16.384, 32.768];

export function createMetrics() {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  // It lists /proc/self/fd on every scrape: with thousands of open sockets a scrape takes seconds.
  registry.removeSingleMetric('process_open_fds');
  const m = {
    registry,
    syncDuration: new Histogram({
      name: 'kubeproxy_sync_proxy_rules_duration_seconds',
      help: 'SyncProxyRules latency in seconds',
      buckets: SYNC_BUCKETS,
      registers: [registry],
    }),
    fullSyncDuration: new Histogram({
      name: 'kubeproxy_sync_full_proxy_rules_duration_seconds',
      help: 'SyncProxyRules latency in seconds for full resyncs',
      buckets: SYNC_BUCKETS,
      registers: [registry],
    }),
    partialSyncDuration: new Histogram({
      name: 'kubeproxy_sync_partial_proxy_rules_duration_seconds',
      help: 'SyncProxyRules latency in seconds for partial resyncs',
      buckets: SYNC_BUCKETS,
      registers: [registry],
    }),
    networkProgramming: new Histogram({
      name: 'kubeproxy_network_programming_duration_seconds',
      help: 'In Cluster Network Programming Latency in seconds (from the change seen to the rules in place)',
      buckets: [0.25, 0.5, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 15, 20, 30, 45, 60, 120, 300],
      registers: [registry],
    }),
    transactionCommands: new Histogram({
      name: 'kubeproxy_sync_proxy_rules_transaction_commands',
      help: 'Commands in the transaction a successful sync applied (nftables mode: nft commands)',
      buckets: [0, 1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144],
      registers: [registry],
    }),
    transactionBytes: new Histogram({
      name: 'kubeproxy_sync_proxy_rules_transaction_bytes',
      help: 'Size in bytes of the transaction a successful sync applied (nftables mode: the nft script)',
      buckets: [0, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864],
      registers: [registry],
    }),
    lastSync: new Gauge({
      name: 'kubeproxy_sync_proxy_rules_last_timestamp_seconds',
      help: 'The last time proxy rules were successfully synced',
      registers: [registry],
    }),
    lastQueued: new Gauge({
      name: 'kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds',
      help: 'The last time a sync of proxy rules was queued',
      registers: [registry],
    }),
    restoreFailures: new Counter({
      name: 'kubeproxy_sync_proxy_rules_iptables_restore_failures_total',
      help: 'Cumulative proxy iptables restore failures',
      registers: [registry],
    }),
    partialRestoreFailures: new Counter({
      name: 'kubeproxy_sync_proxy_rules_iptables_partial_restore_failures_total',
      help: 'Cumulative proxy iptables partial restore failures',
      registers: [registry],
    }),
    endpointChanges: new Counter({
      name: 'kubeproxy_sync_proxy_rules_endpoint_changes_total',
      help: 'Cumulative proxy rules EndpointSlice changes',
      registers: [registry],
    }),
    rejectedFromApi: new Counter({
      name: 'kubeproxy_ts_api_objects_rejected_total',
      help: 'Objects and watch events from the API server that were not valid and were skipped',
      labelNames: ['kind'],
      registers: [registry],
    }),
    conntrackDeleted: new Counter({
      name: 'kubeproxy_conntrack_reconciler_deleted_entries_total',
      help: 'Cumulative conntrack flows deleted by conntrack reconciler',
      labelNames: ['ip_family'],
      registers: [registry],
    }),
    conntrackDuration: new Histogram({
      name: 'kubeproxy_conntrack_reconciler_sync_duration_seconds',
      help: 'ReconcileConntrackFlowsLatency latency in seconds',
      labelNames: ['ip_family'],
      buckets: SYNC_BUCKETS,
      registers: [registry],
    }),
    conntrackFailures: new Counter({
      name: 'kubeproxy_ts_conntrack_deletion_failures_total',
      help: 'Stale conntrack deletions (a service address or node port, and an endpoint) that failed; each is tried again at the next sync',
      labelNames: ['ip_family'],
      registers: [registry],
    }),
    serviceChanges: new Counter({
      name: 'kubeproxy_sync_proxy_rules_service_changes_total',
      help: 'Cumulative proxy rules Service changes',
      registers: [registry],
    }),
  };
  return m;
}

export type Metrics = ReturnType<typeof createMetrics>;
