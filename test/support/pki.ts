/**
 * A cluster CA and the API server's serving certificate, made with the `openssl` command
 * when a test runs (no certificate is committed). `serving` issues the good one and the
 * broken ones a TLS test needs: signed by another CA, expired, or for other names.
 */
import { spawnSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export interface KeyPair {
  /** PEM */
  cert: string;
  key: string;
}

export interface CertificateAuthority extends KeyPair {
  certPath: string;
  keyPath: string;
}

export interface ServingOptions {
  /** subjectAltName DNS names. */
  dns: string[];
  /** subjectAltName IP addresses. */
  ips?: string[];
  /** Valid until this many days from now; negative: expired that long ago. Default 1. */
  days?: number;
}

function openssl(args: string[]): void {
  const r = spawnSync('openssl', args, { encoding: 'utf8' });
  if (r.error) throw new Error(`openssl: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`openssl ${args.join(' ')} failed (${r.status}): ${r.stderr.trim()}`);
}

const KEY = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];

/** A self-signed CA in `dir/<name>.crt` and `.key`. */
export function makeCA(dir: string, name: string): CertificateAuthority {
  mkdirSync(dir, { recursive: true });
  const certPath = join(dir, `${name}.crt`);
  const keyPath = join(dir, `${name}.key`);
  openssl(['req', '-x509', ...KEY, '-keyout', keyPath, '-out', certPath, '-subj', `/CN=${name}`, '-days', '2',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
  return { certPath, keyPath, cert: readFileSync(certPath, 'utf8'), key: readFileSync(keyPath, 'utf8') };
}

/** A serving certificate for kube-apiserver signed by `ca`, in `dir/<name>.crt` and `.key`. */
export function issueServing(ca: CertificateAuthority, dir: string, name: string, opts: ServingOptions): KeyPair {
  const base = join(dir, name);
  const san = [...opts.dns.map((d) => `DNS:${d}`), ...(opts.ips ?? []).map((ip) => `IP:${ip}`)].join(',');
  writeFileSync(`${base}.ext`, `subjectAltName=${san}\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n`);
  openssl(['req', ...KEY, '-keyout', `${base}.key`, '-out', `${base}.csr`, '-subj', '/CN=kube-apiserver']);
  // OpenSSL 3.0 takes a negative -days: notAfter that far in the past, an expired certificate.
  const days = opts.days ?? 1;
  openssl(['x509', '-req', '-in', `${base}.csr`, '-CA', ca.certPath, '-CAkey', ca.keyPath, '-CAcreateserial',
    '-days', String(days), '-extfile', `${base}.ext`, '-out', `${base}.crt`]);
  const cert = readFileSync(`${base}.crt`, 'utf8');
  const expired = Date.parse(new X509Certificate(cert).validTo) < Date.now();
  if (expired !== days < 0) throw new Error(`openssl made ${name} ${expired ? 'expired' : 'valid'}, asked for ${days} days`);
  return { cert, key: readFileSync(`${base}.key`, 'utf8') };
}
