/**
 * Source endpoints and targets (SPEC §3): listed with their settings, created through a form
 * whose connection test is shown step by step (reach, TLS, greeting, capabilities, login);
 * nothing is stored when the test fails.
 */
import type { EndpointTest } from '../../endpoint/test-settings.js';
import { api, ApiError } from './api.js';
import { h, notice, replace } from './dom.js';
import type { View } from './view.js';

type Role = 'source' | 'target';
const BASE: Record<Role, string> = { source: '/api/endpoints', target: '/api/targets' };
const NOUN: Record<Role, string> = { source: 'source endpoint', target: 'target' };

type Stored = Record<string, unknown> & { name: string; host: string; port: number; tls: string };

export function testSteps(t: EndpointTest): HTMLElement {
  return h(
    'div',
    { class: `notice ${t.ok ? '' : 'error'}`, 'data-test': t.ok ? 'passed' : 'failed' },
    // A target tested without a user to act as: the server was reached, the admin login was not tried.
    h('strong', {}, !t.ok ? 'Test FAILED' : t.probe.warnings.some((w) => w.startsWith('the admin login was not tried')) ? 'Server reached; the admin login was NOT tested' : 'Test passed'),
    h('ul', { class: 'problems' }, ...t.probe.steps.map((s) => h('li', { class: s.ok ? '' : 'error' }, `${s.ok ? '✓' : '✗'} ${s.step}: ${s.detail} (${s.ms} ms)`)), ...t.probe.warnings.map((w) => h('li', { class: 'warning' }, `note: ${w}`))),
    t.session.kind === 'admins' ? h('p', { class: 'error' }, t.session.error) : t.session.kind === 'both-empty' ? h('p', { class: 'muted' }, t.session.note) : null,
  );
}

/** The create form, which also edits a stored one (`edit`): then only what it shows is sent, and an empty password keeps the stored one. */
function form(role: Role, created: () => void): { el: HTMLElement; edit(row: Stored): void } {
  const id = (s: string) => `${role}-${s}`;
  const input = (name: string, attrs: Record<string, string | number | boolean> = {}) => h('input', { id: id(name), name, ...attrs });
  const fields = {
    // Escaped '-': browsers compile `pattern` with the v flag, where a bare '-' in a class is an error.
    name: input('name', { required: true, pattern: '[A-Za-z0-9_\\-]{1,64}' }),
    host: input('host', { required: true }),
    port: input('port', { type: 'number', min: 1, max: 65535, placeholder: '993 (143 without implicit TLS)' }),
    tls: h('select', { id: id('tls') }, h('option', { value: 'implicit' }, 'implicit TLS (993)'), h('option', { value: 'starttls' }, 'STARTTLS'), h('option', { value: 'none' }, 'none (plain text)')),
    acceptUntrustedCert: input('untrusted', { type: 'checkbox' }),
    // SPEC §3: how the source is logged in to (the CLI's --auth). "login" lets an admin form
    // (user*admin) use SASL PLAIN where the server offers it (auth/credentials.ts).
    auth: h('select', { id: id('auth') }, h('option', { value: 'login' }, 'LOGIN (SASL PLAIN for user*admin where offered)'), h('option', { value: 'plain' }, 'AUTHENTICATE PLAIN, always')),
    // A target's admin password is only tried acting as a user: asked for on creation.
    testUser: input('test-user', { required: role === 'target' }),
    testPassword: input('test-password', { type: 'password', autocomplete: 'off' }),
    adminUser: input('admin-user', { required: role === 'target' }),
    adminPassword: input('admin-password', { type: 'password', autocomplete: 'off', required: role === 'target' }),
    impersonation: h('select', { id: id('impersonation') }, h('option', { value: 'sasl' }, 'SASL PLAIN authorization id'), h('option', { value: 'separator' }, 'user*admin (master-user separator)')),
    maxMigrations: input('max-migrations', { type: 'number', min: 1, max: 1000, placeholder: '20' }),
    maxIncremental: input('max-incremental', { type: 'number', min: 1, max: 1000, placeholder: '10' }),
  };
  const result = h('div', { id: id('result') });
  /** The stored one being edited, or null when creating. */
  let editing: string | null = null;
  const heading = h('h2', {}, `New ${NOUN[role]}`);
  const submitButton = h('button', { type: 'submit', class: 'primary', id: id('create') }, `Test and store the ${NOUN[role]}`);
  const cancel = h('button', { type: 'button', id: id('cancel-edit'), hidden: true, onclick: () => reset() }, 'Cancel');
  const reset = () => {
    editing = null;
    fields.name.readOnly = false;
    fields.testUser.required = role === 'target';
    fields.adminPassword.required = role === 'target';
    fields.adminPassword.placeholder = '';
    fields.testUser.placeholder = '';
    heading.textContent = `New ${NOUN[role]}`;
    submitButton.textContent = `Test and store the ${NOUN[role]}`;
    cancel.hidden = true;
    (fields.name.form as HTMLFormElement | null)?.reset();
  };
  const edit = (r: Stored) => {
    editing = r.name;
    fields.name.value = r.name;
    fields.name.readOnly = true;
    fields.host.value = r.host;
    fields.port.value = String(r.port);
    fields.tls.value = r.tls;
    fields.acceptUntrustedCert.checked = r.acceptUntrustedCert === true;
    if (role === 'source') fields.auth.value = String(r.auth ?? 'login');
    // A test login is asked for again, not carried over from an earlier form.
    fields.testUser.value = '';
    fields.testPassword.value = '';
    if (role === 'source') {
      fields.maxMigrations.value = String(r.maxConcurrentMigrations ?? '');
      fields.maxIncremental.value = String(r.maxConcurrentIncrementalSyncs ?? '');
    } else {
      fields.adminUser.value = String(r.adminUser ?? '');
      fields.impersonation.value = String(r.impersonation ?? 'sasl');
      fields.adminPassword.required = false;
      fields.adminPassword.placeholder = 'empty: keep the stored password';
      // Asked for again when the admin login changes (the server refuses an untried one).
      fields.testUser.required = false;
      fields.testUser.placeholder = 'needed when the admin login changes';
    }
    heading.textContent = `Change ${NOUN[role]} ${r.name}`;
    submitButton.textContent = 'Test and save the changes';
    cancel.hidden = false;
    replace(result);
    fields.host.focus();
  };
  const row = (label: string, el: HTMLElement) => [h('label', { for: el.id }, label), el];
  const submit = async (e: Event) => {
    e.preventDefault();
    const num = (el: HTMLInputElement) => (el.value === '' ? undefined : Number(el.value));
    const body = {
      name: fields.name.value.trim(),
      host: fields.host.value.trim(),
      port: num(fields.port),
      tls: fields.tls.value,
      acceptUntrustedCert: fields.acceptUntrustedCert.checked,
      ...(fields.testUser.value ? { testUser: fields.testUser.value } : {}),
      // A target's admin login is always SASL PLAIN or LOGIN by its impersonation; a source's is chosen.
      ...(role === 'source' ? { auth: fields.auth.value } : editing ? {} : { auth: 'plain' }),
      ...(role === 'source'
        ? { testPassword: fields.testPassword.value || undefined, maxConcurrentMigrations: num(fields.maxMigrations), maxConcurrentIncrementalSyncs: num(fields.maxIncremental) }
        : { adminUser: fields.adminUser.value, adminPassword: fields.adminPassword.value, impersonation: fields.impersonation.value }),
    };
    replace(result, notice('info', 'Testing the connection…'));
    const changing = editing;
    try {
      const r = changing
        ? await api<{ test: EndpointTest }>('PATCH', `${BASE[role]}/${encodeURIComponent(changing)}`, { ...body, name: undefined, adminPassword: fields.adminPassword.value || undefined })
        : await api<{ test: EndpointTest }>('POST', BASE[role], body);
      replace(result, testSteps(r.test), notice('info', `${NOUN[role]} ${body.name} ${changing ? 'changed' : 'stored'}.`));
      fields.testPassword.value = '';
      fields.adminPassword.value = '';
      if (changing) reset();
      created();
    } catch (err) {
      if (err instanceof ApiError && err.status === 422) return replace(result, testSteps((err.body as { test: EndpointTest }).test), notice('error', `${NOUN[role]} ${body.name} was not ${changing ? 'changed' : 'stored'}.`));
      replace(result, notice('error', (err as Error).message));
    }
  };
  const el = h(
    'div',
    {},
    heading,
    h(
      'form',
      { class: 'grid', id: id('form'), onsubmit: (e: Event) => void submit(e) },
      ...row('Name', fields.name),
      ...row('IMAP server', fields.host),
      ...row('Port', fields.port),
      ...row('Security', fields.tls),
      ...row('Accept an untrusted certificate', fields.acceptUntrustedCert),
      ...(role === 'source'
        ? [...row('Log in with', fields.auth), ...row('Max concurrent migrations', fields.maxMigrations), ...row('Max concurrent incremental syncs', fields.maxIncremental), ...row('Test login (optional)', fields.testUser), ...row('Its password', fields.testPassword)]
        : [...row('Admin user', fields.adminUser), ...row('Admin password', fields.adminPassword), ...row('Acts as each user by', fields.impersonation), ...row('Test as user', fields.testUser)]),
      h('span'),
      h('div', {}, submitButton, ' ', cancel),
    ),
    result,
  );
  return { el, edit };
}

export function endpointsPage(root: HTMLElement): View {
  const lists: Record<Role, HTMLElement> = { source: h('tbody', { id: 'source-list' }), target: h('tbody', { id: 'target-list' }) };
  const message = h('div');
  const forms: Record<Role, ReturnType<typeof form>> = { source: form('source', () => void load('source')), target: form('target', () => void load('target')) };
  const load = async (role: Role) => {
    try {
      const rows = await api<Stored[]>('GET', BASE[role]);
      replace(
        lists[role],
        ...rows.map((r) =>
          h(
            'tr',
            { 'data-endpoint': r.name },
            h('td', {}, r.name),
            h('td', {}, `${r.host}:${r.port}`),
            h('td', {}, r.tls),
            h('td', {}, role === 'source' ? `${String(r.maxConcurrentMigrations)} migrations, ${String(r.maxConcurrentIncrementalSyncs)} incremental at once; logs in with ${r.auth === 'plain' ? 'AUTHENTICATE PLAIN' : 'LOGIN'}` : `admin ${String(r.adminUser)} (${String(r.impersonation)})`),
            h(
              'td',
              {},
              h('button', { type: 'button', onclick: () => void test(role, r.name) }, 'Test'),
              ' ',
              h('button', { type: 'button', class: 'edit', onclick: () => forms[role].edit(r) }, 'Change'),
              ' ',
              h('button', { type: 'button', class: 'danger', onclick: () => void remove(role, r.name) }, 'Delete'),
            ),
          ),
        ),
      );
    } catch (err) {
      replace(message, notice('error', (err as Error).message));
    }
  };
  const test = async (role: Role, name: string) => {
    // The target's admin login can only be tried acting as some user (a mailbox on the target).
    const testUser = role === 'target' ? (prompt(`Test the admin login of ${name} acting as which user? (any mailbox on the target; leave empty to only reach the server)`) ?? '').trim() : '';
    replace(message, notice('info', `Testing ${name}…`));
    try {
      replace(message, testSteps(await api<EndpointTest>('POST', `${BASE[role]}/${encodeURIComponent(name)}/test`, testUser ? { testUser } : {})));
    } catch (err) {
      replace(message, notice('error', (err as Error).message));
    }
  };
  const remove = async (role: Role, name: string) => {
    if (!confirm(`Delete the ${NOUN[role]} ${name}?`)) return;
    try {
      await api('DELETE', `${BASE[role]}/${encodeURIComponent(name)}`);
      replace(message);
      await load(role);
    } catch (err) {
      replace(message, notice('error', (err as Error).message));
    }
  };
  const table = (role: Role) => h('table', {}, h('thead', {}, h('tr', {}, ...['Name', 'Server', 'Security', 'Limits / admin', ''].map((c) => h('th', {}, c)))), lists[role]);
  replace(
    root,
    h('h1', {}, 'Endpoints and targets'),
    message,
    h('h2', {}, 'Source endpoints'),
    table('source'),
    forms.source.el,
    h('h2', {}, 'Targets'),
    table('target'),
    forms.target.el,
  );
  void load('source');
  void load('target');
  return { dispose: () => undefined };
}
