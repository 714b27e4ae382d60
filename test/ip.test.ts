import { describe, expect, it } from 'vitest';
import { cidrContains, joinHostPort, parseCIDR, parseIP } from '../src/net/ip.js';

describe('parseIP', () => {
  it.each([
    ['10.96.0.1', '10.96.0.1'],
    ['010.096.000.001', '10.96.0.1'],
    ['0.0.0.0', '0.0.0.0'],
    ['2001:DB8::1', '2001:db8::1'],
    ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'],
    ['fd00:0:0:0:0:0:0:a', 'fd00::a'],
    ['::', '::'],
    ['::1', '::1'],
    ['1:0:0:2:0:0:0:3', '1:0:0:2::3'],
  ])('%s -> %s', (input, want) => {
    expect(parseIP(input)?.text).toBe(want);
  });

  it.each(['256.1.1.1', '1.2.3', '1.2.3.4.5', '1.2.3.4 ', 'a.b.c.d', '1..2.3', '.1.2.3', '1.2.3.', '1.2.3.0001', '1.2.3.-1', '1.2.3.4.', '+1.2.3.4', '1.2.3.4\n-j ACCEPT', '::ffff:1.2.3.4', '1:2:3:4:5:6:7:8:9', '1::2::3', '', '12345::'])(
    'rejects %j',
    (input) => {
      expect(parseIP(input)).toBeNull();
    },
  );
});

describe('parseCIDR', () => {
  it('masks host bits and prints canonically', () => {
    expect(parseCIDR('10.244.1.7/16')?.text).toBe('10.244.0.0/16');
    expect(parseCIDR('fd00:10:244::1/56')?.text).toBe('fd00:10:244::/56');
    expect(parseCIDR('0.0.0.0/0')?.prefix).toBe(0);
    expect(parseCIDR(' 192.168.0.0/16 ')?.text).toBe('192.168.0.0/16');
  });

  it.each(['10.0.0.0/33', '10.0.0.0', '10.0.0.0/8/8', '::/129', 'x/8', '10.0.0.0/-1'])('rejects %j', (input) => {
    expect(parseCIDR(input)).toBeNull();
  });

  it('tests membership per family', () => {
    const c = parseCIDR('10.244.0.0/16')!;
    expect(cidrContains(c, parseIP('10.244.3.4')!)).toBe(true);
    expect(cidrContains(c, parseIP('10.245.0.1')!)).toBe(false);
    expect(cidrContains(parseCIDR('::/0')!, parseIP('10.0.0.1')!)).toBe(false);
  });
});

describe('joinHostPort', () => {
  it('brackets IPv6 only', () => {
    expect(joinHostPort('10.0.0.1', 80)).toBe('10.0.0.1:80');
    expect(joinHostPort('fd00::1', 80)).toBe('[fd00::1]:80');
  });
});
