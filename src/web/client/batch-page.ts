/**
 * One batch (SPEC §4, §6): its status and facts, each mailbox with status, counts, live
 * progress and last error, and the admin's actions — start, stop, sync now, retry, check
 * logins, verify, report, delete (with the 72-hour warning).
 */
import type { BatchDetail, MailboxView } from '../../batch/view.js';
import { duplicatesWords, missingWhere, verdictOf } from '../../batch/verification-words.js';
import type { LoginCheckState } from '../../batch/background-task.js';
import { api, ApiError, download, fileBase64, pageWording } from './api.js';
import { problemList, type Validation } from './new-batch.js';
import { bar, flash, h, notice, replace, statusBadge } from './dom.js';
import { duration, mb, plural, when } from './format.js';
import { LIVE_MS, poll, type View } from './view.js';

type Detail = BatchDetail & { mailboxesMatching: number; verifying: boolean; loginCheck: LoginCheckState | null; cutOver: { deleteWarnings: string[]; uncheckedDomains: string[] } };

/** The verdict alone (the cell's data-verified), and as shown: with the error, when, and whether a sync has run since. */
function verdict(m: MailboxView): string {
  return m.verification ? verdictOf(m.verification) : '–';
}

function verified(m: MailboxView): string {
  const v = m.verification;
  if (!v) return '–';
  // After a later sync it tells how the mailbox stood then, not how it is.
  return `${verdict(m)}${v.error ? `: ${v.error}` : missingWhere(v)}${duplicatesWords(v)} (${when(v.at)}${v.stale ? ', before the last sync' : ''})`;
}

/** `notStarted`: the batch was never started, so "Queued" would say more than is true. */
function mailboxRow(m: MailboxView, retry: (address: string) => void, notStarted = false): HTMLElement[] {
  const s = m.syncing;
  const progress = s
    ? h(
        'div',
        {},
        // The whole mailbox, not this run alone: a restarted sync does not start again from an empty bar.
        bar(m.copied + s.copied + s.alreadyOnTarget, Math.max(m.found, m.copied + s.toCopy + s.alreadyOnTarget), `${m.emailAddress} progress`),
        h(
          'div',
          { class: 'sub' },
          `${s.kind} sync: ${s.phase ?? ''} ${s.copied}${s.toCopy ? ` / ${s.toCopy}` : ''} copied, ${s.messagesPerSecond} msg/s${s.etaSeconds ? `, ${duration(s.etaSeconds)} left` : ''}` +
            `${s.alreadyOnTarget ? `; ${s.alreadyOnTarget} found on the target already (not copied again)` : ''}${s.stale ? ' (worker not responding; will be resumed)' : ''}`,
        ),
      )
    : null;
  const rows = [
    h(
      'tr',
      { 'data-mailbox': m.emailAddress },
      h('td', { class: 'num' }, m.line),
      h('td', {}, m.emailAddress, progress),
      h('td', {}, notStarted ? statusBadge('Not started') : statusBadge(m.status)),
      h('td', { class: 'num' }, m.folders),
      // A run's copies reach the stored counts when it ends: shown live meanwhile (as the batch's totals are).
      h('td', { class: 'num' }, s ? m.found + Math.max(0, m.copied + s.toCopy + s.alreadyOnTarget - m.found) : m.found),
      h('td', { class: 'num' }, s ? m.copied + s.copied + s.alreadyOnTarget : m.copied),
      h('td', { class: 'num' }, m.skipped),
      h('td', { class: 'num' }, m.failed),
      h('td', { class: 'num' }, mb(s ? m.bytes + s.bytes : m.bytes)),
      h('td', {}, when(m.lastSyncAt)),
      h('td', {}, when(m.nextSyncAt)),
      h('td', { 'data-verified': verdict(m), ...(m.verification?.stale ? { 'data-stale': 'yes' } : {}) }, verified(m)),
      h('td', {}, m.status === 'Failed' || m.status === 'Synced' ? h('button', { type: 'button', onclick: () => retry(m.emailAddress) }, m.status === 'Failed' ? 'Retry' : 'Sync again') : null),
    ),
  ];
  if (m.lastError) rows.push(h('tr', { class: 'last-error' }, h('td'), h('td', { colspan: 12, class: 'error' }, `Last error: ${m.lastError}`)));
  return rows;
}

function facts(d: Detail): HTMLElement {
  const b = d.batch;
  const t = b.totals;
  const items = [
    b.startAt && b.status === 'Created' ? `starts at ${when(b.startAt)}` : null,
    b.startedAt ? `started ${when(b.startedAt)}` : 'not started',
    b.initialSyncedAt ? `initial sync finished ${when(b.initialSyncedAt)}${b.initialSync ? ` (${duration(b.initialSync.seconds)}, ${b.initialSync.messagesPerSecond} msg/s, ${b.initialSync.megabytesPerSecond} MB/s)` : ''}` : null,
    b.lastIncrementalAt ? `last incremental sync ${when(b.lastIncrementalAt)}` : null,
    `${b.counts.Synced + b.counts.IncrementalSyncing} of ${plural(b.mailboxes, 'mailbox', 'mailboxes')} synced${b.counts.Failed ? `, ${b.counts.Failed} failed` : ''}`,
    `${t.copied} / ${t.found} messages copied (${mb(t.bytes)} MB), ${t.skipped} skipped, ${t.failed} failed`,
    b.messagesPerSecond > 0 ? `now ${b.messagesPerSecond} msg/s, ${b.megabytesPerSecond} MB/s` : null,
    b.etaSeconds ? `about ${duration(b.etaSeconds)} left` : null,
    b.reports.lastSentAt ? `last report ${when(b.reports.lastSentAt)}` : null,
    b.options.exclude.length ? `excluded: ${b.options.exclude.join(', ')}` : null,
    b.options.include ? `only: ${b.options.include.join(', ')}` : null,
    b.options.receivedAfter ? `received after ${when(b.options.receivedAfter)}` : null,
  ];
  return h('div', { class: 'facts', id: 'facts' }, ...items.filter((x): x is string => !!x).map((x) => h('span', {}, x)), b.reports.error ? h('span', { class: 'error' }, `report e-mail: ${b.reports.error}`) : null);
}

/** SPEC §7: what still stands between the batch and its deletion, or that nothing does. */
function cutOver(d: Detail): HTMLElement | null {
  if (d.batch.startedAt === null) return null;
  const c = d.cutOver;
  // Said only when mailferry can tell: with a domain never checked it cannot know whether MX switched.
  const verdict = c.deleteWarnings.length
    ? 'not yet time to delete this batch'
    : c.uncheckedDomains.length
      ? 'mailferry cannot tell whether the MX switch is done (no MX check recorded); the batch finished its sync more than 72 hours ago'
      : 'the 72 hours after the switch are over and every mailbox synced since; the batch can be deleted';
  return h(
    'div',
    { class: 'panel', id: 'cut-over' },
    h('strong', {}, 'Cut-over: '),
    verdict,
    c.deleteWarnings.length ? h('ul', { class: 'problems warning' }, ...c.deleteWarnings.map((w) => h('li', {}, w))) : null,
    c.uncheckedDomains.length
      ? h('p', { class: 'muted' }, `MX not checked yet for ${c.uncheckedDomains.join(', ')}: `, h('a', { href: '#/dns' }, 'check it'), ' so mailferry tracks the 72 hours after the switch.')
      : null,
  );
}

function loginResults(check: LoginCheckState | null): HTMLElement | null {
  if (!check) return null;
  if (check.running) return h('div', { class: 'panel', id: 'login-results', 'data-running': 'true' }, `Checking every login (nothing is copied), since ${when(check.startedAt)}…`);
  if (check.error) return h('div', { class: 'panel error', id: 'login-results' }, `Check logins could not run: ${check.error}`);
  const results = check.mailboxes;
  const failed = results.filter((r) => !r.source.ok || !r.target.ok);
  return h(
    'div',
    { class: 'panel', id: 'login-results' },
    h('strong', {}, failed.length ? `${failed.length} of ${plural(results.length, 'mailbox', 'mailboxes')} could not log in` : `All ${plural(results.length, 'mailbox', 'mailboxes')} could log in`),
    // Dated: a password corrected since is not shown as still wrong without saying when this was.
    h('span', { class: 'sub' }, ` (check logins of ${when(check.finishedAt ?? check.startedAt)}; run it again after corrections)`),
    failed.length
      ? h(
          'ul',
          { class: 'problems' },
          ...failed.map((r) =>
            h('li', {}, `line ${r.line} ${r.emailAddress}: `, !r.source.ok ? `source: ${r.source.error}` : '', !r.source.ok && !r.target.ok ? '; ' : '', !r.target.ok ? `target: ${r.target.error}` : ''),
          ),
        )
      : null,
  );
}

export function batchPage(root: HTMLElement, name: string): View {
  const path = `/api/batches/${encodeURIComponent(name)}`;
  const title = h('h1', {}, `Batch ${name} `);
  const factsBox = h('div');
  const message = h('div', { id: 'message' });
  const extra = h('div');
  const cutOverBox = h('div');
  const body = h('tbody');
  let last: Detail | null = null;
  /** Which mailboxes the table shows: a batch may hold thousands. */
  const PAGE = 200;
  let offset = 0;
  const statusFilter = h(
    'select',
    { id: 'mailbox-filter', 'aria-label': 'Show mailboxes' },
    ...[
      ['', 'all mailboxes'],
      ['problems', 'failed or with an error'],
      ['Queued', 'Queued'],
      ['Syncing', 'Syncing'],
      ['IncrementalSyncing', 'IncrementalSyncing'],
      ['Synced', 'Synced'],
      ['Failed', 'Failed'],
      ['Stopped', 'Stopped'],
    ].map(([v, label]) => h('option', { value: v! }, label!)),
  );
  const search = h('input', { id: 'mailbox-search', type: 'search', placeholder: 'address contains…', 'aria-label': 'Find a mailbox' });
  const shown = h('span', { class: 'sub', id: 'mailboxes-shown' });
  const prev = h('button', { type: 'button', id: 'mailboxes-prev', onclick: () => ((offset = Math.max(0, offset - PAGE)), void refresh()) }, '← previous');
  const next = h('button', { type: 'button', id: 'mailboxes-next', onclick: () => ((offset += PAGE), void refresh()) }, 'next →');
  const refilter = () => {
    offset = 0;
    void refresh();
  };
  statusFilter.addEventListener('change', refilter);
  search.addEventListener('input', refilter);
  /** Left (another page is shown): answers still arriving must not draw over it. */
  let left = false;

  const act = async (label: string, fn: () => Promise<string | HTMLElement | null>) => {
    replace(message, notice('info', `${label}…`));
    // One request at a time: a second click would repeat it (check logins: every password tried twice).
    for (const b of actions.querySelectorAll('button')) b.disabled = true;
    try {
      const said = await fn();
      replace(message, said ? (typeof said === 'string' ? notice('info', said) : said) : '');
      // A plain "will sync now" stops being news; warnings and results stay until the next action.
      if (typeof said === 'string') {
        const shown = message.firstChild;
        setTimeout(() => {
          if (message.firstChild === shown) replace(message);
        }, 15_000);
      }
      await refresh();
    } catch (err) {
      replace(message, notice('error', (err as Error).message));
    } finally {
      if (last) enableFor(last.batch.status);
    }
  };
  const post = (what: string, body?: unknown) => api<Record<string, unknown>>('POST', `${path}/${what}`, body);
  const retry = (address: string) => void act(`Retrying ${address}`, async () => ((await post('retry', { user: address })), `${address} will sync as soon as a worker is free.`));

  const askDelete = (force: boolean) =>
    act('Deleting', async () => {
      try {
        const r = await api<{ removed: boolean; remaining: number }>('DELETE', `${path}${force ? '?force=true' : ''}`);
        if (r.removed) {
          flash(`Batch ${name} deleted.`);
          location.hash = '#/';
        }
        return r.removed ? null : `Batch ${name} is being deleted; ${plural(r.remaining, 'mailbox', 'mailboxes')} still syncing will go when their workers stop.`;
      } catch (err) {
        if (err instanceof ApiError && err.body.kind === 'delete-too-early') {
          const reasons = Array.isArray(err.body.warnings) ? (err.body.warnings as string[]) : [err.message];
          return notice(
            'warning',
            h('strong', {}, 'Not yet time to delete this batch:'),
            h('ul', { class: 'warnings' }, ...reasons.map((w) => h('li', {}, pageWording(w.replace(/^Batch "[^"]*": /, ''))))),
            h('button', { type: 'button', class: 'danger', id: 'delete-anyway', onclick: () => void askDelete(true) }, 'Delete anyway'),
          );
        }
        throw err;
      }
    });

  const actions = h(
    'div',
    { class: 'actions' },
    h('button', { type: 'button', class: 'primary', id: 'start', onclick: () => void act('Starting', async () => ((await post('start')).started ? `Batch ${name} started.` : `Batch ${name} is already running.`)) }, 'Start'),
    h('button', { type: 'button', id: 'stop', onclick: () => void act('Stopping', async () => ((await post('stop')).stopped ? `Batch ${name} stopped; running syncs stop within seconds.` : `Batch ${name} is already stopped.`)) }, 'Stop'),
    h('button', { type: 'button', id: 'sync-now', onclick: () => void act('Asking for a sync', async () => `${plural(Number((await post('sync-now')).mailboxes), 'mailbox', 'mailboxes')} will sync now.`) }, 'Sync now'),
    h('button', { type: 'button', id: 'retry-failed', onclick: () => void act('Retrying failed mailboxes', async () => { const r = (await post('retry')).retrying as unknown[]; return r.length ? `Retrying ${plural(r.length, 'mailbox', 'mailboxes')}.` : 'No mailbox has failed.'; }) }, 'Retry failed'),
    h('button', { type: 'button', id: 'check-logins', onclick: () => void act('Starting to check every login', async () => ((await post('check-logins')), null)) }, 'Check logins'),
    h('button', { type: 'button', id: 'verify', onclick: () => void act('Starting verification', async () => ((await post('verify')), 'Verifying each mailbox, folder by folder; results appear in the Verified column.')) }, 'Verify'),
    h('button', { type: 'button', id: 'show-report', onclick: () => (location.hash = `#/batch/${encodeURIComponent(name)}/report`) }, 'Report'),
    h('button', { type: 'button', id: 'report', onclick: () => void act('Preparing the report', async () => ((await download(`${path}/report?format=csv`, `mailferry-${name}-report.csv`)), null)) }, 'Report (CSV)'),
    h('button', { type: 'button', class: 'danger', id: 'delete', onclick: () => { if (confirm(`Delete batch ${name}? Its syncs stop and it leaves the dashboard (what was copied stays on the target).`)) void askDelete(false); } }, 'Delete'),
  );

  /** Only what the batch's state allows (the API would refuse the rest, in words). */
  const enableFor = (status: string) => {
    const running = status === 'Syncing' || status === 'Synced' || status === 'SyncedWithErrors';
    const allowed: Record<string, boolean> = {
      start: status === 'Created' || status === 'Stopped',
      stop: running,
      'sync-now': running,
      'retry-failed': running,
      verify: !last?.verifying,
      'check-logins': !last?.loginCheck?.running,
    };
    for (const b of actions.querySelectorAll('button')) b.disabled = b.id in allowed ? !allowed[b.id] : false;
  };

  // `batch update`: the rows to fix (a wrong password, a user name) or add, without deleting the batch.
  const updateFile = h('input', { type: 'file', id: 'update-csv', accept: '.csv,text/csv' });
  const update = h(
    'details',
    { class: 'panel', id: 'update' },
    h('summary', {}, 'Correct passwords or add mailboxes (a migration file with only those rows)'),
    h(
      'p',
      { class: 'sub' },
      'Rows whose EmailAddress is in the batch replace its UserName, Password and UserRoot (a changed mailbox syncs again at once); rows with a new address are added; mailboxes the file does not list stay as they are.',
    ),
    updateFile,
    ' ',
    h(
      'button',
      {
        type: 'button',
        id: 'update-batch',
        onclick: () =>
          void act('Checking and applying the file', async () => {
            const f = updateFile.files?.[0];
            if (!f) return notice('warning', 'Choose a migration file first.');
            try {
              const r = await api<{ changed: string[]; added: string[]; unchanged: number; notInFile: number }>('POST', `${path}/update`, { csvBase64: await fileBase64(f) });
              updateFile.value = '';
              return `${plural(r.changed.length, 'mailbox', 'mailboxes')} changed${r.changed.length ? ` (${r.changed.slice(0, 10).join(', ')}${r.changed.length > 10 ? ', …' : ''})` : ''}, ${r.added.length} added, ${r.unchanged} unchanged, ${r.notInFile} not in the file.`;
            } catch (err) {
              if (err instanceof ApiError && err.status === 422) return problemList(err.body as unknown as Validation);
              throw err;
            }
          }),
      },
      'Apply',
    ),
  );

  replace(
    root,
    title,
    factsBox,
    actions,
    update,
    message,
    extra,
    cutOverBox,
    h('h2', {}, 'Mailboxes'),
    h('div', { class: 'actions' }, statusFilter, search, shown, prev, next),
    h(
      'table',
      { id: 'mailboxes' },
      h('thead', {}, h('tr', {}, ...['Line', 'Mailbox', 'Status', 'Folders', 'Found', 'Copied', 'Skipped', 'Failed', 'MB', 'Last sync', 'Next sync', 'Verified', ''].map((c, i) => h('th', { class: i === 0 || (i >= 3 && i <= 8) ? 'num' : '' }, c)))),
      body,
    ),
  );

  async function refresh(): Promise<void> {
    if (left) return;
    try {
      const query = new URLSearchParams({ offset: String(offset), limit: String(PAGE) });
      if (statusFilter.value) query.set('status', statusFilter.value);
      if (search.value.trim()) query.set('q', search.value.trim());
      last = await api<Detail>('GET', `${path}?${query}`);
      if (left) return;
    } catch (err) {
      if (left) return;
      if (err instanceof ApiError && err.status === 404) {
        replace(root, h('h1', {}, `Batch ${name}`), notice('warning', err.message, ' ', h('a', { href: '#/' }, 'Back to the batches')));
        view.dispose();
        return;
      }
      replace(factsBox, notice('error', `Cannot load the batch: ${(err as Error).message}`));
      return;
    }
    replace(title, `Batch ${name} `, statusBadge(last.batch.status), last.verifying ? h('span', { class: 'sub', id: 'verifying' }, ' verifying…') : null);
    replace(cutOverBox, cutOver(last));
    replace(extra, loginResults(last.loginCheck));
    replace(factsBox, facts(last), bar(last.batch.totals.copied, Math.max(last.batch.totals.found, last.batch.totals.copied), `batch ${name} messages copied`));
    enableFor(last.batch.status);
    const created = last.batch.status === 'Created';
    replace(body, ...last.mailboxes.flatMap((m) => mailboxRow(m, retry, created)));
    const n = last.mailboxesMatching;
    shown.textContent = n === 0 ? 'no mailbox matches' : `${offset + 1}–${Math.min(n, offset + last.mailboxes.length)} of ${n}`;
    prev.hidden = offset === 0;
    next.hidden = offset + PAGE >= n;
  }
  const polling = poll(refresh, LIVE_MS);
  const view: View = {
    dispose() {
      left = true;
      polling.dispose();
    },
  };
  return view;
}
