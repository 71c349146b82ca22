/**
 * What a refused APPEND's answer says about its cause (RFC 5530 response codes). A quota
 * refusal is about the whole mailbox: every later APPEND will be refused too until the
 * quota is raised. Per-message refusals (`[LIMIT]`, `[TOOBIG]`: too large a message) are
 * about that one message only.
 */

export interface Refusal {
  code?: string;
  text: string;
}

/** Codes that put the fault on the one message (RFC 5530 §3 LIMIT; TOOBIG, RFC 4469 §5, RFC 7889). */
const PER_MESSAGE = new Set(['LIMIT', 'TOOBIG']);

/**
 * `OVERQUOTA` (RFC 5530 §3: "the user would be over quota after the operation"; RFC 9208
 * §4.3.1), or, from a server that sends no code or one that says nothing of the cause
 * (Courier: `NO [ALERT] You exceeded your mail quota.`), the word "quota" in the text.
 */
export function isOverQuota(r: Refusal): boolean {
  const code = r.code?.toUpperCase();
  if (code === 'OVERQUOTA') return true;
  if (code !== undefined && PER_MESSAGE.has(code)) return false;
  return /\bquota\b/i.test(r.text);
}
