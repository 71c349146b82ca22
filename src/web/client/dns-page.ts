/**
 * The cut-over check (SPEC §7): a domain's MX records and their TTL, whether they point at
 * the new system, and since when (the 72 hours before a batch may be deleted).
 */
import type { DnsCheckResult } from '../../dns/check.js';
import { api } from './api.js';
import { h, notice, replace } from './dom.js';
import { when } from './format.js';
import type { View } from './view.js';

function result(r: DnsCheckResult): HTMLElement {
  const yesNo = (v: boolean | null) => (v === null ? '–' : v ? 'yes' : 'no');
  return h(
    'div',
    { class: 'panel', id: 'dns-result', 'data-exit': r.exitStatus },
    h('strong', {}, `${r.domain}: `, r.answer === 'mx' ? `${r.mx.length} MX record${r.mx.length === 1 ? '' : 's'}` : r.answer),
    h('div', { class: 'sub' }, `asked ${r.resolver}; TTL from ${r.ttlFrom}${r.authoritative ? ' (authoritative)' : ' (a resolver cache: the configured TTL may be higher)'}`),
    r.mx.length
      ? h(
          'table',
          {},
          h('thead', {}, h('tr', {}, ...['Preference', 'Mail server', 'TTL', 'Points at the target'].map((c) => h('th', {}, c)))),
          h('tbody', {}, ...r.mx.map((m) => h('tr', {}, h('td', { class: 'num' }, m.preference), h('td', {}, m.exchange, m.implicit ? ' (implicit MX)' : ''), h('td', { class: 'num' }, m.ttl ?? '–'), h('td', {}, yesNo(m.pointsAtTarget))))),
        )
      : null,
    // No verdict for a domain that does not exist or takes no mail: its warnings say why.
    r.ttlOk === null
      ? null
      : h('p', { id: 'dns-ttl' }, `TTL ${r.ttl ?? '?'} s: `, r.ttlOk ? 'low enough (3600 s or less)' : r.switched === 'all' ? 'more than 3600 s (no matter now: the switch is done)' : 'too high for the switch (more than 3600 s)'),
    r.switched ? h('p', { id: 'dns-switched' }, `MX points at ${r.targetMx}: ${r.switched === 'all' ? 'all records' : r.switched === 'some' ? 'only some records' : 'not yet'}`) : null,
    r.switchedSeenAt ? h('p', { id: 'dns-72h' }, `Switched since at least ${when(r.switchedSeenAt)}; batches of this domain may be deleted from ${when(r.deleteSafeAt)}.`) : null,
    r.warnings.length ? h('ul', { class: 'problems warning' }, ...r.warnings.map((w) => h('li', {}, w))) : null,
    r.notes.length ? h('ul', { class: 'problems muted' }, ...r.notes.map((n) => h('li', {}, n))) : null,
  );
}

export function dnsPage(root: HTMLElement): View {
  const domain = h('input', { id: 'dns-domain', required: true, placeholder: 'example.org' });
  const targetMx = h('input', { id: 'dns-target-mx', placeholder: 'mx.new.example (optional; several: mx1.new.example, mx2.new.example)' });
  const server = h('input', { id: 'dns-server', placeholder: 'system resolver (optional: IP[:PORT])' });
  const out = h('div');
  const submit = async (e: Event) => {
    e.preventDefault();
    const q = new URLSearchParams();
    if (targetMx.value.trim()) q.set('targetMx', targetMx.value.trim());
    if (server.value.trim()) q.set('server', server.value.trim());
    replace(out, notice('info', 'Asking DNS…'));
    try {
      replace(out, result(await api<DnsCheckResult>('GET', `/api/dns/${encodeURIComponent(domain.value.trim())}?${q}`)));
    } catch (err) {
      replace(out, notice('error', (err as Error).message));
    }
  };
  replace(
    root,
    h('h1', {}, 'MX check for the cut-over'),
    h(
      'p',
      { class: 'muted' },
      "Before the migration, lower the MX record's TTL to 3600 s or less. After the initial sync, point MX at the new system, wait 72 hours (every mailbox syncs at least once after the switch), then delete the batch. With the target's MX host, each check is remembered, so the 72 hours are tracked.",
    ),
    h(
      'form',
      { class: 'grid', id: 'dns-form', onsubmit: (e: Event) => void submit(e) },
      h('label', { for: 'dns-domain' }, 'Domain'),
      domain,
      h('label', { for: 'dns-target-mx' }, "New system's MX host"),
      targetMx,
      h('label', { for: 'dns-server' }, 'DNS server'),
      server,
      h('span'),
      h('div', {}, h('button', { type: 'submit', class: 'primary', id: 'dns-check' }, 'Check')),
    ),
    out,
  );
  return { dispose: () => undefined };
}
