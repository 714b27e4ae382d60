/**
 * Why a request to the API server failed, in words an operator can act on: a TLS
 * verification failure names its cause (a CA that did not sign the server's certificate,
 * an expired certificate, a certificate for other names), 401 and 403 say what was
 * refused. Pure.
 */

export interface ApiRequest {
  verb: 'list' | 'watch';
  /** `plural` or `plural.group`, as kube-apiserver names a resource. */
  resource: string;
}

const NOT_OUR_CA = "TLS: the API server's certificate is not signed by the cluster CA we trust (wrong CA)";

/** OpenSSL's verification codes, as Node.js reports them in `err.code`. */
const TLS_CAUSES: Record<string, string> = {
  CERT_HAS_EXPIRED: "TLS: the API server's certificate has expired",
  CERT_NOT_YET_VALID: "TLS: the API server's certificate is not valid yet (check the clocks)",
  ERR_TLS_CERT_ALTNAME_INVALID: "TLS: the API server's certificate is not for the name or address we reached it at (hostname mismatch)",
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: NOT_OUR_CA,
  UNABLE_TO_GET_ISSUER_CERT: NOT_OUR_CA,
  UNABLE_TO_GET_ISSUER_CERT_LOCALLY: NOT_OUR_CA,
  SELF_SIGNED_CERT_IN_CHAIN: NOT_OUR_CA,
  DEPTH_ZERO_SELF_SIGNED_CERT: NOT_OUR_CA,
  CERT_SIGNATURE_FAILURE: NOT_OUR_CA,
};

export function statusCodeOf(err: unknown): number | undefined {
  const code = (err as { statusCode?: unknown } | null)?.statusCode;
  return typeof code === 'number' ? code : undefined;
}

const message = (err: unknown) => (err instanceof Error ? err.message : String(err));

export function explainApiError(err: unknown, req: ApiRequest): string {
  const code = (err as { code?: unknown } | null)?.code;
  const tls = typeof code === 'string' ? TLS_CAUSES[code] : undefined;
  if (tls) return `${tls}: ${message(err)}`;
  switch (statusCodeOf(err)) {
    case 401:
      return `401 Unauthorized: the API server refused our credentials to ${req.verb} ${req.resource}`;
    case 403:
      return `403 Forbidden: RBAC does not let us ${req.verb} ${req.resource}: ${message(err)}`;
    default:
      return message(err);
  }
}
