/**
 * Plain sentences for what went wrong while reaching an IMAP server: Node's socket and
 * TLS error codes, certificate problems, first lines that are not an IMAP greeting, and
 * the authentication response codes of RFC 5530.
 *
 * The admin reading these (SPEC §3: "says plainly what failed") should learn what is
 * wrong and what to check, not an OpenSSL error name; the code is kept in parentheses so
 * it can still be searched for.
 */
import type { PeerCertificate } from 'node:tls';

/** Error codes of an error, including those inside an AggregateError (Node 20's
 * happy-eyeballs connect, `autoSelectFamily`, reports one error per address tried). */
export function errorCodes(err: unknown): string[] {
  const out: string[] = [];
  const visit = (e: unknown, depth: number): void => {
    if (!e || typeof e !== 'object' || depth > 4) return;
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && !out.includes(code)) out.push(code);
    const inner = (e as { errors?: unknown }).errors;
    if (Array.isArray(inner)) for (const i of inner) visit(i, depth + 1);
    visit((e as { cause?: unknown }).cause, depth + 1);
  };
  visit(err, 0);
  return out;
}

/** Why a TCP connection (including the DNS lookup) failed. */
export function explainConnectError(err: unknown, host: string, port: number): string {
  const codes = errorCodes(err);
  const where = `${host} port ${port}`;
  const has = (c: string) => codes.includes(c);
  if (has('ENOTFOUND') || has('EAI_NONAME') || has('EAI_NODATA')) {
    return `host not found: DNS has no address for ${host} (check the server name) (ENOTFOUND)`;
  }
  if (has('EAI_AGAIN')) return `host not found: the DNS lookup of ${host} failed for now (no answer from the DNS server) (EAI_AGAIN)`;
  if (has('ECONNREFUSED')) {
    return `connection refused: nothing accepts connections on ${where} (wrong port, the IMAP service is down, or a firewall rejects it) (ECONNREFUSED)`;
  }
  if (has('ETIMEDOUT')) return `timed out: no answer from ${where} (a firewall may be dropping the packets, or the host is down) (ETIMEDOUT)`;
  if (has('EHOSTUNREACH') || has('ENETUNREACH')) return `no route to ${host}: the host or its network is unreachable from here (${codes[0]})`;
  if (has('ECONNRESET')) return `the connection to ${where} was reset while connecting (ECONNRESET)`;
  if (has('EADDRNOTAVAIL')) return `cannot connect to ${where}: the address is not available (EADDRNOTAVAIL)`;
  if (has('ERR_SOCKET_BAD_PORT')) return `port ${port} is not a valid TCP port (1–65535)`;
  return `could not connect to ${where}: ${describe(err)}`;
}

/**
 * Why a TLS handshake failed (certificate problems are not handshake failures here: the
 * probe handshakes without verification and judges the certificate itself, see
 * {@link certificateProblems}).
 */
export function explainTlsHandshakeError(err: unknown, host: string, port: number): string {
  const codes = errorCodes(err);
  const has = (c: string) => codes.includes(c);
  const cert = codes.find((c) => CERT_SENTENCES[c] !== undefined);
  if (cert) return `the certificate was rejected: ${CERT_SENTENCES[cert]} (${cert})`;
  if (has('ERR_SSL_WRONG_VERSION_NUMBER') || has('ERR_SSL_PACKET_LENGTH_TOO_LONG') || has('ERR_SSL_RECORD_LAYER_FAILURE')) {
    return (
      `the server on port ${port} does not speak TLS from the start: it probably expects plain IMAP ` +
      `(choose STARTTLS or no encryption, usually port 143), or it is not an IMAP server (${codes.find((c) => c.startsWith('ERR_SSL')) ?? codes[0]})`
    );
  }
  if (has('ERR_SSL_UNSUPPORTED_PROTOCOL') || has('ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION') || has('ERR_SSL_NO_PROTOCOLS_AVAILABLE')) {
    return `no common TLS version: the server only offers a version this system refuses (TLS 1.0/1.1 are disabled by default since they are insecure, RFC 8996) (${codes[0]})`;
  }
  if (has('ERR_SSL_SSLV3_ALERT_HANDSHAKE_FAILURE') || has('ERR_SSL_NO_SHARED_CIPHER') || has('ERR_SSL_NO_CIPHERS_AVAILABLE')) {
    return `the TLS handshake failed: the server and this system have no cipher in common (${codes[0]})`;
  }
  if (has('ERR_SSL_DH_KEY_TOO_SMALL') || has('ERR_SSL_EE_KEY_TOO_SMALL') || has('ERR_SSL_CA_MD_TOO_WEAK')) {
    return `the server's TLS key or signature is too weak to be accepted (${codes[0]})`;
  }
  if (has('ECONNRESET') || has('EPIPE') || /socket hang up|closed/i.test(describe(err))) {
    return `the server closed the connection during the TLS handshake (it may not speak TLS on ${host} port ${port}, or it refuses this client)`;
  }
  if (has('ERR_SSL_TLSV1_UNRECOGNIZED_NAME')) return `the server has no certificate for the name ${host} (SNI) (ERR_SSL_TLSV1_UNRECOGNIZED_NAME)`;
  return `the TLS handshake failed: ${describe(err)}`;
}

/** OpenSSL verification results as Node reports them (`authorizationError`, `err.code`),
 * X.509 path validation as in RFC 5280 §6. */
const CERT_SENTENCES: Record<string, string> = {
  DEPTH_ZERO_SELF_SIGNED_CERT: 'the certificate is self-signed, not issued by a trusted certificate authority',
  SELF_SIGNED_CERT_IN_CHAIN: 'the certificate chain ends in a self-signed root that this system does not trust (a private CA)',
  UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    'the certificate was issued by an authority this system does not trust (a private CA), or the server does not send its intermediate certificate',
  UNABLE_TO_GET_ISSUER_CERT: 'the certificate was issued by an authority this system does not know',
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: 'the certificate cannot be verified: the server does not send the intermediate certificate(s), or the issuer is not trusted',
  CERT_HAS_EXPIRED: 'the certificate has expired',
  CERT_NOT_YET_VALID: "the certificate is not valid yet (or this machine's clock is wrong)",
  ERR_TLS_CERT_ALTNAME_INVALID: 'the certificate is for another name (name mismatch)',
  HOSTNAME_MISMATCH: 'the certificate is for another name (name mismatch)',
  IP_ADDRESS_MISMATCH: 'the certificate is for another address (name mismatch)',
  CERT_REVOKED: 'the certificate has been revoked',
  CERT_SIGNATURE_FAILURE: 'the certificate signature is invalid',
  CERT_UNTRUSTED: 'the certificate is not trusted for this purpose',
  CERT_REJECTED: 'the certificate is marked as rejected',
  INVALID_CA: 'a certificate in the chain is not a valid certificate authority',
  INVALID_PURPOSE: 'the certificate may not be used for a TLS server',
  PATH_LENGTH_EXCEEDED: 'the certificate chain is longer than its authority allows',
  ERROR_IN_CERT_NOT_BEFORE_FIELD: 'the certificate has a malformed start date',
  ERROR_IN_CERT_NOT_AFTER_FIELD: 'the certificate has a malformed expiry date',
  CERT_CHAIN_TOO_LONG: 'the certificate chain is too long',
};

/** The plain sentence for one certificate verification code, or null if it is not one. */
export function certificateSentence(code: string): string | null {
  return CERT_SENTENCES[code] ?? null;
}

/** The names a certificate is valid for: DNS and IP subjectAltNames, else the subject CN
 * (RFC 6125 §6.4.4: the CN counts only when there are no DNS SANs). */
export function certificateNames(cert: PeerCertificate): string[] {
  const names: string[] = [];
  for (const entry of (cert.subjectaltname ?? '').split(/,\s*/)) {
    const m = /^(DNS|IP Address):(.+)$/.exec(entry.trim());
    if (m?.[2]) names.push(m[2]);
  }
  if (names.length === 0) {
    const cn = cert.subject?.CN;
    if (typeof cn === 'string') names.push(cn);
    else if (Array.isArray(cn)) names.push(...(cn as string[]));
  }
  return names;
}

export interface CertificateJudgement {
  /** Verification codes found, e.g. ['DEPTH_ZERO_SELF_SIGNED_CERT', 'ERR_TLS_CERT_ALTNAME_INVALID']. */
  codes: string[];
  /** One sentence per problem, with the specifics (names, dates). */
  problems: string[];
}

/**
 * Everything wrong with a certificate, not just the first thing OpenSSL stopped at: the
 * chain verdict (`authorizationError`, RFC 5280 path validation), the validity dates, and
 * whether it names the host we connected to (RFC 6125, via tls.checkServerIdentity, which
 * Node itself only runs when the chain verified). An admin fixing a self-signed
 * certificate should learn at once that it also carries the wrong name.
 */
export function certificateProblems(
  authorizationError: string | Error | null | undefined,
  identityError: Error | undefined,
  cert: PeerCertificate,
  host: string,
  now = new Date(),
): CertificateJudgement {
  const codes: string[] = [];
  const problems: string[] = [];
  const add = (code: string, sentence: string): void => {
    if (codes.includes(code)) return;
    // Node reports a name mismatch as ERR_TLS_CERT_ALTNAME_INVALID; OpenSSL as HOSTNAME_/IP_ADDRESS_MISMATCH.
    const nameCodes = ['ERR_TLS_CERT_ALTNAME_INVALID', 'HOSTNAME_MISMATCH', 'IP_ADDRESS_MISMATCH'];
    if (nameCodes.includes(code) && codes.some((c) => nameCodes.includes(c))) return;
    codes.push(code);
    problems.push(sentence);
  };
  const names = certificateNames(cert);
  const nameSentence = `the certificate is for ${names.length ? names.join(', ') : 'no name at all'}, not for ${host} (name mismatch)`;
  const validTo = cert.valid_to ? new Date(cert.valid_to) : null;
  const validFrom = cert.valid_from ? new Date(cert.valid_from) : null;
  const specific = (code: string): string => {
    if (code === 'CERT_HAS_EXPIRED' && validTo) return `the certificate expired on ${validTo.toISOString().slice(0, 10)}`;
    if (code === 'CERT_NOT_YET_VALID' && validFrom) {
      return `the certificate is only valid from ${validFrom.toISOString().slice(0, 10)} (or this machine's clock is wrong)`;
    }
    if (code === 'ERR_TLS_CERT_ALTNAME_INVALID' || code === 'HOSTNAME_MISMATCH' || code === 'IP_ADDRESS_MISMATCH') return nameSentence;
    return CERT_SENTENCES[code] ?? `the certificate did not verify (${code})`;
  };
  const authCode = typeof authorizationError === 'string' ? authorizationError : ((authorizationError as { code?: string } | null | undefined)?.code ?? authorizationError?.message);
  if (authCode) add(authCode, specific(authCode));
  if (validTo && !Number.isNaN(validTo.getTime()) && validTo < now) add('CERT_HAS_EXPIRED', specific('CERT_HAS_EXPIRED'));
  if (validFrom && !Number.isNaN(validFrom.getTime()) && validFrom > now) add('CERT_NOT_YET_VALID', specific('CERT_NOT_YET_VALID'));
  if (identityError) add('ERR_TLS_CERT_ALTNAME_INVALID', nameSentence);
  return { codes, problems };
}

/** A short description of a certificate: names, issuer, expiry, SHA-256 fingerprint (for
 * an admin who accepts an untrusted certificate to compare with the server's). */
export function describeCertificate(cert: PeerCertificate): string {
  const names = certificateNames(cert);
  const issuer = cert.issuer?.CN ?? cert.issuer?.O;
  const selfIssued = cert.issuer && cert.subject && JSON.stringify(cert.issuer) === JSON.stringify(cert.subject);
  const parts = [`certificate for ${names.length ? names.join(', ') : '(no name)'}`];
  if (selfIssued) parts.push('issued by itself');
  else if (issuer) parts.push(`issued by ${String(issuer)}`);
  if (cert.valid_to) {
    const d = new Date(cert.valid_to);
    if (!Number.isNaN(d.getTime())) parts.push(`valid until ${d.toISOString().slice(0, 10)}`);
  }
  if (cert.fingerprint256) parts.push(`SHA-256 fingerprint ${cert.fingerprint256}`);
  return parts.join(', ');
}

/** RFC 5530 response codes on a failed LOGIN / AUTHENTICATE, in words. */
export function explainAuthCode(code: string | undefined): string | null {
  switch (code) {
    case 'AUTHENTICATIONFAILED':
      return 'wrong user name or password';
    case 'AUTHORIZATIONFAILED':
      // Dovecot answers a master-user login for a user it does not know this way too.
      return 'the credentials are right but may not act as that user: the user does not exist there, or the admin login lacks master-user rights';
    case 'EXPIRED':
      return 'the password or account has expired';
    case 'PRIVACYREQUIRED':
      return 'the server only accepts this login over an encrypted connection';
    case 'CONTACTADMIN':
      return 'the server asks you to contact its administrator';
    case 'UNAVAILABLE':
      return 'the authentication service is temporarily unavailable; try again later';
    case 'LIMIT':
      return 'a limit was reached (e.g. too many connections for this user)';
    case 'SERVERBUG':
      return 'the server reports an internal error';
    default:
      return null;
  }
}

/** Make server-supplied text safe to show on one line: no control characters, bounded. */
export function showText(s: string, max = 160): string {
  const clean = s.replace(/[\x00-\x08\x0b-\x1f\x7f]/g, '?').replace(/[\r\n]+/g, ' ').trim();
  return clean.length > max ? `${clean.slice(0, max)}…` : clean;
}

export function describe(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as NodeJS.ErrnoException).code;
    return code && !err.message.includes(code) ? `${err.message} (${code})` : err.message;
  }
  return String(err);
}
