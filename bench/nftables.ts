/**
 * nftables mode at 10,000 services x 10 endpoints: the renderer's time beside the kernel's
 * (`nft -f` of the whole table into a throwaway namespace, base chains hooked in), and
 * what the common changes cost once it is loaded: one endpoint replaced, one service
 * moving to another endpoint count, a new endpoint-count group. Root only for the nft
 * part; figures are wall-clock on whatever else the machine is doing.
 */
import { buildNodeModel } from '../src/model/build.js';
import { renderNftables } from '../src/modes/nftables/render.js';
import { scriptText } from '../src/modes/nftables/ruleset.js';
import { Netns } from '../test/support/netns.js';
import { syntheticCluster } from './synthetic.js';

const f = (n: number, d = 2) => n.toFixed(d);

function timed<T>(fn: () => T): [T, number] {
  const t = performance.now();
  const r = fn();
  return [r, (performance.now() - t) / 1000];
}

const objects = syntheticCluster({ services: 10_000, endpointsPerService: 10 });
const model = buildNodeModel(objects, 'node-0').model;
const opts = { clusterCIDRs: ['10.128.0.0/9'] };
renderNftables(model.families.IPv4, model.node, opts);
const [table, renderS] = timed(() => renderNftables(model.families.IPv4, model.node, opts));
const [script, writeS] = timed(() => scriptText(table));
console.log('nftables, 10,000 services x 10 endpoints (IPv4)');
console.log(`  render (second run) ${f(renderS)} s, script text ${f(writeS)} s, ${(script.length / 1e6).toFixed(1)} MB, ${script.split('\n').length - 1} lines`);

if (process.getuid?.() === 0) {
  const ns = new Netns('bench-nft');
  try {
    // Wall-clock and nft's own CPU time (user + system, kernel work included), as the
    // shell's `time` reports them: on a busy machine the CPU time is the steadier figure.
    const nft = (input: string) => {
      const r = ns.exec('bash', ['-c', 'TIMEFORMAT="%R %U %S"; time nft -f -'], input);
      if (r.status !== 0) throw new Error(`nft -f: ${r.stderr.slice(0, 2000)}`);
      const [real, user, sys] = r.stderr.trim().split('\n').at(-1)!.split(' ').map(Number);
      return `${f(real! * 1000, 0)} ms (cpu ${f((user! + sys!) * 1000, 0)} ms)`;
    };
    const first = nft(script);
    const again = nft(script);
    console.log(`  nft -f, first load: ${first}; again over the loaded table: ${again}`);
    const t = 'ip kube-proxy';
    const sv = '10.96.0.7 . tcp . 80';
    // The groups' maps are one protocol's each: their keys leave it out.
    const gk = '10.96.0.7 . 80';
    const replace = nft(`delete element ${t} cluster-endpoints-tcp-10 { ${gk} . 3 }\nadd element ${t} cluster-endpoints-tcp-10 { ${gk} . 3 : 10.250.0.1 . 8080 }\n`);
    const elems = (n: number) => Array.from({ length: n }, (_, i) => `${gk} . ${i} : 10.250.0.${i + 1} . 8080`).join(', ');
    const keys = (n: number) => Array.from({ length: n }, (_, i) => `${gk} . ${i}`).join(', ');
    const group = (n: number) =>
      `add map ${t} cluster-endpoints-tcp-${n} { typeof ip daddr . th dport . numgen random mod ${n} : ip daddr . tcp dport ; }\n` +
      `add rule ${t} cluster-endpoints meta l4proto tcp dnat ip to ip daddr . th dport . numgen random mod ${n} map @cluster-endpoints-tcp-${n}\n`;
    nft(group(11));
    const move = nft(`delete element ${t} cluster-endpoints-tcp-10 { ${keys(10)} }\nadd element ${t} cluster-endpoints-tcp-11 { ${elems(11)} }\n`);
    const newGroup = nft(`${group(12)}delete element ${t} cluster-endpoints-tcp-11 { ${keys(11)} }\nadd element ${t} cluster-endpoints-tcp-12 { ${elems(12)} }\n`);
    const verdict = nft(`delete element ${t} service-ips { ${sv} }\nadd element ${t} service-ips { ${sv} : goto local-endpoints }\n`);
    console.log(`  one endpoint replaced ${replace}; a service to another endpoint count ${move}`);
    // The rare features with chains of their own: 1% of the services with ClientIP affinity.
    for (const svc of objects.services.filter((_, i) => i % 100 === 5)) {
      (svc as { spec: Record<string, unknown> }).spec.sessionAffinity = 'ClientIP';
    }
    const sticky = buildNodeModel(objects, 'node-0').model;
    const stickyTable = renderNftables(sticky.families.IPv4, sticky.node, opts);
    const loaded = nft(scriptText(stickyTable));
    // An affinity service's endpoint replaced: its service chain rewritten, a new endpoint chain and set.
    const svc = stickyTable.chains.find((c) => c.name.startsWith('service-') && c.name.endsWith('/svc-5/tcp/http'))!;
    const oldEp = stickyTable.chains.find((c) => c.name.startsWith('endpoint-') && c.name.includes('/svc-5/tcp/http__'))!;
    const newEp = oldEp.name.replace(/__[0-9.]+\//, '__10.250.0.1/');
    const newSet = newEp.replace(/^endpoint-/, 'affinity-');
    const rules = svc.rules.map((r) => r.rule.replaceAll(oldEp.name, newEp).replaceAll(oldEp.name.replace(/^endpoint-/, 'affinity-'), newSet));
    const stickyChange = nft(
      [
        `add set ${t} ${newSet} { type ipv4_addr ; flags dynamic,timeout ; timeout 10800s ; }`,
        `add chain ${t} ${newEp}`,
        `add rule ${t} ${newEp} update @${newSet} { ip saddr }`,
        `add rule ${t} ${newEp} meta l4proto tcp dnat to 10.250.0.1:8080`,
        `flush chain ${t} ${svc.name}`,
        ...rules.map((r) => `add rule ${t} ${svc.name} ${r}`),
        `delete chain ${t} ${oldEp.name}`,
        `delete set ${t} ${oldEp.name.replace(/^endpoint-/, 'affinity-')}`,
        '',
      ].join('\n'),
    );
    console.log(`  with 100 of the services ClientIP-sticky (chains of their own): full load ${loaded}; one of their endpoints replaced ${stickyChange}`);
    console.log(`  a service to a new endpoint-count group (map + rule) ${newGroup}; a verdict-map element changed ${verdict}`);
  } finally {
    ns.remove();
  }
} else {
  console.log('  nft -f: skipped (not root)');
}
