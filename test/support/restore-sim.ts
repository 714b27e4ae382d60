/**
 * A tiny model of what `iptables-restore --noflush` does to a table's chains, for checking
 * planned restore sequences without a kernel: declarations flush, -A appends, -I N inserts,
 * -D deletes an identical rule, -X deletes an empty, unreferenced chain. Every step is
 * checked the way the kernel checks a commit: no jump to a chain that does not exist.
 */
const BUILTIN = new Set(['PREROUTING', 'INPUT', 'FORWARD', 'OUTPUT', 'POSTROUTING']);
const TARGETS = new Set(['ACCEPT', 'DROP', 'REJECT', 'RETURN', 'DNAT', 'SNAT', 'MASQUERADE', 'MARK']);

export type Tables = Map<string, Map<string, string[]>>;

function target(rule: string): string | null {
  const m = / -j (\S+)/.exec(` ${rule}`);
  return m ? m[1]! : null;
}

export function applyRestore(tables: Tables, input: string): void {
  let table: Map<string, string[]> | null = null;
  let work: Map<string, string[]> | null = null;
  let name = '';
  for (const line of input.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    if (line.startsWith('*')) {
      name = line.slice(1);
      table = tables.get(name) ?? new Map();
      work = new Map([...table].map(([k, v]) => [k, [...v]]));
      continue;
    }
    if (!work) throw new Error(`line outside a table: ${line}`);
    if (line === 'COMMIT') {
      for (const [chain, rules] of work) {
        for (const r of rules) {
          const t = target(r);
          if (t && !TARGETS.has(t) && !work.has(t)) throw new Error(`${name}: ${chain} jumps to missing chain ${t}`);
        }
      }
      tables.set(name, work);
      work = null;
      continue;
    }
    if (line.startsWith(':')) {
      work.set(line.slice(1, line.indexOf(' ')), []);
      continue;
    }
    const [op, chain, ...rest] = line.split(' ');
    const rule = rest.join(' ');
    const rules = work.get(chain!) ?? (BUILTIN.has(chain!) ? [] : null);
    if (!rules) throw new Error(`${name}: ${op} on missing chain ${chain}`);
    if (op === '-A') rules.push(rule);
    else if (op === '-I') {
      const [pos, ...spec] = rest;
      rules.splice(Number(pos) - 1, 0, spec.join(' '));
    } else if (op === '-D') {
      const i = rules.indexOf(rule);
      if (i < 0) throw new Error(`${name}: -D of a rule not in ${chain}: ${rule}`);
      rules.splice(i, 1);
    } else if (op === '-X') {
      if (rules.length > 0) throw new Error(`${name}: -X of non-empty ${chain}`);
      for (const [other, rs] of work) if (rs.some((r) => target(r) === chain)) throw new Error(`${name}: -X ${chain} still used by ${other}`);
      work.delete(chain!);
      continue;
    } else throw new Error(`unknown line: ${line}`);
    work.set(chain!, rules);
  }
  if (work) throw new Error('input ended without COMMIT');
}

/** Chains with their rules, shared chains' rules sorted (their order carries no meaning). */
export function normalized(tables: Tables, unordered: string[]): Record<string, Record<string, string[]>> {
  const out: Record<string, Record<string, string[]>> = {};
  for (const [t, chains] of tables) {
    out[t] = {};
    for (const [c, rules] of [...chains].sort(([a], [b]) => (a < b ? -1 : 1))) {
      out[t][c] = unordered.includes(c) ? [...rules].sort() : rules;
    }
  }
  return out;
}
