/**
 * libnftables (Debian's libnftables1) through koffi: the calls that run an nft script in
 * process, and nothing else. Loaded on demand, so that an image without the library (or
 * without koffi's prebuilt binary for its platform) still starts, and runs `nft -f -`.
 *
 * A script runs on one of koffi's worker threads (an async call): a full sync at 10,000
 * services takes the kernel more than a second, which must not stall the health server on
 * the event loop. Scripts run one at a time.
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
  /** Later runs reject. */
  close(): void;
}

/** An opaque pointer from the library (koffi's External). */
type Pointer = object;

/**
 * Loads koffi and the library; throws when either cannot be had.
 *
 * Each script gets a context of its own, freed after it: a context keeps nft's cache of
 * the kernel's ruleset, which for a 10,000-service table is hundreds of MB. glibc keeps
 * what nft freed in its arenas, so after each script `malloc_trim(0)` hands it back to
 * the system; without it the agent's RSS would stay at nft's peak (about 450 MB for a
 * full transaction at 10,000 services x 10 endpoints, 70 MB after the trim).
 */
export async function loadLibnftables(library: string = LIBRARY): Promise<Libnftables> {
  const koffi = (await import('koffi')).default;
  const lib = koffi.load(library);
  const nft_ctx_new = lib.func('void *nft_ctx_new(uint32_t flags)');
  const nft_ctx_free = lib.func('void nft_ctx_free(void *ctx)');
  const nft_ctx_buffer_output = lib.func('int nft_ctx_buffer_output(void *ctx)');
  const nft_ctx_buffer_error = lib.func('int nft_ctx_buffer_error(void *ctx)');
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
  // One at a time, whatever the caller does: nft's parser is not reentrant.
  let queue: Promise<unknown> = Promise.resolve();
  let closed = false;

  const runOne = (script: string) =>
    new Promise<NftLibraryResult>((resolve, reject) => {
      if (closed) return reject(new Error(`${library}: closed`));
      const ctx = newContext();
      nft_run_cmd_from_buffer.async(ctx, script, (err: Error | null, status: number) => {
        const output = err ? '' : ((nft_ctx_get_output_buffer(ctx) as string | null) ?? '');
        const error = err ? '' : ((nft_ctx_get_error_buffer(ctx) as string | null) ?? '');
        nft_ctx_free(ctx);
        trim?.();
        if (err) reject(err);
        else resolve({ status, output, error });
      });
    });

  // Checked once: a context the library cannot make is a library that did not load.
  nft_ctx_free(newContext());
  return {
    library,
    run(script) {
      const next = queue.then(() => runOne(script));
      queue = next.catch(() => {});
      return next;
    },
    close() {
      closed = true;
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
