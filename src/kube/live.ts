/**
 * The cluster as --dry-run and trace read it without --from-file: one list of each kind
 * the proxy uses, from the API server of --kubeconfig, else $KUBECONFIG, else
 * ~/.kube/config, else the in-cluster service account. No watch.
 */
import { KubeConfig } from './client.js';
import { getList } from './api.js';
import type { ClusterObjects } from './objects.js';

export async function readLiveCluster(kubeconfig: string | null): Promise<ClusterObjects> {
  const kc = new KubeConfig();
  if (kubeconfig) kc.loadFromFile(kubeconfig);
  else kc.loadFromDefault();
  const [services, endpointSlices, nodes, serviceCIDRs] = await Promise.all([
    ...['/api/v1/services', '/apis/discovery.k8s.io/v1/endpointslices', '/api/v1/nodes'].map((path) => getList(kc, path)),
    // Clusters before 1.33 may not serve ServiceCIDRs: they then have none.
    getList(kc, '/apis/networking.k8s.io/v1/servicecidrs').catch((err: { statusCode?: number }) => {
      if (err.statusCode === 404) return { items: [] };
      throw err;
    }),
  ]);
  return { services: services!.items, endpointSlices: endpointSlices!.items, nodes: nodes!.items, serviceCIDRs: serviceCIDRs!.items };
}
