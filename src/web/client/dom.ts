/**
 * Building the page's elements. Text always goes in as text nodes, never as HTML: mailbox
 * addresses, folder names, subjects and server errors come from outside and must not be
 * able to add markup or script to the admin's page.
 */
export type Child = Node | string | number | null | undefined | false;

type Attrs = Record<string, string | number | boolean | ((e: Event) => void) | undefined>;

export function h<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Attrs = {}, ...children: Child[]): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === false) continue;
    if (typeof value === 'function') el.addEventListener(name.replace(/^on/, ''), value);
    else if (value === true) el.setAttribute(name, '');
    else el.setAttribute(name, String(value));
  }
  append(el, ...children);
  return el;
}

export function append(el: Element, ...children: Child[]): void {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    el.append(typeof c === 'string' || typeof c === 'number' ? document.createTextNode(String(c)) : c);
  }
}

export function replace(el: Element, ...children: Child[]): void {
  el.replaceChildren();
  append(el, ...children);
}

/** A progress bar: `done` of `total` (empty while the total is unknown). */
export function bar(done: number, total: number, label: string): HTMLElement {
  const pct = total > 0 ? Math.min(100, (100 * done) / total) : 0;
  // Set through the CSSOM: the page's Content-Security-Policy (no inline styles) drops a
  // `style` attribute, which left every bar empty.
  const fill = h('span');
  fill.style.width = `${pct.toFixed(1)}%`;
  return h('div', { class: 'bar', role: 'progressbar', 'aria-valuenow': Math.round(pct), 'aria-valuemin': 0, 'aria-valuemax': 100, 'aria-label': label, title: `${done} of ${total}` }, fill);
}

export function statusBadge(status: string): HTMLElement {
  return h('span', { class: `status ${status}`, 'data-status': status }, status);
}

const FLASH_KEY = 'mailferry.flash';

/** A message for the next page shown (after "Delete anyway" leads back to the dashboard). */
export function flash(text: string): void {
  sessionStorage.setItem(FLASH_KEY, text);
}

/** The message left by flash(), once. */
export function takeFlash(): string | null {
  const text = sessionStorage.getItem(FLASH_KEY);
  sessionStorage.removeItem(FLASH_KEY);
  return text;
}

export function notice(kind: 'info' | 'error' | 'warning', ...children: Child[]): HTMLElement {
  return h('div', { class: `notice ${kind === 'info' ? '' : kind}`, role: kind === 'error' ? 'alert' : 'status' }, ...children);
}
