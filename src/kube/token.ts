/**
 * A service account's token, read from the file kubelet keeps fresh. Bound tokens expire
 * (an hour by default) and kubelet rewrites the file well before; client-go re-reads it at
 * most a minute later. client-node 1.4's own reader (file_auth.js) does the same but never
 * sooner, so a token the API server refuses would keep being sent for up to a minute: here
 * a refusal (401) drops the cached token and the next request reads the file again.
 */
import { readFileSync } from 'node:fs';

/** How long a token read from the file is used before it is read again, as client-go. */
export const TOKEN_MAX_AGE_MS = 60_000;

export class ServiceAccountToken {
  private cached: { token: string; readAt: number } | null = null;
  private lastRefused: string | null = null;

  constructor(
    readonly path: string,
    private readonly now: () => number = Date.now,
  ) {}

  /** The token to send; throws when the file cannot be read or is empty. */
  current(): string {
    const now = this.now();
    if (this.cached === null || now - this.cached.readAt > TOKEN_MAX_AGE_MS) {
      let text: string;
      try {
        text = readFileSync(this.path, 'utf8');
      } catch (err) {
        throw new Error(`cannot read the service account token ${this.path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
      }
      // A token is one line; a trailing newline (a hand-written file) is no part of it.
      const token = text.trim();
      if (token === '') throw new Error(`the service account token ${this.path} is empty`);
      this.cached = { token, readAt: now };
    }
    return this.cached.token;
  }

  /**
   * The API server answered 401: read the file again before the next request. True the
   * first time a given token is refused, so that each refusal is reported once.
   */
  refused(): boolean {
    const token = this.cached?.token ?? null;
    this.cached = null;
    if (token === null || token === this.lastRefused) return false;
    this.lastRefused = token;
    return true;
  }
}
