import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { hash16 } from '../src/modes/iptables/names.js';
import { probability } from '../src/modes/iptables/render.js';

/** RFC 4648 base32 written the slow, obvious way, bit by bit. */
function referenceHash16(s: string): string {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  const bits = [...createHash('sha256').update(s).digest()].map((b) => b.toString(2).padStart(8, '0')).join('');
  let out = '';
  for (let i = 0; i < 80; i += 5) out += alphabet[Number.parseInt(bits.slice(i, i + 5), 2)];
  return out;
}

describe('chain name hashing', () => {
  it.each([
    ['ns1/svc1:p80tcp', 'XPGD46QRK7WJZT7O'],
    ['ns2/svc2:p8080tcp', '2VJB64SDSIJUP5T6'],
    ['ns1/svc1:p80tcp10.180.0.1:80', 'SXIVWICOYRO3J4NJ'],
    ['ns4/svc4:p80tcp10.180.0.5:80', 'C6EBXVWJJZMIWKLZ'],
  ])('upstream test vector %s -> %s', (input, want) => {
    expect(hash16(input)).toBe(want);
  });

  it('matches a bit-by-bit base32 of sha256 for any ASCII name', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'grapheme-ascii', maxLength: 300 }), (s) => {
        expect(hash16(s)).toBe(referenceHash16(s));
      }),
      { numRuns: 500 },
    );
  });
});

describe('probability', () => {
  it.each([
    [2, '0.5000000000'],
    [3, '0.3333333333'],
    [6, '0.1666666667'],
    [7, '0.1428571429'],
    // 1/2048 = 0.00048828125 exactly: a tie at the 10th decimal, rounded to even as Go does.
    [2048, '0.0004882812'],
    // 1/4096 = 0.000244140625: not a tie, rounds up.
    [4096, '0.0002441406'],
  ])('1/%i prints as %s', (n, want) => {
    expect(probability(n)).toBe(want);
  });

  it('agrees with toFixed(10) wherever 1/n is not a tie', () => {
    for (let n = 1; n <= 5000; n++) {
      const exactTie = (10_000_000_000 * 2) % n === 0 && 10_000_000_000 % n !== 0;
      if (!exactTie) expect(probability(n)).toBe((1 / n).toFixed(10));
    }
  });
});
