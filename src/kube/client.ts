/**
 * The parts of @kubernetes/client-node the proxy uses, from one module. The build bundles
 * this module with everything it imports into one file (scripts/bundle-client.mjs):
 * client-node loads ~850 generated model modules one by one, ~0.45 s of every start of the
 * agent and the offline tools, where the bundle loads in a tenth of that.
 */
export { KubeConfig, ListWatch, Watch } from '@kubernetes/client-node';
export type { KubernetesListObject, KubernetesObject } from '@kubernetes/client-node';
