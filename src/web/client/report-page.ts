/**
 * The batch report on screen (SPEC §6: "A report per batch (CSV and on screen)"): per
 * mailbox its status, counts, duration, throughput and last error, then every skipped or
 * failed message with folder, date, subject, size and reason.
 */
import type { BatchReport } from '../../report/batch-report.js';
import { api, download } from './api.js';
import { h, notice, replace, statusBadge } from './dom.js';
import { duration, mb, when } from './format.js';
import type { View } from './view.js';

export function reportPage(root: HTMLElement, name: string): View {
  const path = `/api/batches/${encodeURIComponent(name)}/report`;
  replace(root, h('h1', {}, `Report: batch ${name}`), notice('info', 'Loading the report…'));
  void (async () => {
    let r: BatchReport;
    try {
      r = await api<BatchReport>('GET', path);
    } catch (err) {
      return replace(root, h('h1', {}, `Report: batch ${name}`), notice('error', (err as Error).message));
    }
    const b = r.batch;
    const items = r.mailboxes.flatMap((m) => m.skippedItems.map((s) => ({ mailbox: m.emailAddress, ...s })));
    replace(
      root,
      h('h1', {}, `Report: batch ${name} `, statusBadge(b.status)),
      h(
        'div',
        { class: 'facts' },
        h('span', {}, `made ${when(r.generatedAt)}`),
        h('span', {}, `${b.totals.copied} / ${b.totals.found} messages copied (${mb(b.totals.bytes)} MB), ${b.totals.skipped} skipped, ${b.totals.failed} failed`),
        b.initialSync ? h('span', {}, `initial sync ${duration(b.initialSync.seconds)}, ${b.initialSync.messagesPerSecond} msg/s, ${b.initialSync.megabytesPerSecond} MB/s`) : null,
      ),
      h(
        'div',
        { class: 'actions' },
        h('a', { href: `#/batch/${encodeURIComponent(name)}` }, '← the batch'),
        h('button', { type: 'button', onclick: () => void download(`${path}?format=csv`, `mailferry-${name}-report.csv`) }, 'Download CSV'),
      ),
      h(
        'table',
        { id: 'report-mailboxes' },
        h('thead', {}, h('tr', {}, ...['Line', 'Mailbox', 'Status', 'Folders', 'Found', 'Copied', 'Skipped', 'Failed', 'MB', 'Time syncing', 'msg/s', 'MB/s', 'Last error'].map((c) => h('th', {}, c)))),
        h(
          'tbody',
          {},
          ...r.mailboxes.map((m) =>
            h(
              'tr',
              {},
              h('td', { class: 'num' }, m.line),
              h('td', {}, m.emailAddress),
              h('td', {}, statusBadge(m.status)),
              ...[m.folders, m.found, m.copied, m.skipped, m.failed, mb(m.bytes)].map((x) => h('td', { class: 'num' }, x)),
              h('td', { class: 'num' }, duration(m.syncSeconds)),
              h('td', { class: 'num' }, m.messagesPerSecond),
              h('td', { class: 'num' }, m.megabytesPerSecond),
              h('td', { class: 'error' }, m.lastError ?? ''),
            ),
          ),
        ),
      ),
      h('h2', {}, items.length ? `Skipped and failed messages (${items.length})` : 'No message was skipped'),
      items.length
        ? h(
            'table',
            { id: 'skipped-items' },
            h('thead', {}, h('tr', {}, ...['Mailbox', 'Folder', 'Date', 'Subject', 'Size', 'Reason'].map((c) => h('th', {}, c)))),
            h(
              'tbody',
              {},
              ...items.map((s) =>
                h('tr', {}, h('td', {}, s.mailbox), h('td', {}, s.folder), h('td', {}, s.date.slice(0, 10)), h('td', {}, s.subject), h('td', { class: 'num' }, `${(s.size / 1048576).toFixed(1)} MB`), h('td', { class: s.failed ? 'error' : '' }, s.failed ? `FAILED: ${s.reason}` : s.reason)),
              ),
            ),
          )
        : null,
    );
  })();
  return { dispose: () => undefined };
}
