/**
 * The chains of upstream kube-proxy's old userspace mode, which ours writes too: traffic
 * arriving from pods and the network is captured in PREROUTING (`-CONTAINER`), traffic
 * the node sends itself in OUTPUT (`-HOST`). Service addresses go to the PORTALS chains,
 * node ports (any local address) to the NODEPORT chains, evaluated after the portals.
 */
import type { JumpRule } from '../iptables/ruleset.js';

export const PORTALS_CONTAINER = 'KUBE-PORTALS-CONTAINER';
export const PORTALS_HOST = 'KUBE-PORTALS-HOST';
export const NODEPORT_CONTAINER = 'KUBE-NODEPORT-CONTAINER';
export const NODEPORT_HOST = 'KUBE-NODEPORT-HOST';

/** In the order a restore declares them. */
export const USERSPACE_CHAINS = [PORTALS_CONTAINER, PORTALS_HOST, NODEPORT_CONTAINER, NODEPORT_HOST] as const;

const PORTALS_COMMENT = 'handle ClusterIPs; NOTE: this must be before the NodePort rules';
const NODEPORTS_COMMENT = 'handle service NodePorts; NOTE: this must be the last rule in the chain';

function jump(chain: string, target: string, text: string, extra: string[] = []): JumpRule {
  return { table: 'nat', chain, args: [...extra, '-m', 'comment', '--comment', text, '-j', target] };
}

/**
 * The jumps from the built-in nat chains. Each is prepended in turn (see the iptables
 * applier), so the node port jumps come first here to end up after the portals.
 */
export function userspaceJumps(): JumpRule[] {
  const local = ['-m', 'addrtype', '--dst-type', 'LOCAL'];
  return [
    jump('PREROUTING', NODEPORT_CONTAINER, NODEPORTS_COMMENT, local),
    jump('OUTPUT', NODEPORT_HOST, NODEPORTS_COMMENT, local),
    jump('PREROUTING', PORTALS_CONTAINER, PORTALS_COMMENT),
    jump('OUTPUT', PORTALS_HOST, PORTALS_COMMENT),
  ];
}
