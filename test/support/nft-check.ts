/**
 * Loads an nft script for real inside a namespace, then reads the table back: what the
 * kernel and nft accept, not only what parses. Loading twice covers the full-sync path,
 * where the table (and its maps, read back from the kernel) already exists.
 */
import type { Netns } from './netns.js';

export interface NftLoad {
  /** Null when both loads and the listing succeeded. */
  error: string | null;
  /** `nft list table` after the second load. */
  listing: string;
}

export function nftLoad(ns: Netns, script: string, table: string): NftLoad {
  for (const attempt of ['first', 'second']) {
    const r = ns.exec('nft', ['-f', '-'], script);
    if (r.status !== 0) return { error: `nft -f (${attempt} load) failed (${r.status}): ${r.stderr.trim()}`, listing: '' };
  }
  const l = ns.exec('nft', ['list', 'table', ...table.split(' ')]);
  if (l.status !== 0) return { error: `nft list table ${table} failed: ${l.stderr.trim()}`, listing: '' };
  return { error: null, listing: l.stdout };
}

/** Names of the chains, sets and maps an nft script declares, and of those a listing holds. */
export function declared(script: string): string[] {
  return [...script.matchAll(/^add (chain|set|map) \S+ \S+ (\S+)/gm)].map((m) => `${m[1]} ${m[2]}`).sort();
}

export function listed(listing: string): string[] {
  return [...listing.matchAll(/^\t(chain|set|map) (\S+) \{$/gm)].map((m) => `${m[1]} ${m[2]}`).sort();
}
