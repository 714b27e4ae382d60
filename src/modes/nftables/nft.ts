/**
 * How nftables mode talks to the kernel: an nft script in, nft's answer out. In process
 * through libnftables when it loads, else `nft -f -` (the script on stdin), chosen once
 * with one warning saying why. Each script is one atomic transaction either way.
 */
import type { Logger } from 'pino';
import type { Runner } from '../../exec/command.js';
import { loadLibnftables, LIBRARY } from '../../../native/libnftables.js';

export interface NftResult {
  ok: boolean;
  /** What list commands printed. */
  output: string;
  /** nft's own error text (what `nft -f` prints on stderr), empty when ok. */
  error: string;
}

export interface Nft {
  readonly kind: 'library' | 'command';
  /** A transaction: nft's commands (ASCII; or the chunks of them, in order), applied all or none. */
  run(script: string | readonly Buffer[]): Promise<NftResult>;
  /**
   * A read (`list ...`). nft reads the objects a listing needs into its cache, at 10,000
   * services hundreds of MB: the library's path lists through the command where it can.
   * `terse` leaves set elements out (`nft -t`); only the command does that, so a terse
   * listing rejects where there is no nft command.
   */
  list(command: string, terse?: boolean): Promise<NftResult>;
  close(): void;
}

export class NftError extends Error {
  constructor(
    readonly what: string,
    readonly detail: string,
  ) {
    super(`${what}: ${detail}`);
  }
}

/** Runs a script, throwing nft's error text when it fails. */
export async function runNft(nft: Nft, what: string, script: string): Promise<string> {
  const r = await nft.run(script);
  if (!r.ok) throw new NftError(what, r.error.trim() || 'nft failed without saying why');
  return r.output;
}

/** `nft -f -`: the fallback, and what a test compares the library with. */
export function commandNft(run: Runner, bin = 'nft'): Nft {
  const runScript = async (script: string | readonly Buffer[], terse = false): Promise<NftResult> => {
    const r = await run(bin, [...(terse ? ['-t'] : []), '-f', '-'], typeof script === 'string' ? [Buffer.from(script)] : [...script]);
    return { ok: r.status === 0, output: r.stdout, error: r.status === 0 ? '' : r.stderr || `${bin} exited ${r.status}` };
  };
  return { kind: 'command', run: (script) => runScript(script), list: runScript, close() {} };
}

export interface NftOptions {
  /** The library to load (a soname or a path); default libnftables.so.1. */
  library?: string;
}

/**
 * Scripts above this size (a full sync of a large table) go to `nft -f -` when the command
 * is there: nft's parser takes about 40 bytes of memory per byte of script (360 MB for a
 * 10,000-service table), which in process would stay the agent's peak for good.
 */
export const IN_PROCESS_MAX_BYTES = 1 << 20;

const scriptBytes = (script: string | readonly Buffer[]) => (typeof script === 'string' ? script.length : script.reduce((n, b) => n + b.length, 0));

/**
 * libnftables in process when it loads, else the nft command (with one warning). With
 * the library, scripts above IN_PROCESS_MAX_BYTES still run as `nft -f -` where the
 * command exists, and in process where it does not.
 */
export async function chooseNft(run: Runner, log: Logger, opts: NftOptions = {}): Promise<Nft> {
  const library = opts.library ?? LIBRARY;
  try {
    const lib = await loadLibnftables(library);
    log.info({ library, inProcessMaxBytes: IN_PROCESS_MAX_BYTES }, 'applying nftables rules in process through libnftables (larger transactions with nft -f -)');
    const command = commandNft(run);
    const inProcess = async (script: string | readonly Buffer[]): Promise<NftResult> => {
      const r = await lib.run(typeof script === 'string' ? script : Buffer.concat(script).toString('latin1'));
      return { ok: r.status === 0, output: r.output, error: r.status === 0 ? '' : r.error || `nft_run_cmd_from_buffer returned ${r.status}` };
    };
    return {
      kind: 'library',
      // A command that cannot start (no nft binary) is a rejection: then the library does it.
      run: (script) => (scriptBytes(script) > IN_PROCESS_MAX_BYTES ? command.run(script).catch(() => inProcess(script)) : inProcess(script)),
      list: (cmd, terse) => (terse ? command.list(cmd, true) : command.list(cmd).catch(() => inProcess(cmd))),
      close: () => lib.close(),
    };
  } catch (err) {
    log.warn({ library, err: (err as Error).message }, 'libnftables did not load; applying nftables rules with `nft -f -` instead');
    return commandNft(run);
  }
}
