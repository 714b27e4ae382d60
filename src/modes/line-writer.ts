/**
 * An append-only byte buffer of ASCII lines. A 10k-service ruleset is 430,000 lines;
 * holding each as its own string costs hundreds of MB and most of the render time in
 * garbage collection, while writing each line once into one buffer costs only the
 * buffer. Offsets let callers cut the result into per-service pieces without copying.
 */
// Buffer's per-encoding writer: `write(text, offset, 'latin1')` looks the encoding up on
// every call, which at 430,000 lines costs more than the rest of the render.
type Latin1Buffer = Buffer & { latin1Write(text: string, offset: number): number };

export class LineWriter {
  private buf: Buffer;
  private end = 0;

  constructor(initialBytes = 64 * 1024) {
    this.buf = Buffer.allocUnsafe(initialBytes);
  }

  get offset(): number {
    return this.end;
  }

  private reserve(bytes: number): void {
    const need = this.end + bytes;
    if (need <= this.buf.length) return;
    const grown = Buffer.allocUnsafe(Math.max(need, this.buf.length * 2));
    this.buf.copy(grown, 0, 0, this.end);
    this.buf = grown;
  }

  /** Appends `text` and a newline. Text must be ASCII (the renderer's inputs are validated). */
  line(text: string): void {
    this.reserve(text.length + 1);
    this.end += (this.buf as Latin1Buffer).latin1Write(text, this.end);
    this.buf[this.end++] = 0x0a;
  }

  /** The bytes written so far (a view, not a copy). */
  bytes(): Buffer {
    return this.buf.subarray(0, this.end);
  }
}
