/** What the ipvs renderer takes from the configuration. */
import type { IpvsScheduler } from '../../config/options.js';

export interface IpvsOptions {
  scheduler: IpvsScheduler;
  /** Bit of the packet mark that flags traffic for SNAT (upstream default 14). */
  masqueradeBit: number;
  masqueradeAll: boolean;
  /** Pod CIDRs, any family; the one of the rendered family tells pod traffic apart. */
  clusterCIDRs: string[];
  /** CIDRs, or `primary`, limiting which node addresses get node port virtual servers; empty = all. */
  nodePortAddresses: string[];
  randomFully: boolean;
  /** Drop conntrack-INVALID packets in KUBE-FORWARD (off with --conntrack-tcp-be-liberal). */
  dropInvalid: boolean;
}

export const DEFAULT_IPVS_OPTIONS: IpvsOptions = {
  scheduler: 'rr',
  masqueradeBit: 14,
  masqueradeAll: false,
  clusterCIDRs: [],
  nodePortAddresses: [],
  randomFully: true,
  dropInvalid: true,
};
