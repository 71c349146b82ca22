/** The dashboard (SPEC §6): every batch with its status and progress, live. */
import type { BatchView } from '../../batch/view.js';
import { api } from './api.js';
import { bar, h, notice, replace, statusBadge, takeFlash } from './dom.js';
import { duration, mb, plural } from './format.js';
import { LIVE_MS, poll, type View } from './view.js';

function countsText(b: BatchView): string {
  return Object.entries(b.counts)
    .filter(([, n]) => n > 0)
    .map(([s, n]) => `${n} ${s}`)
    .join(', ');
}

function row(b: BatchView): HTMLElement {
  const t = b.totals;
  return h(
    'tr',
    { 'data-batch': b.name },
    h('td', {}, h('a', { href: `#/batch/${encodeURIComponent(b.name)}` }, b.name)),
    h('td', {}, statusBadge(b.status)),
    h('td', {}, `${b.endpoint} → ${b.target}`),
    h('td', {}, plural(b.mailboxes, 'mailbox', 'mailboxes'), h('div', { class: 'sub' }, countsText(b))),
    h('td', {}, bar(t.copied, Math.max(t.found, t.copied), `${b.name} messages copied`), h('div', { class: 'sub' }, `${t.copied} / ${t.found} messages, ${mb(t.bytes)} MB`)),
    h('td', { class: 'num' }, t.skipped + t.failed > 0 ? `${t.skipped} / ${t.failed}` : '–', b.counts.Failed ? h('div', { class: 'sub error' }, plural(b.counts.Failed, 'mailbox failed', 'mailboxes failed')) : null),
    h('td', { class: 'num' }, b.messagesPerSecond > 0 ? `${b.messagesPerSecond} msg/s, ${b.megabytesPerSecond} MB/s` : '–'),
    h('td', { class: 'num' }, b.etaSeconds !== null && b.etaSeconds > 0 ? duration(b.etaSeconds) : '–'),
  );
}

export function dashboard(root: HTMLElement): View {
  const body = h('tbody');
  const empty = h('p', { class: 'muted', hidden: true }, 'No batch yet. ', h('a', { href: '#/new' }, 'Create one'), ' from a migration file.');
  const problem = h('div');
  const said = takeFlash();
  replace(
    root,
    h('h1', {}, 'Migration batches'),
    said ? notice('info', said) : null,
    problem,
    h(
      'table',
      { id: 'batches' },
      h('thead', {}, h('tr', {}, ...['Batch', 'Status', 'Source → target', 'Mailboxes', 'Progress', 'Skipped / failed', 'Rate', 'Time left'].map((c) => h('th', {}, c)))),
      body,
    ),
    empty,
  );
  return poll(async () => {
    try {
      const batches = await api<BatchView[]>('GET', '/api/batches');
      replace(body, ...batches.map(row));
      empty.hidden = batches.length > 0;
      replace(problem);
    } catch (err) {
      replace(problem, notice('error', `Cannot load the batches: ${(err as Error).message}`));
    }
  }, LIVE_MS);
}
