/**
 * Talking to mailferry's HTTP API with the admin token. The token is kept in the tab's
 * sessionStorage (gone when the tab closes) and sent as a bearer header, never in a URL.
 */
const TOKEN_KEY = 'mailferry.adminToken';

/** The API's field names as the page's forms label them, for the API's messages shown here. */
const LABELS: [RegExp, string][] = [
  [/\btargetMx host\b/g, '"New system\'s MX host"'],
  [/\btargetMx\b/g, '"New system\'s MX host"'],
  [/\breceivedAfter\b/g, '"Received after"'],
  [/\bstartAt\b/g, 'the start time'],
  [/\bbadItemLimit\b/g, '"Bad-item limit"'],
  [/\bmaxConcurrentMigrations\b/g, '"Max concurrent migrations"'],
  [/\bmaxConcurrentIncrementalSyncs\b/g, '"Max concurrent incremental syncs"'],
  [/\btestUser\b/g, 'the test user'],
  [/\badminUser\b/g, '"Admin user"'],
];

export function pageWording(message: string): string {
  return LABELS.reduce((m, [re, label]) => m.replace(re, label), message);
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly body: Record<string, unknown>,
  ) {
    super(typeof body.error === 'string' ? pageWording(body.error) : `the server answered ${status}`);
  }
}

export const token = {
  get: (): string | null => sessionStorage.getItem(TOKEN_KEY),
  set: (t: string) => sessionStorage.setItem(TOKEN_KEY, t),
  clear: () => sessionStorage.removeItem(TOKEN_KEY),
};

/** Called when the server refuses the token: the page asks for it again. */
let onUnauthorized: () => void = () => undefined;
export function whenUnauthorized(fn: () => void): void {
  onUnauthorized = fn;
}

export async function request(method: string, path: string, body?: unknown): Promise<Response> {
  const headers: Record<string, string> = { authorization: `Bearer ${token.get() ?? ''}` };
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(path, { method, headers, ...(body !== undefined ? { body: JSON.stringify(body) } : {}) });
  if (res.status === 401) {
    token.clear();
    onUnauthorized();
  }
  return res;
}

/** JSON in, JSON out; a status of 400 or more is an ApiError carrying the body. */
export async function api<T>(method: string, path: string, body?: unknown): Promise<T> {
  const res = await request(method, path, body);
  const data = (await res.json().catch(() => ({}))) as Record<string, unknown>;
  if (!res.ok) throw new ApiError(res.status, data);
  return data as T;
}

/** Saves a file the API returns (a report), which a plain link could not fetch with the token. */
export async function download(path: string, fileName: string): Promise<void> {
  const res = await request('GET', path);
  if (!res.ok) throw new ApiError(res.status, (await res.json().catch(() => ({}))) as Record<string, unknown>);
  const url = URL.createObjectURL(await res.blob());
  const a = document.createElement('a');
  a.href = url;
  a.download = fileName;
  a.click();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

/** A file's bytes in base64, as the API takes migration files (never decoded as text here). */
export async function fileBase64(file: File): Promise<string> {
  const bytes = new Uint8Array(await file.arrayBuffer());
  let binary = '';
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(binary);
}
