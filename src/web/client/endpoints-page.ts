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
    h('strong', {}, t.ok ? 'Test passed' : 'Test FAILED'),
    h('ul', { class: 'problems' }, ...t.probe.steps.map((s) => h('li', { class: s.ok ? '' : 'error' }, `${s.ok ? '✓' : '✗'} ${s.step}: ${s.detail} (${s.ms} ms)`)), ...t.probe.warnings.map((w) => h('li', { class: 'warning' }, `note: ${w}`))),
    t.session.kind === 'admins' ? h('p', { class: 'error' }, t.session.error) : t.session.kind === 'both-empty' ? h('p', { class: 'muted' }, t.session.note) : null,
  );
}

function form(role: Role, created: () => void): HTMLElement {
  const id = (s: string) => `${role}-${s}`;
  const input = (name: string, attrs: Record<string, string | number | boolean> = {}) => h('input', { id: id(name), name, ...attrs });
  const fields = {
    name: input('name', { required: true, pattern: '[A-Za-z0-9_-]{1,64}' }),
    host: input('host', { required: true }),
    port: input('port', { type: 'number', min: 1, max: 65535, placeholder: '993 (143 without implicit TLS)' }),
    tls: h('select', { id: id('tls') }, h('option', { value: 'implicit' }, 'implicit TLS (993)'), h('option', { value: 'starttls' }, 'STARTTLS'), h('option', { value: 'none' }, 'none (plain text)')),
    acceptUntrustedCert: input('untrusted', { type: 'checkbox' }),
    testUser: input('test-user'),
    testPassword: input('test-password', { type: 'password', autocomplete: 'off' }),
    adminUser: input('admin-user', { required: role === 'target' }),
    adminPassword: input('admin-password', { type: 'password', autocomplete: 'off', required: role === 'target' }),
    impersonation: h('select', { id: id('impersonation') }, h('option', { value: 'sasl' }, 'SASL PLAIN authorization id'), h('option', { value: 'separator' }, 'user*admin (master-user separator)')),
    maxMigrations: input('max-migrations', { type: 'number', min: 1, max: 1000, placeholder: '20' }),
    maxIncremental: input('max-incremental', { type: 'number', min: 1, max: 1000, placeholder: '10' }),
  };
  const result = h('div', { id: id('result') });
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
      ...(role === 'source'
        ? { testPassword: fields.testPassword.value || undefined, maxConcurrentMigrations: num(fields.maxMigrations), maxConcurrentIncrementalSyncs: num(fields.maxIncremental), auth: 'login' }
        : { adminUser: fields.adminUser.value, adminPassword: fields.adminPassword.value, impersonation: fields.impersonation.value, auth: 'plain' }),
    };
    replace(result, notice('info', 'Testing the connection…'));
    try {
      const r = await api<{ test: EndpointTest }>('POST', BASE[role], body);
      replace(result, testSteps(r.test), notice('info', `${NOUN[role]} ${body.name} stored.`));
      fields.testPassword.value = '';
      fields.adminPassword.value = '';
      created();
    } catch (err) {
      if (err instanceof ApiError && err.status === 422) return replace(result, testSteps((err.body as { test: EndpointTest }).test), notice('error', `${NOUN[role]} ${body.name} was not stored.`));
      replace(result, notice('error', (err as Error).message));
    }
  };
  return h(
    'div',
    {},
    h(
      'form',
      { class: 'grid', id: id('form'), onsubmit: (e: Event) => void submit(e) },
      ...row('Name', fields.name),
      ...row('IMAP server', fields.host),
      ...row('Port', fields.port),
      ...row('Security', fields.tls),
      ...row('Accept an untrusted certificate', fields.acceptUntrustedCert),
      ...(role === 'source'
        ? [...row('Max concurrent migrations', fields.maxMigrations), ...row('Max concurrent incremental syncs', fields.maxIncremental), ...row('Test login (optional)', fields.testUser), ...row('Its password', fields.testPassword)]
        : [...row('Admin user', fields.adminUser), ...row('Admin password', fields.adminPassword), ...row('Acts as each user by', fields.impersonation), ...row('Test as user (optional)', fields.testUser)]),
      h('span'),
      h('div', {}, h('button', { type: 'submit', class: 'primary', id: id('create') }, `Test and store the ${NOUN[role]}`)),
    ),
    result,
  );
}

export function endpointsPage(root: HTMLElement): View {
  const lists: Record<Role, HTMLElement> = { source: h('tbody', { id: 'source-list' }), target: h('tbody', { id: 'target-list' }) };
  const message = h('div');
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
            h('td', {}, role === 'source' ? `${String(r.maxConcurrentMigrations)} migrations, ${String(r.maxConcurrentIncrementalSyncs)} incremental at once` : `admin ${String(r.adminUser)} (${String(r.impersonation)})`),
            h(
              'td',
              {},
              h('button', { type: 'button', onclick: () => void test(role, r.name) }, 'Test'),
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
    replace(message, notice('info', `Testing ${name}…`));
    try {
      replace(message, testSteps(await api<EndpointTest>('POST', `${BASE[role]}/${encodeURIComponent(name)}/test`, {})));
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
    h('h2', {}, 'New source endpoint'),
    form('source', () => void load('source')),
    h('h2', {}, 'Targets'),
    table('target'),
    h('h2', {}, 'New target'),
    form('target', () => void load('target')),
  );
  void load('source');
  void load('target');
  return { dispose: () => undefined };
}
