/**
 * libnetfilter_conntrack (Debian's libnetfilter-conntrack3) through koffi: the calls the
 * netlink cleaner needs, and nothing else. Loaded on demand, so that an image without the
 * library (or without koffi's prebuilt binary for its platform) still starts, and falls
 * back to the `conntrack` command.
 *
 * The library's objects stay opaque: handles (`struct nfct_handle *`) and entries
 * (`struct nf_conntrack *`) are koffi pointers, read only through the library's getters.
 * The numbers below are the library's ABI (libnetfilter_conntrack.h, stable since 1.0).
 * See native/netfilter-conntrack.md for how the cleaner uses them.
 */

export const LIBRARY = 'libnetfilter_conntrack.so.3';

/** NFNL_SUBSYS_CTNETLINK: `nfct_open(CONNTRACK, 0)`, no event groups. */
const CONNTRACK = 1;
/** enum nf_conntrack_msg_type: every message type. */
const NFCT_T_ALL = 7;
/** enum nf_conntrack_query. */
export const NFCT_Q_DESTROY = 2;
export const NFCT_Q_DUMP = 5;
/** Callback verdicts: stop, keep going, keep going and keep the entry (the callback now owns it). */
export const NFCT_CB_STOP = 0;
export const NFCT_CB_CONTINUE = 1;
export const NFCT_CB_STOLEN = 2;
/** enum nf_conntrack_attr. */
export const ATTR_ORIG_IPV4_DST = 1;
export const ATTR_REPL_IPV4_SRC = 2;
export const ATTR_ORIG_PORT_DST = 9;
export const ATTR_ORIG_L3PROTO = 15;
export const ATTR_ORIG_L4PROTO = 17;
/** enum nf_conntrack_attr_grp: an address of either family (union nfct_attr_grp_addr, 16 bytes). */
export const ATTR_GRP_ORIG_ADDR_DST = 13;
export const ATTR_GRP_REPL_ADDR_SRC = 14;
export const ADDR_GRP_SIZE = 16;
export const AF_INET = 2;
export const AF_INET6 = 10;

/** An opaque pointer from the library (koffi's External); null for NULL. */
export type Pointer = object;

/** The dump callback: gets every entry; returns a verdict (NFCT_CB_*). */
export type EntryCallback = (ct: Pointer) => number;

export interface NetfilterConntrack {
  readonly library: string;
  /** A ctnetlink handle, or null (errno says why). */
  open(): Pointer | null;
  close(h: Pointer): void;
  /**
   * Dumps the table of one address family (AF_INET, AF_INET6) on `h`, calling `onEntry`
   * for each entry, synchronously; 0, or -1 with errno. An entry is valid only during
   * the call, unless the callback answers NFCT_CB_STOLEN: then it is the caller's, to
   * `free`.
   */
  dump(h: Pointer, family: number, onEntry: EntryCallback): number;
  /** Deletes the entry with `ct`'s tuple on `h`; 0, or -1 with errno (ENOENT: gone already). */
  destroyEntry(h: Pointer, ct: Pointer): number;
  /** Frees an entry the callback kept. */
  free(ct: Pointer): void;
  getU8(ct: Pointer, attr: number): number;
  /** Network byte order, as the library keeps ports. */
  getU16(ct: Pointer, attr: number): number;
  /** An IPv4 address: its bytes in network order, read as a native uint32. */
  getU32(ct: Pointer, attr: number): number;
  /** Copies an attribute group into `out`; 0, or -1 when the entry does not have it. */
  getGroup(ct: Pointer, group: number, out: Buffer): number;
  /** errno as the last call left it. */
  errno(): number;
}

/** Loads koffi and the library, and binds every call; throws when either cannot be had. */
export async function loadNetfilterConntrack(library: string = LIBRARY): Promise<NetfilterConntrack> {
  const koffi = (await import('koffi')).default;
  const lib = koffi.load(library);
  const Callback = koffi.proto('int kpt_nfct_cb(int type, void *ct, void *data)');
  const nfct_open = lib.func('void *nfct_open(uint8_t subsys_id, unsigned int subscriptions)');
  const nfct_close = lib.func('int nfct_close(void *h)');
  const nfct_callback_register = lib.func('int nfct_callback_register(void *h, int type, kpt_nfct_cb *cb, void *data)');
  const nfct_callback_unregister = lib.func('void nfct_callback_unregister(void *h)');
  const nfct_query = lib.func('int nfct_query(void *h, int query, void *data)');
  const nfct_destroy = lib.func('void nfct_destroy(void *ct)');
  const nfct_get_attr_u8 = lib.func('uint8_t nfct_get_attr_u8(void *ct, int type)');
  const nfct_get_attr_u16 = lib.func('uint16_t nfct_get_attr_u16(void *ct, int type)');
  const nfct_get_attr_u32 = lib.func('uint32_t nfct_get_attr_u32(void *ct, int type)');
  const nfct_get_attr_grp = lib.func('int nfct_get_attr_grp(void *ct, int type, void *data)');

  return {
    library,
    open: () => nfct_open(CONNTRACK, 0) as Pointer | null,
    close: (h) => void nfct_close(h),
    dump(h, family, onEntry) {
      // Registered for this dump only: koffi has a bounded number of callback slots.
      const cb = koffi.register((_type: number, ct: Pointer) => onEntry(ct), koffi.pointer(Callback));
      try {
        if (nfct_callback_register(h, NFCT_T_ALL, cb, null) !== 0) return -1;
        try {
          // NFCT_Q_DUMP takes a pointer to a uint32_t family; the kernel dumps that family only.
          const data = Buffer.alloc(4);
          data.writeUInt32LE(family);
          return nfct_query(h, NFCT_Q_DUMP, data) as number;
        } finally {
          nfct_callback_unregister(h);
        }
      } finally {
        koffi.unregister(cb);
      }
    },
    destroyEntry: (h, ct) => nfct_query(h, NFCT_Q_DESTROY, ct) as number,
    free: (ct) => void nfct_destroy(ct),
    getU8: (ct, attr) => nfct_get_attr_u8(ct, attr) as number,
    getU16: (ct, attr) => nfct_get_attr_u16(ct, attr) as number,
    getU32: (ct, attr) => nfct_get_attr_u32(ct, attr) as number,
    getGroup: (ct, group, out) => nfct_get_attr_grp(ct, group, out) as number,
    errno: () => koffi.errno(),
  };
}
