/**
 * A dry run (and /debug/rules) prints each family's rules after a banner of its own,
 * IPv4 first. This cuts such a text back into the families' sections.
 */
import type { IPFamily } from '../model/types.js';

/** Each family's section, from its banner to the next one; empty when the text has no such banner. */
export function familySections(text: string, banners: Record<IPFamily, string>): Record<IPFamily, string> {
  const v4 = text.indexOf(banners.IPv4);
  const v6 = text.indexOf(banners.IPv6);
  return {
    IPv4: v4 < 0 ? '' : text.slice(v4, v6 < v4 ? undefined : v6),
    IPv6: v6 < 0 ? '' : text.slice(v6),
  };
}
