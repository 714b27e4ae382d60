/**
 * libnftables (Debian's libnftables1) through koffi: the calls that run an nft script in
 * process, and nothing else. Loaded on demand, so that an image without the library (or
 * without koffi's prebuilt binary for its platform) still starts, and runs `nft -f -`.
 *
 * A script runs on one of koffi's worker threads (an async call): a full sync at 10,000
 * services takes the kernel more than a second, which must not stall the health server on
 * the event loop.
 */

export const LIBRARY = 'libnftables.so.1';

/** What one script did: nft's own output (for list commands) and error text. */
export interface NftLibraryResult {
  status: number;
  output: string;
  error: string;
}

export interface Libnftables {
  readonly library: string;
  /** Runs a script (one atomic transaction, as `nft -f` does); never throws for nft's errors. */
  run(script: string): Promise<NftLibraryResult>;
  /** Frees the context; later runs reject. */
  close(): void;
}

/** An opaque pointer from the library (koffi's External). */
type Pointer = object;

/**
 * Loads koffi and the library and makes the context; throws when either cannot be had.
 *
 * The context is made once, at start-up: making one opens its netlink socket, and
 * libnftables 1.0.6 exits the process when it cannot (no descriptor left under a
 * connection flood). A context keeps nft's cache of what its commands read, so a script
 * of more than `renewAboveBytes` (a whole table, which nft parses into ~40 bytes per byte)
 * gets a fresh context afterwards. glibc keeps what nft freed in its arenas: after each
 * script `malloc_trim(0)` hands it back to the system, or the agent's RSS would stay at
 * nft's peak (450 MB for a 10,000-service table; 70 MB after the trim).
 */
export async function loadLibnftables(library: string = LIBRARY, renewAboveBytes = 1 << 20): Promise<Libnftables> {
  const koffi = (await import('koffi')).default;
  const lib = koffi.load(library);
  const nft_ctx_new = lib.func('void *nft_ctx_new(uint32_t flags)');
  const nft_ctx_free = lib.func('void nft_ctx_free(void *ctx)');
  const nft_ctx_buffer_output = lib.func('int nft_ctx_buffer_output(void *ctx)');
  const nft_ctx_buffer_error = lib.func('int nft_ctx_buffer_error(void *ctx)');
  // Each get returns what was buffered since the previous one, and empties the buffer.
  const nft_ctx_get_output_buffer = lib.func('const char *nft_ctx_get_output_buffer(void *ctx)');
  const nft_ctx_get_error_buffer = lib.func('const char *nft_ctx_get_error_buffer(void *ctx)');
  const nft_run_cmd_from_buffer = lib.func('int nft_run_cmd_from_buffer(void *ctx, const char *buf)');
  const trim = mallocTrim(koffi);

  const newContext = (): Pointer => {
    // NFT_CTX_DEFAULT: no flags.
    const ctx = nft_ctx_new(0) as Pointer | null;
    if (!ctx) throw new Error(`${library}: nft_ctx_new failed`);
    if (nft_ctx_buffer_output(ctx) !== 0 || nft_ctx_buffer_error(ctx) !== 0) {
      nft_ctx_free(ctx);
      throw new Error(`${library}: cannot buffer nft's output`);
    }
    return ctx;
  };
  let ctx: Pointer | null = newContext();
  // One at a time: a context is not thread-safe, and nft's parser is not reentrant.
  let queue: Promise<unknown> = Promise.resolve();

  const runOne = (script: string) =>
    new Promise<NftLibraryResult>((resolve, reject) => {
      const c = ctx;
      if (!c) return reject(new Error(`${library}: closed`));
      nft_run_cmd_from_buffer.async(c, script, (err: Error | null, status: number) => {
        const output = err ? '' : ((nft_ctx_get_output_buffer(c) as string | null) ?? '');
        const error = err ? '' : ((nft_ctx_get_error_buffer(c) as string | null) ?? '');
        if (script.length > renewAboveBytes && ctx === c) {
          nft_ctx_free(c);
          ctx = newContext();
        }
        trim?.();
        if (err) reject(err);
        else resolve({ status, output, error });
      });
    });

  return {
    library,
    run(script) {
      const next = queue.then(() => runOne(script));
      queue = next.catch(() => {});
      return next;
    },
    close() {
      const c = ctx;
      ctx = null;
      // Once the queued scripts are done with it.
      if (c) void queue.then(() => nft_ctx_free(c));
    },
  };
}

/** glibc's malloc_trim, or null where the C library has none (musl). */
function mallocTrim(koffi: { load: typeof import('koffi').load }): (() => void) | null {
  try {
    const fn = koffi.load('libc.so.6').func('int malloc_trim(size_t pad)');
    return () => void fn(0);
  } catch {
    return null;
  }
}
