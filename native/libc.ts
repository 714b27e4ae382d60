/**
 * The C library's socket, epoll and splice calls through koffi: what userspace mode's
 * splice engine (src/modes/userspace/splice/) needs to run a TCP proxy on the kernel's
 * own calls, and nothing else. Each call returns what the kernel returned (-1 on
 * failure, with `errno()` saying why), as C code would see it; pointers are Buffers the
 * caller owns, so a call allocates nothing.
 *
 * Loaded on demand: where koffi or the library does not load, the agent runs its Node
 * data path instead (src/modes/userspace/proxier.ts).
 */

export const LIBC = 'libc.so.6';

/** Linux x86_64 / aarch64 values of the constants the engine uses. */
export const C = {
  AF_INET: 2,
  AF_INET6: 10,
  SOCK_STREAM: 1,
  SOCK_NONBLOCK: 0o4000,
  SOCK_CLOEXEC: 0o2000000,
  SOL_SOCKET: 1,
  SO_REUSEADDR: 2,
  SO_ERROR: 4,
  SO_KEEPALIVE: 9,
  SO_LINGER: 13,
  IPPROTO_TCP: 6,
  TCP_NODELAY: 1,
  TCP_KEEPIDLE: 4,
  IPPROTO_IPV6: 41,
  IPV6_V6ONLY: 26,
  SHUT_WR: 1,
  EPOLL_CLOEXEC: 0o2000000,
  EPOLL_CTL_ADD: 1,
  EPOLL_CTL_DEL: 2,
  EPOLLIN: 0x1,
  EPOLLOUT: 0x4,
  EPOLLERR: 0x8,
  EPOLLHUP: 0x10,
  EPOLLRDHUP: 0x2000,
  /** 1 << 31, as the unsigned value the kernel reads. */
  EPOLLET: 0x80000000,
  O_NONBLOCK: 0o4000,
  O_CLOEXEC: 0o2000000,
  EFD_NONBLOCK: 0o4000,
  EFD_CLOEXEC: 0o2000000,
  SPLICE_F_MOVE: 1,
  SPLICE_F_NONBLOCK: 2,
  EINTR: 4,
  EAGAIN: 11,
  EPROTO: 71,
  ECONNABORTED: 103,
  EINPROGRESS: 115,
} as const;

/** `struct epoll_event` is packed on x86_64: 4 bytes of events, then 8 of data (the fd, here). */
export const EPOLL_EVENT_SIZE = 12;

export interface Libc {
  socket(domain: number, type: number, protocol: number): number;
  /** setsockopt with an int value. */
  setInt(fd: number, level: number, name: number, value: number): number;
  /** getsockopt of an int value; -1 on failure. */
  getInt(fd: number, level: number, name: number): number;
  /** SO_LINGER on with a timeout of 0: the next close sends a reset. */
  lingerZero(fd: number): number;
  bind(fd: number, addr: Buffer): number;
  listen(fd: number, backlog: number): number;
  /** Accepts without the peer's address. */
  accept4(fd: number, flags: number): number;
  connect(fd: number, addr: Buffer): number;
  shutdown(fd: number, how: number): number;
  close(fd: number): number;
  /** A pipe: [read end, write end], or null (errno says why). */
  pipe2(flags: number): [number, number] | null;
  /** From `from` to `to`, at most `len` bytes; one of them is a pipe. */
  splice(from: number, to: number, len: number, flags: number): number;
  epollCreate1(flags: number): number;
  /** `event` is one EPOLL_EVENT_SIZE record. */
  epollCtl(epfd: number, op: number, fd: number, event: Buffer | null): number;
  /** Into `events` (maxEvents records). */
  epollWait(epfd: number, events: Buffer, maxEvents: number, timeoutMs: number): number;
  eventfd(initial: number, flags: number): number;
  read(fd: number, buf: Buffer, len: number): number;
  write(fd: number, buf: Buffer, len: number): number;
  /** The calling thread's errno after the last call. */
  errno(): number;
  strerror(errno: number): string;
}

const loaded = new Map<string, Promise<Libc>>();

/** The bindings, made once per library and thread; rejects when koffi or the library cannot load. */
export function loadLibc(library: string = LIBC): Promise<Libc> {
  let l = loaded.get(library);
  if (!l) loaded.set(library, (l = bind(library)));
  return l;
}

async function bind(library: string): Promise<Libc> {
  const koffi = (await import('koffi')).default;
  const epollEvent = koffi.pack({ events: 'uint32_t', data: 'uint64_t' });
  if (koffi.sizeof(epollEvent) !== EPOLL_EVENT_SIZE) throw new Error(`struct epoll_event is ${koffi.sizeof(epollEvent)} bytes here, not ${EPOLL_EVENT_SIZE}`);
  const lib = koffi.load(library);
  const socket = lib.func('int socket(int domain, int type, int protocol)');
  const setsockopt = lib.func('int setsockopt(int fd, int level, int name, void *value, uint32_t len)');
  const getsockopt = lib.func('int getsockopt(int fd, int level, int name, void *value, void *len)');
  const bind = lib.func('int bind(int fd, void *addr, uint32_t len)');
  const listen = lib.func('int listen(int fd, int backlog)');
  const accept4 = lib.func('int accept4(int fd, void *addr, void *len, int flags)');
  const connect = lib.func('int connect(int fd, void *addr, uint32_t len)');
  const shutdown = lib.func('int shutdown(int fd, int how)');
  const close = lib.func('int close(int fd)');
  const pipe2 = lib.func('int pipe2(void *fds, int flags)');
  const splice = lib.func('long splice(int from, void *fromOffset, int to, void *toOffset, size_t len, unsigned int flags)');
  const epoll_create1 = lib.func('int epoll_create1(int flags)');
  const epoll_ctl = lib.func('int epoll_ctl(int epfd, int op, int fd, void *event)');
  const epoll_wait = lib.func('int epoll_wait(int epfd, void *events, int maxEvents, int timeout)');
  const eventfd = lib.func('int eventfd(unsigned int initial, int flags)');
  const read = lib.func('long read(int fd, void *buf, size_t len)');
  const write = lib.func('long write(int fd, void *buf, size_t len)');
  const strerror = lib.func('const char *strerror(int errnum)');

  // Scratch space for option values: the engine runs on one thread.
  const int = Buffer.alloc(4);
  const intLen = Buffer.alloc(4);
  const fds = Buffer.alloc(8);
  const linger = Buffer.alloc(8);
  linger.writeInt32LE(1, 0);
  linger.writeInt32LE(0, 4);
  return {
    socket: (d, t, p) => socket(d, t, p) as number,
    setInt(fd, level, name, value) {
      int.writeInt32LE(value, 0);
      return setsockopt(fd, level, name, int, 4) as number;
    },
    getInt(fd, level, name) {
      intLen.writeUInt32LE(4, 0);
      return (getsockopt(fd, level, name, int, intLen) as number) === 0 ? int.readInt32LE(0) : -1;
    },
    lingerZero: (fd) => setsockopt(fd, C.SOL_SOCKET, C.SO_LINGER, linger, 8) as number,
    bind: (fd, addr) => bind(fd, addr, addr.length) as number,
    listen: (fd, backlog) => listen(fd, backlog) as number,
    accept4: (fd, flags) => accept4(fd, null, null, flags) as number,
    connect: (fd, addr) => connect(fd, addr, addr.length) as number,
    shutdown: (fd, how) => shutdown(fd, how) as number,
    close: (fd) => close(fd) as number,
    pipe2: (flags) => ((pipe2(fds, flags) as number) === 0 ? [fds.readInt32LE(0), fds.readInt32LE(4)] : null),
    splice: (from, to, len, flags) => splice(from, null, to, null, len, flags) as number,
    epollCreate1: (flags) => epoll_create1(flags) as number,
    epollCtl: (epfd, op, fd, event) => epoll_ctl(epfd, op, fd, event) as number,
    epollWait: (epfd, events, max, timeout) => epoll_wait(epfd, events, max, timeout) as number,
    eventfd: (initial, flags) => eventfd(initial, flags) as number,
    read: (fd, buf, len) => read(fd, buf, len) as number,
    write: (fd, buf, len) => write(fd, buf, len) as number,
    errno: () => koffi.errno(),
    strerror: (n) => (strerror(n) as string | null) ?? `errno ${n}`,
  };
}
