/**
 * Creating a batch (SPEC §4): the migration file is checked as soon as it is chosen (SPEC §1,
 * every problem with its line and column), then stored with the endpoint, target and options.
 */
import type { BatchDetail } from '../../batch/view.js';
import { api, ApiError, fileBase64 } from './api.js';
import { h, notice, replace } from './dom.js';
import type { View } from './view.js';

interface Problem {
  line: number | null;
  column?: string;
  check: string;
  message: string;
}
export interface Validation {
  preview?: { line: number; emailAddress: string; userName: string; userRoot: string | null }[];
  valid: boolean;
  rows: number;
  errors: Problem[];
}

/** The migration file limit (SPEC §1), checked here too so a huge file is not uploaded at all. */
const MAX_FILE_BYTES = 10 * 1024 * 1024;

export function problemList(v: Validation): HTMLElement {
  return h(
    'div',
    { class: 'notice error', id: 'csv-problems', role: 'alert' },
    h('strong', {}, 'The migration file is not valid:'),
    h('ul', { class: 'problems' }, ...v.errors.map((p) => h('li', {}, p.line === null ? '' : p.column ? `line ${p.line}, column ${p.column}: ` : `line ${p.line}: `, p.message))),
  );
}

/** The file's first rows as the batch will hold them (no passwords), so swapped columns show. */
function preview(v: Validation): HTMLElement | null {
  if (!v.preview?.length) return null;
  const root = v.preview.some((r) => r.userRoot);
  return h(
    'table',
    { id: 'csv-preview' },
    h('thead', {}, h('tr', {}, h('th', {}, 'Line'), h('th', {}, 'Mailbox (EmailAddress)'), h('th', {}, 'Source login (UserName)'), root ? h('th', {}, 'UserRoot') : null)),
    h('tbody', {}, ...v.preview.map((r) => h('tr', {}, h('td', { class: 'num' }, r.line), h('td', {}, r.emailAddress), h('td', {}, r.userName), root ? h('td', {}, r.userRoot ?? '') : null))),
    v.rows > v.preview.length ? h('tfoot', {}, h('tr', {}, h('td', { colspan: root ? 4 : 3, class: 'sub' }, `… and ${v.rows - v.preview.length} more`))) : null,
  );
}

const lines = (text: string): string[] =>
  text
    .split(/\r?\n/)
    .map((s) => s.trim())
    .filter(Boolean);

function field(label: string, input: HTMLElement, hint?: string): HTMLElement[] {
  const id = input.id;
  return [h('label', { for: id }, label), input, ...(hint ? [h('div', { class: 'hint' }, hint)] : [])];
}

export function newBatch(root: HTMLElement): View {
  const name = h('input', { id: 'batch-name', required: true, maxlength: 64, pattern: '[A-Za-z0-9_\\-]{1,64}', placeholder: 'pilot-sales' });
  const endpoint = h('select', { id: 'batch-endpoint', required: true });
  const target = h('select', { id: 'batch-target', required: true });
  const file = h('input', { id: 'batch-csv', type: 'file', accept: '.csv,text/csv', required: true });
  const fileState = h('div', { id: 'csv-state' });
  const exclude = h('textarea', { id: 'batch-exclude', placeholder: 'Junk\nDeleted Items' });
  const include = h('textarea', { id: 'batch-include', placeholder: '#Inbox#\n#SentItems#' });
  const receivedAfter = h('input', { id: 'batch-received-after', placeholder: '2025-03-01 or -90d' });
  const badItemLimit = h('input', { id: 'batch-bad-item-limit', type: 'number', min: 0 });
  const notify = h('textarea', { id: 'batch-notify', placeholder: 'helpdesk@example.org' });
  const start = h('select', { id: 'batch-start' }, h('option', { value: 'manual' }, 'later, by hand'), h('option', { value: 'now' }, 'at once'), h('option', { value: 'at' }, 'at a set time'));
  const startAt = h('input', { id: 'batch-start-at', type: 'datetime-local', hidden: true });
  const message = h('div', { id: 'create-message' });
  let checked: { base64: string; valid: boolean } | null = null;

  start.addEventListener('change', () => (startAt.hidden = start.value !== 'at'));
  file.addEventListener('change', () => void checkFile());

  async function checkFile(): Promise<void> {
    checked = null;
    const f = file.files?.[0];
    if (!f) return replace(fileState);
    if (f.size > MAX_FILE_BYTES) return replace(fileState, problemList({ valid: false, rows: 0, errors: [{ line: null, check: 'too-large', message: `the file is ${(f.size / 1048576).toFixed(1)} MB; at most 10 MB is accepted` }] }));
    replace(fileState, h('span', { class: 'muted' }, 'Checking the file…'));
    try {
      const base64 = await fileBase64(f);
      const v = await api<Validation>('POST', '/api/csv/check', { csvBase64: base64 });
      checked = { base64, valid: v.valid };
      replace(fileState, v.valid ? h('div', {}, h('span', { class: 'status ok', id: 'csv-ok' }, `valid: ${v.rows} mailbox${v.rows === 1 ? '' : 'es'}`), preview(v)) : problemList(v));
    } catch (err) {
      replace(fileState, notice('error', (err as Error).message));
    }
  }

  async function submit(e: Event): Promise<void> {
    e.preventDefault();
    if (!checked) await checkFile();
    if (!checked) return;
    const body = {
      name: name.value.trim(),
      csvBase64: checked.base64,
      endpoint: endpoint.value,
      target: target.value,
      exclude: lines(exclude.value),
      include: lines(include.value),
      notify: lines(notify.value),
      ...(receivedAfter.value.trim() ? { receivedAfter: receivedAfter.value.trim() } : {}),
      ...(badItemLimit.value !== '' ? { badItemLimit: Number(badItemLimit.value) } : {}),
      start: start.value,
      // datetime-local is the admin's local time; sent with its offset so the server reads it so.
      ...(start.value === 'at' && startAt.value ? { startAt: new Date(startAt.value).toISOString() } : {}),
    };
    replace(message, notice('info', 'Creating the batch…'));
    try {
      const d = await api<BatchDetail>('POST', '/api/batches', body);
      location.hash = `#/batch/${encodeURIComponent(d.batch.name)}`;
    } catch (err) {
      if (err instanceof ApiError && err.status === 422) return replace(message, problemList(err.body as unknown as Validation));
      replace(message, notice('error', (err as Error).message));
    }
  }

  replace(
    root,
    h('h1', {}, 'New migration batch'),
    h(
      'form',
      { class: 'grid', id: 'new-batch', onsubmit: (e: Event) => void submit(e) },
      ...field('Name', name, 'Letters, digits, - and _; at most 64.'),
      ...field('Migration file', file, 'CSV: EmailAddress,UserName,Password[,UserRoot]. Checked at once; passwords are stored encrypted.'),
      h('span'),
      fileState,
      ...field('Source endpoint', endpoint),
      ...field('Target', target),
      ...field('Exclude folders', exclude, 'One per line; a folder and its subfolders. Exclude public folders of an Exchange source.'),
      ...field('Only these folders', include, 'One per line, instead of all; aliases #Inbox# #SentItems# #Drafts# #DeletedItems# #JunkEmail# #Archive#.'),
      ...field('Received after', receivedAfter, 'Only messages received at or after this date (2025-03-01), or in the last days with a minus: -90d.'),
      ...field('Bad-item limit', badItemLimit, 'More skipped messages than this make a mailbox Failed; empty: none does.'),
      ...field('Also report to', notify, 'One address per line, besides the admin.'),
      ...field('Start', start),
      h('span'),
      startAt,
      h('span'),
      h('div', {}, h('button', { type: 'submit', class: 'primary', id: 'create-batch' }, 'Create batch')),
    ),
    message,
  );

  void (async () => {
    try {
      const [sources, targets] = await Promise.all([api<{ name: string; host: string }[]>('GET', '/api/endpoints'), api<{ name: string; host: string }[]>('GET', '/api/targets')]);
      replace(endpoint, ...sources.map((s) => h('option', { value: s.name }, `${s.name} (${s.host})`)));
      replace(target, ...targets.map((t) => h('option', { value: t.name }, `${t.name} (${t.host})`)));
      if (!sources.length || !targets.length) replace(message, notice('warning', 'Create a source endpoint and a target first: ', h('a', { href: '#/endpoints' }, 'Endpoints & targets')));
    } catch (err) {
      replace(message, notice('error', (err as Error).message));
    }
  })();
  return { dispose: () => undefined };
}
