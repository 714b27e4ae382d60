/**
 * getJson decodes a response body chunk by chunk as it arrives (kube/api.ts): a character
 * whose UTF-8 bytes are split between two chunks must come out whole, and an error
 * status still carries the Status message.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getJson } from '../src/kube/api.js';
import { KubeConfig } from '../src/kube/client.js';

const NAME = 'café-ñandú-日本';

let server: Server;
let kc: KubeConfig;

beforeAll(async () => {
  server = createServer((req, res) => {
    if (req.url === '/split') {
      const body = Buffer.from(JSON.stringify({ items: [{ metadata: { name: NAME } }], metadata: { resourceVersion: '1' } }));
      // Cut inside the two-byte "é", and again inside a three-byte character.
      const first = body.indexOf(Buffer.from('é')) + 1;
      const second = body.indexOf(Buffer.from('日')) + 2;
      res.write(body.subarray(0, first));
      setTimeout(() => {
        res.write(body.subarray(first, second));
        setTimeout(() => res.end(body.subarray(second)), 20);
      }, 20);
      return;
    }
    res.statusCode = 403;
    res.end(JSON.stringify({ kind: 'Status', message: 'services is forbidden: User "ü" cannot list' }));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [{ name: 'c', server: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, skipTLSVerify: true }],
    users: [{ name: 'u' }],
    contexts: [{ name: 'x', cluster: 'c', user: 'u' }],
    currentContext: 'x',
  });
});

afterAll(() => new Promise<void>((r) => server.close(() => r())));

describe('getJson', () => {
  it('decodes characters split between chunks', async () => {
    const body = (await getJson(kc, '/split')) as { items: { metadata: { name: string } }[] };
    expect(body.items[0]!.metadata.name).toBe(NAME);
  });

  it("keeps an error's status and Status message", async () => {
    await expect(getJson(kc, '/forbidden')).rejects.toMatchObject({ statusCode: 403, message: 'GET /forbidden: HTTP 403: services is forbidden: User "ü" cannot list' });
  });
});
