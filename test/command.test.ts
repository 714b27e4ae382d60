/**
 * runCommand: a tool gets its input whole, through a pipe or, above FILE_INPUT_BYTES,
 * through a file that is gone by the time the tool runs; a tool that cannot start is a
 * rejection.
 */
import { createHash } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { describe, expect, it } from 'vitest';
import { FILE_INPUT_BYTES, runCommand } from '../src/exec/command.js';

const sha256 = (chunks: Buffer[]) => createHash('sha256').update(Buffer.concat(chunks)).digest('hex');
const leftovers = () => readdirSync(tmpdir()).filter((f) => f.startsWith('kpt-input-'));

describe('runCommand', () => {
  it('hands a small input and a large one to the tool whole, in order', async () => {
    for (const size of [1000, FILE_INPUT_BYTES * 3]) {
      const chunks = [Buffer.alloc(size, 'a'), Buffer.from('middle'), Buffer.alloc(size >> 1, 'b')];
      const r = await runCommand('sha256sum', [], chunks);
      expect(r.status).toBe(0);
      expect(r.stdout.split(' ')[0]).toBe(sha256(chunks));
    }
  });

  it('leaves no file behind, and the tool sees its input as a file, not a pipe, only when it is large', async () => {
    const before = leftovers();
    const kind = async (size: number) => (await runCommand('stat', ['-L', '-c', '%F', '/dev/stdin'], [Buffer.alloc(size, 'x')])).stdout.trim();
    expect(await kind(10)).not.toBe('regular file');
    expect(await kind(FILE_INPUT_BYTES + 1)).toBe('regular file');
    expect(leftovers()).toEqual(before);
  });

  it('rejects when the tool cannot start, large input or not', async () => {
    await expect(runCommand('/nonexistent/tool', [], [Buffer.alloc(10)])).rejects.toThrow(/ENOENT/);
    await expect(runCommand('/nonexistent/tool', [], [Buffer.alloc(FILE_INPUT_BYTES + 1)])).rejects.toThrow(/ENOENT/);
  });
});
