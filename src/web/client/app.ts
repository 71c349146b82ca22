/**
 * The web admin page (SPEC: "They work through a web admin page, a CLI, or the HTTP API.
 * All three drive the same core."): a small single-page app over the HTTP API, with hash
 * routes so a reload or a bookmark keeps the place. No framework: a handful of pages of
 * tables and forms, built with DOM calls (dom.ts), need none.
 */
import { api, ApiError, token, whenUnauthorized } from './api.js';
import { batchPage } from './batch-page.js';
import { dashboard } from './dashboard.js';
import { dnsPage } from './dns-page.js';
import { h, notice, replace } from './dom.js';
import { endpointsPage } from './endpoints-page.js';
import { newBatch } from './new-batch.js';
import { reportPage } from './report-page.js';
import type { View } from './view.js';

const root = document.getElementById('app')!;
const nav = document.getElementById('nav')!;
let current: View | null = null;

function signIn(why?: string): void {
  current?.dispose();
  current = null;
  nav.hidden = true;
  const input = h('input', { id: 'token', type: 'password', autocomplete: 'current-password', required: true, size: 48 });
  const message = h('div', {}, why ? notice('error', why) : null);
  const submit = async (e: Event) => {
    e.preventDefault();
    token.set(input.value.trim());
    try {
      await api('GET', '/api/health');
      route();
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 401)) replace(message, notice('error', (err as Error).message));
    }
  };
  replace(
    root,
    h('h1', {}, 'Sign in'),
    h(
      'form',
      { class: 'grid', id: 'sign-in', onsubmit: (e: Event) => void submit(e) },
      h('label', { for: 'token' }, 'Admin token'),
      input,
      h('div', { class: 'hint' }, 'The admin-token file named when mailferry serve started (beside the secret key), or MAILFERRY_ADMIN_TOKEN.'),
      h('span'),
      h('div', {}, h('button', { type: 'submit', class: 'primary' }, 'Sign in')),
    ),
    message,
  );
  input.focus();
}

/** A batch name from the address; a mangled one (a cut-off %-escape) is taken as written. */
function decoded(part: string): string {
  try {
    return decodeURIComponent(part);
  } catch {
    return part;
  }
}

function route(): void {
  if (!token.get()) return signIn();
  current?.dispose();
  nav.hidden = false;
  const hash = location.hash.replace(/^#/, '') || '/';
  const report = /^\/batch\/(.+)\/report$/.exec(hash);
  const batch = /^\/batch\/([^/]+)$/.exec(hash);
  for (const a of nav.querySelectorAll('a')) a.classList.toggle('here', a.getAttribute('href') === `#${hash}`);
  current = report ? reportPage(root, decoded(report[1]!)) : batch ? batchPage(root, decoded(batch[1]!)) : hash === '/new' ? newBatch(root) : hash === '/endpoints' ? endpointsPage(root) : hash === '/dns' ? dnsPage(root) : dashboard(root);
}

whenUnauthorized(() => signIn('The admin token was refused; sign in again.'));
document.getElementById('sign-out')!.addEventListener('click', () => {
  token.clear();
  signIn();
});
window.addEventListener('hashchange', route);
route();
