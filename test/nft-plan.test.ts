/**
 * The nftables transaction planner. Property: whatever table was last written and
 * whatever table is wanted, the partial transaction applied on top of the first gives
 * exactly the second, and the full transaction gives it from anything. Checked two ways:
 *  - on many random cases against a model of what nft does with each command (including
 *    the refusals that matter: deleting a chain or set something still refers to, adding
 *    a map element whose key holds another value, naming what does not exist);
 *  - on a few against the kernel, in a throwaway namespace: `nft list table` after
 *    full(prev) + partial(prev, want) equals it after full(want) in a fresh table.
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fullTransaction, NeedsFullSync, partialTransaction } from '../src/modes/nftables/plan.js';
import { chainSpec, elementKey, ruleText, setSpec, type Chain, type NftSet, type NftTable } from '../src/modes/nftables/ruleset.js';
import { listedObjects } from '../src/modes/nftables/written.js';
import { Netns } from './support/netns.js';
import { privilegedTestsCanRun } from './support/privileges.js';

// ---------------------------------------------------------------------------------------
// Random tables, in real nft syntax: chains whose rules go to other chains and match
// sets, verdict maps that go to chains, plain sets, an affinity-like dynamic set.
// ---------------------------------------------------------------------------------------

const CHAINS = ['c0', 'c1', 'c2', 'c3', 'c4', 'c5'];
const SETS = ['s0', 's1', 's2'];
const MAPS = ['m0', 'm1'];
const BASE = 'nat-prerouting';
const ip = (n: number) => `10.0.${n >> 8}.${n & 255}`;

const arbTable = fc
  .record({
    chains: fc.subarray(CHAINS),
    sets: fc.subarray(SETS),
    maps: fc.subarray(MAPS),
    dynamic: fc.boolean(),
    seed: fc.array(fc.nat(1000), { minLength: 40, maxLength: 40 }),
    priority: fc.constantFrom(-100, -100, -90),
  })
  .map(({ chains, sets, maps, dynamic, seed, priority }): NftTable => {
    let i = 0;
    const next = () => seed[i++ % seed.length]!;
    const pick = <T>(xs: T[]): T | undefined => (xs.length === 0 ? undefined : xs[next() % xs.length]);
    const allSets = [...sets, ...(dynamic ? ['affinity'] : [])];
    const chainRules = (name: string): Chain['rules'] => {
      const rules: Chain['rules'] = [];
      for (let k = 0; k < next() % 4; k++) {
        const target = pick(chains.filter((c) => c !== name && CHAINS.indexOf(c) > CHAINS.indexOf(name)));
        const set = pick(allSets);
        const map = pick(maps);
        const choice = next() % 3;
        if (choice === 0 && target) rules.push({ rule: `ip daddr ${ip(next())} goto ${target}`, comment: next() % 2 ? `to ${target}` : undefined });
        else if (choice === 1 && set) rules.push({ rule: `ip saddr @${set} counter accept` });
        // Maps go to c2..c5 only, and only BASE, c0 and c1 use them: no loops, which the kernel refuses.
        else if (choice === 2 && map && CHAINS.indexOf(name) < 2) rules.push({ rule: `ip daddr vmap @${map}` });
        else rules.push({ rule: 'ip protocol udp counter return' });
      }
      return rules;
    };
    const tableChains: Chain[] = [{ name: BASE, base: { type: 'nat', hook: 'prerouting', priority }, rules: chainRules(BASE) }];
    for (const c of chains) tableChains.push({ name: c, rules: chainRules(c) });
    const tableSets: NftSet[] = [];
    const sorted = (els: Map<string, string | undefined>) => [...els].sort().map(([key, value]) => ({ key: [key], value: value === undefined ? undefined : [value] }));
    for (const name of sets) {
      const elements = new Map<string, undefined>();
      for (let k = 0; k < next() % 6; k++) elements.set(ip(next() % 20), undefined);
      tableSets.push({ kind: 'set', name, key: { type: ['ipv4_addr'] }, flags: [], elements: sorted(elements) });
    }
    for (const name of maps) {
      const elements = new Map<string, string>();
      for (let k = 0; k < next() % 6; k++) {
        const target = pick(chains.filter((c) => CHAINS.indexOf(c) >= 2));
        elements.set(ip(next() % 20), target ? `${next() % 2 ? 'goto' : 'jump'} ${target}` : 'drop');
      }
      tableSets.push({ kind: 'map', name, key: { type: ['ipv4_addr'] }, value: { type: ['verdict'] }, flags: [], elements: sorted(elements) });
    }
    if (dynamic) tableSets.push({ kind: 'set', name: 'affinity', key: { type: ['ipv4_addr'] }, flags: ['dynamic', 'timeout'], timeoutSeconds: 10800, elements: [] });
    return { family: 'ip', name: 'kube-proxy', comment: 'rules for kube-proxy', chains: tableChains, sets: tableSets };
  });

/** `prev`, and `prev` with rules inserted into some chains (what a new endpoint-count group does). */
const arbGrown = fc.tuple(arbTable, fc.array(fc.tuple(fc.nat(20), fc.nat(20), fc.nat(255)), { minLength: 1, maxLength: 6 })).map(([prev, adds]): [NftTable, NftTable] => {
  const chains = prev.chains.map((c) => ({ ...c, rules: [...c.rules] }));
  for (const [which, at, n] of adds) {
    const c = chains[which % chains.length]!;
    c.rules.splice(at % (c.rules.length + 1), 0, { rule: `ip daddr 10.9.0.${n} counter accept` });
  }
  return [prev, { ...prev, chains }];
});

// ---------------------------------------------------------------------------------------
// A model of nft applying a script to one table, refusing what the kernel refuses.
// ---------------------------------------------------------------------------------------

interface ModelChain {
  /** What follows the name in `add chain` (chainSpec). */
  spec: string;
  rules: string[];
}
interface ModelSet {
  kind: 'set' | 'map';
  spec: string;
  elements: Map<string, string | null>;
}
interface ModelTable {
  comment: string;
  chains: Map<string, ModelChain>;
  sets: Map<string, ModelSet>;
}

const chainRefs = (text: string) => [...text.matchAll(/\b(?:goto|jump) (\S+)/g)].map((m) => m[1]!);
const setRefs = (text: string) => [...text.matchAll(/@(\S+)/g)].map((m) => m[1]!);

/** Applies a script atomically: the table after it, or throws (and the table is unchanged). */
function applyModel(table: ModelTable | null, tx: Buffer): ModelTable | null {
  const script = tx.toString('latin1');
  let t: ModelTable | null = table && { comment: table.comment, chains: new Map([...table.chains].map(([k, c]) => [k, { spec: c.spec, rules: [...c.rules] }])), sets: new Map([...table.sets].map(([k, s]) => [k, { ...s, elements: new Map(s.elements) }])) };
  const need = () => {
    if (!t) throw new Error('no such table');
    return t;
  };
  const chain = (name: string) => {
    const c = need().chains.get(name);
    if (!c) throw new Error(`no chain ${name}`);
    return c;
  };
  const set = (name: string) => {
    const s = need().sets.get(name);
    if (!s) throw new Error(`no set ${name}`);
    return s;
  };
  const referenced = (name: string, kind: 'chain' | 'set') => {
    const refs = kind === 'chain' ? chainRefs : setRefs;
    for (const c of need().chains.values()) if (c.rules.some((r) => refs(r).includes(name))) return true;
    if (kind === 'chain') for (const s of need().sets.values()) for (const v of s.elements.values()) if (v && chainRefs(v).includes(name)) return true;
    return false;
  };
  const checkRefs = (text: string) => {
    for (const c of chainRefs(text)) chain(c);
    for (const s of setRefs(text)) set(s);
  };
  for (const line of script.split('\n').filter((l) => l !== '')) {
    let m: RegExpMatchArray | null;
    if ((m = line.match(/^add table ip kube-proxy(?: \{ comment "(.*)" ; \})?$/))) {
      t ??= { comment: '', chains: new Map(), sets: new Map() };
      if (m[1] !== undefined) t.comment = m[1];
    } else if (line === 'delete table ip kube-proxy') {
      need();
      t = null;
    } else if ((m = line.match(/^add chain ip kube-proxy (\S+)(.*)$/))) {
      const old = need().chains.get(m[1]!);
      if (old && old.spec !== m[2]) throw new Error(`chain ${m[1]} exists with another hook`);
      if (!old) need().chains.set(m[1]!, { spec: m[2]!, rules: [] });
    } else if ((m = line.match(/^add rule ip kube-proxy (\S+) (.*)$/))) {
      checkRefs(m[2]!);
      chain(m[1]!).rules.push(m[2]!);
    } else if ((m = line.match(/^insert rule ip kube-proxy (\S+) index (\d+) (.*)$/))) {
      const c = chain(m[1]!);
      const at = Number(m[2]);
      if (at >= c.rules.length) throw new Error(`no rule at index ${at} of ${m[1]}`);
      checkRefs(m[3]!);
      c.rules.splice(at, 0, m[3]!);
    } else if (line === 'flush table ip kube-proxy') {
      for (const c of need().chains.values()) c.rules = [];
    } else if ((m = line.match(/^flush (set|map) ip kube-proxy (\S+)$/))) {
      set(m[2]!).elements.clear();
    } else if ((m = line.match(/^flush chain ip kube-proxy (\S+)$/))) {
      chain(m[1]!).rules = [];
    } else if ((m = line.match(/^delete chain ip kube-proxy (\S+)$/))) {
      if (chain(m[1]!).rules.length > 0) throw new Error(`chain ${m[1]} not empty`);
      if (referenced(m[1]!, 'chain')) throw new Error(`chain ${m[1]} in use`);
      need().chains.delete(m[1]!);
    } else if ((m = line.match(/^add (set|map) ip kube-proxy (\S+) (\{ .* \})$/))) {
      const old = need().sets.get(m[2]!);
      if (old && (old.kind !== m[1] || old.spec !== m[3])) throw new Error(`set ${m[2]} exists with another declaration`);
      if (!old) need().sets.set(m[2]!, { kind: m[1] as 'set' | 'map', spec: m[3]!, elements: new Map() });
    } else if ((m = line.match(/^delete (set|map) ip kube-proxy (\S+)$/))) {
      set(m[2]!);
      if (referenced(m[2]!, 'set')) throw new Error(`set ${m[2]} in use`);
      need().sets.delete(m[2]!);
    } else if ((m = line.match(/^(add|delete) element ip kube-proxy (\S+) \{ (.*) \}$/))) {
      const s = set(m[2]!);
      for (const item of m[3]!.split(', ')) {
        const [key, value] = item.split(' : ') as [string, string | undefined];
        if (m[1] === 'delete') {
          if (!s.elements.has(key)) throw new Error(`no element ${key} in ${m[2]}`);
          s.elements.delete(key);
        } else {
          if (s.kind === 'map' && value === undefined) throw new Error('map element without value');
          if (value) checkRefs(value);
          if (s.elements.has(key) && s.elements.get(key) !== (value ?? null)) throw new Error(`element ${key} exists with another value`);
          s.elements.set(key, value ?? null);
        }
      }
    } else throw new Error(`model does not know: ${line}`);
  }
  return t;
}

/** The table as comparable data: chains and sets by name, elements sorted. */
function shape(t: ModelTable | NftTable | null) {
  if (!t) return null;
  const wanted = 'family' in t;
  const model = wanted ? null : (t as ModelTable);
  const table = wanted ? (t as NftTable) : null;
  const byName = <T>(entries: [string, T][]) => Object.fromEntries(entries.sort(([a], [b]) => a.localeCompare(b)));
  return {
    comment: t.comment,
    chains: model
      ? byName([...model.chains].map(([k, c]) => [k, { spec: c.spec, rules: c.rules }]))
      : byName(table!.chains.map((c) => [c.name, { spec: chainSpec(c), rules: c.rules.map(ruleText) }])),
    sets: model
      ? byName([...model.sets].map(([k, s]) => [k, { kind: s.kind, spec: s.spec, elements: [...s.elements].sort() }]))
      : byName(table!.sets.map((s) => [s.name, { kind: s.kind, spec: setSpec(s), elements: s.elements.map((e) => [elementKey(e), e.value?.join(' . ') ?? null]).sort() }])),
  };
}

describe('the objects a listing shows', () => {
  const listing = (name: string) =>
    ['table ip filter {', '\tchain INPUT {', '\t\ttype filter hook input priority filter; policy accept;', '\t}', '}', 'table ip kube-proxy {', `\tchain ${name} {`, '\t}', '}', 'table ip kube-proxy {', '\tmap service-ips {', '\t\ttype ipv4_addr : verdict', '\t}', '\tset cluster-ips {', '\t}', '}', 'table ip6 kube-proxy {', '\tchain only-v6 {', '\t}', '}'].join('\n');

  it('are our table\'s chains, sets and maps, in the family asked for', () => {
    const objects = listedObjects(listing('endpoint-ABCDEFGH-ns/svc/tcp/http__10.0.0.1/80'), 'ip');
    expect(objects).toEqual({ chains: new Set(['endpoint-ABCDEFGH-ns/svc/tcp/http__10.0.0.1/80']), sets: new Map([['service-ips', 'map'], ['cluster-ips', 'set']]) });
    expect(listedObjects(listing('x'), 'ip6')).toEqual({ chains: new Set(['only-v6']), sets: new Map() });
  });

  it('are not read when one has a name a script must not carry', () => {
    for (const name of ['"x; flush ruleset"', 'x;y', 'a b']) expect(listedObjects(listing(name), 'ip')).toBeNull();
  });
});

describe('nftables transaction planner (model)', () => {
  it('full(want) gives want from nothing and from any earlier table', () => {
    fc.assert(
      fc.property(arbTable, arbTable, (prev, want) => {
        expect(shape(applyModel(null, fullTransaction(want).script))).toEqual(shape(want));
        const before = applyModel(null, fullTransaction(prev).script);
        expect(shape(applyModel(before, fullTransaction(want).script))).toEqual(shape(want));
      }),
      { numRuns: 300 },
    );
  });

  it('full(want) over the objects it was told of keeps the table: want, and the elements the data path added to dynamic sets, or a refusal when a declaration changed', () => {
    let kept = 0;
    fc.assert(
      fc.property(arbTable, arbTable, (prev, want) => {
        const before = applyModel(null, fullTransaction(prev).script)!;
        before.sets.get('affinity')?.elements.set('10.1.2.3', null);
        const present = { chains: new Set(before.chains.keys()), sets: new Map([...before.sets].map(([k, x]) => [k, x.kind])) };
        let after: ModelTable | null;
        try {
          after = applyModel(before, fullTransaction(want, present).script);
        } catch (err) {
          expect((err as Error).message).toMatch(/exists with another/);
          return;
        }
        const remembered = before.sets.has('affinity') && want.sets.some((x) => x.name === 'affinity');
        const expected = shape(want)!;
        if (remembered) expected.sets.affinity!.elements = [['10.1.2.3', null]];
        expect(shape(after)).toEqual(expected);
        if (remembered) kept++;
      }),
      { numRuns: 300 },
    );
    expect(kept).toBeGreaterThan(10);
  });

  it('partial(prev, want) on top of prev gives exactly want, or asks for a full sync when a declaration changed', () => {
    let partials = 0;
    fc.assert(
      fc.property(arbTable, arbTable, (prev, want) => {
        const before = applyModel(null, fullTransaction(prev).script);
        let tx;
        try {
          tx = partialTransaction(prev, want);
        } catch (err) {
          expect(err).toBeInstanceOf(NeedsFullSync);
          expect(prev.chains[0]!.base).not.toEqual(want.chains[0]!.base);
          return;
        }
        partials++;
        expect(shape(applyModel(before, tx.script))).toEqual(shape(want));
        expect(tx.full).toBe(false);
      }),
      { numRuns: 1000 },
    );
    expect(partials).toBeGreaterThan(300);
  });

  it('grows a chain by inserting only the new rules, never naming the old ones again', () => {
    fc.assert(
      fc.property(arbGrown, ([prev, want]) => {
        const tx = partialTransaction(prev, want);
        const script = tx.script.toString();
        expect(script).not.toMatch(/^flush chain/m);
        const added = want.chains.reduce((n, c) => n + c.rules.length, 0) - prev.chains.reduce((n, c) => n + c.rules.length, 0);
        expect(tx.commands).toBe(added);
        expect(shape(applyModel(applyModel(null, fullTransaction(prev).script), tx.script))).toEqual(shape(want));
      }),
      { numRuns: 300 },
    );
  });

  it('a partial transaction is empty when nothing changed, and one element swap when one endpoint did', () => {
    const map = (to2: string): NftSet => ({
      kind: 'map',
      name: 'svc',
      key: { type: ['ipv4_addr'] },
      value: { type: ['ipv4_addr'] },
      flags: [],
      elements: [
        { key: ['10.96.0.1'], value: ['10.244.0.1'] },
        { key: ['10.96.0.2'], value: [to2] },
      ],
    });
    const prev: NftTable = { family: 'ip', name: 'kube-proxy', comment: 'c', chains: [], sets: [map('10.244.0.2')] };
    const none = partialTransaction(prev, prev);
    expect([none.script.length, none.commands]).toEqual([0, 0]);
    const one = partialTransaction(prev, { ...prev, sets: [map('10.244.0.9')] });
    expect(one.script.toString()).toBe('delete element ip kube-proxy svc { 10.96.0.2 }\nadd element ip kube-proxy svc { 10.96.0.2 : 10.244.0.9 }\n');
    expect(one.commands).toBe(2);
  });

  it('names nothing outside its own table', () => {
    fc.assert(
      fc.property(arbTable, arbTable, (prev, want) => {
        const scripts = [fullTransaction(want).script];
        try {
          scripts.push(partialTransaction(prev, want).script);
        } catch {
          // A full one instead: covered above.
        }
        for (const line of Buffer.concat(scripts).toString().split('\n').filter((l) => l !== '')) expect(line).toMatch(/^(add|delete|flush|insert) (table|chain|rule|set|map|element) ip kube-proxy\b/);
      }),
      { numRuns: 200 },
    );
  });
});

// ---------------------------------------------------------------------------------------
// The same against the kernel.
// ---------------------------------------------------------------------------------------

/** `nft list table` output with chains, sets and elements in a canonical order. */
function canonical(listing: string): string[] {
  const blocks = listing.split(/\n(?=\t(?:chain|set|map) )/).slice(1);
  return blocks
    .map((b) =>
      b
        .replace(/elements = \{([^}]*)\}/s, (_, items: string) => `elements = { ${items.split(',').map((x) => x.trim()).filter((x) => x !== '').sort().join(', ')} }`)
        .replace(/\n}\s*$/, '')
        .trim(),
    )
    .sort();
}

const canRun = privilegedTestsCanRun('nftables transactions in a network namespace', ['ip', 'nft']);

describe.runIf(canRun)('nftables transaction planner (kernel)', () => {
  let ns: Netns;
  beforeAll(() => {
    ns = new Netns('nftplan');
  });
  afterAll(() => ns?.remove());

  const nft = (tx: Buffer | string) => {
    const script = tx.toString();
    const r = ns.exec('nft', ['-f', '-'], script);
    if (r.status !== 0) throw new Error(`nft -f: ${r.stderr}\n${script}`);
  };
  const list = () => {
    const r = ns.exec('nft', ['list', 'table', 'ip', 'kube-proxy']);
    if (r.status !== 0) throw new Error(`nft list: ${r.stderr}`);
    return canonical(r.stdout);
  };

  it('partial(prev, want) on top of full(prev) lists as full(want) does', () => {
    const cases = fc.sample(fc.tuple(arbTable, arbTable), { numRuns: 12, seed: 13 });
    let partials = 0;
    for (const [prev, want] of cases) {
      nft(fullTransaction(want).script);
      const expected = list();
      nft(fullTransaction(prev).script);
      let tx;
      try {
        tx = partialTransaction(prev, want);
      } catch {
        continue;
      }
      nft(tx.script);
      expect(list()).toEqual(expected);
      partials++;
    }
    expect(partials).toBeGreaterThan(5);
  });

  it('grown chains list as full(want) does (insert by index counts the rules inserted before)', () => {
    for (const [prev, want] of fc.sample(arbGrown, { numRuns: 6, seed: 5 })) {
      nft(fullTransaction(want).script);
      const expected = list();
      nft(fullTransaction(prev).script);
      nft(partialTransaction(prev, want).script);
      expect(list()).toEqual(expected);
    }
  });

  it('a dynamic set keeps what the kernel added to it across partial transactions', () => {
    const hasAffinity = (t: NftTable) => t.sets.some((s) => s.name === 'affinity');
    const [prev, want] = fc.sample(fc.tuple(arbTable, arbTable), { numRuns: 40, seed: 7 }).find(([p, w]) => hasAffinity(p) && hasAffinity(w) && chainSpec(p.chains[0]!) === chainSpec(w.chains[0]!))!;
    nft(fullTransaction(prev).script);
    nft('add element ip kube-proxy affinity { 10.1.1.1 }\n');
    nft(partialTransaction(prev, want).script);
    expect(list().find((b) => b.startsWith('set affinity'))).toContain('10.1.1.1');
  });
});
