/**
 * V8 builds concatenated strings as trees ("cons strings") and walks the tree again on
 * every comparison, hash and write. Names and addresses in the model are compared,
 * hashed and printed hundreds of thousands of times per render, so they are flattened
 * once when built: converting a string to a number flattens it in place.
 */
export function flat(s: string): string {
  Number(s);
  return s;
}
