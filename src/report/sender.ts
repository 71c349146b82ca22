/**
 * Sends the report e-mails that are due (schedule.ts) through nodemailer's SMTP transport.
 * Run by the scheduler of every `serve`; claims keep each report to one sender.
 */
import { scrubSecrets } from '../auth/errors.js';
import { createTransport } from 'nodemailer';
import type { Logger } from 'pino';
import type { Store } from '../store/open.js';
import { buildReport } from './batch-report.js';
import { composeReportEmail } from './compose.js';
import type { ReportMailConfig } from './mail-config.js';
import { claimReport, type DueReport, dueReports, recordReportFailed, recordReportSent } from './schedule.js';

/** An SMTP server that accepts the connection and then says nothing must not hold the scheduler. */
const SMTP_TIMEOUT_MS = 60_000;

export interface ReportSenderOptions {
  store: Store;
  config: ReportMailConfig;
  incrementalEveryMs: number;
  logger: Logger;
}

/** nodemailer's errors may quote the connection URL or its credentials; none of it leaves here. */
function safeError(err: unknown, config: ReportMailConfig): string {
  let msg = (err as Error)?.message ?? String(err);
  msg = msg.split(config.url).join(config.display);
  try {
    const u = new URL(config.url);
    // The user name too (some relays take an API token as both), unless it is too short to
    // be anything but a word that would mangle the message.
    // decodeURIComponent throws on a stray `%`: the raw form is scrubbed then all the same.
    const decoded = (t: string) => {
      try {
        return decodeURIComponent(t);
      } catch {
        return t;
      }
    };
    const secrets = [u.password, decoded(u.password), ...[u.username, decoded(u.username)].filter((n) => n.length >= 4)];
    // In every form a server may echo them (an AUTH PLAIN response quoted in a 535 reply).
    msg = scrubSecrets(msg, secrets.filter((x) => x !== ''));
  } catch {
    // mail-config.ts only accepts URLs that parse
  }
  return msg;
}

function recipientsOf(batch: DueReport['batch'], config: ReportMailConfig): string[] {
  const notify = JSON.parse(batch.notify_json) as unknown;
  const all = [...config.admins, ...(Array.isArray(notify) ? notify.map(String) : [])];
  const seen = new Set<string>();
  return all.filter((a) => {
    const k = a.toLowerCase();
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

/** How often a sender looks for due reports: reports are not urgent, and each look costs a few queries. */
const CHECK_EVERY_MS = 5000;

export class ReportSender {
  private readonly transport;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopping = false;

  constructor(private readonly opts: ReportSenderOptions) {
    // Settings in the URL's query (e.g. ?tls.rejectUnauthorized=false) win over these defaults.
    this.transport = createTransport({ url: opts.config.url, connectionTimeout: SMTP_TIMEOUT_MS, greetingTimeout: SMTP_TIMEOUT_MS, socketTimeout: SMTP_TIMEOUT_MS });
  }

  /**
   * Looks for due reports on a timer of its own: a slow or unreachable SMTP server must not
   * hold up the scheduler (batches starting at their set time, deletions).
   */
  start(everyMs = CHECK_EVERY_MS): void {
    const check = () => {
      if (this.running || this.stopping) return;
      this.running = this.tick()
        .catch((err: unknown) => this.opts.logger.error({ err: (err as Error).message }, 'looking for due reports failed; retrying'))
        .finally(() => (this.running = undefined));
    };
    check();
    this.timer = setInterval(check, everyMs);
  }

  /** Stops looking; a send in progress is left to finish or time out (its claim then expires). */
  stop(): void {
    this.stopping = true;
    clearInterval(this.timer);
    this.transport.close();
  }

  /** Sends every report due now. A failed send is recorded for a later retry, never thrown. */
  async tick(): Promise<void> {
    const { store, logger } = this.opts;
    for (const due of await dueReports(store, Date.now(), this.opts.incrementalEveryMs)) {
      if (this.stopping) return;
      // Each claim with the time it is made: sends before it may have taken a while.
      const claimedAt = Date.now();
      if (!(await claimReport(store, due, claimedAt))) continue;
      const log = logger.child({ batch: due.batch.name, report: due.kind });
      const to = recipientsOf(due.batch, this.opts.config);
      let sent: { messageId: string } | { none: string };
      try {
        if (to.length === 0) {
          sent = { none: 'no recipients: set MAILFERRY_ADMIN_EMAIL, or --notify on the batch' };
        } else {
          const report = await buildReport(store.db, due.batch, claimedAt, { since: due.since, until: claimedAt });
          const info = await this.transport.sendMail({ from: this.opts.config.from, to, ...composeReportEmail(report, due.kind) });
          sent = { messageId: info.messageId };
        }
      } catch (err) {
        const error = safeError(err, this.opts.config);
        log.warn({ err: error }, 'report e-mail failed; retrying later');
        await recordReportFailed(store, due, Date.now(), `could not e-mail the report through ${this.opts.config.display}: ${error}`).catch(() => undefined);
        continue;
      }
      // Sent: failing to record it must not look like a failed send (that would send it
      // again in a minute); the claim then expires and the report goes out once more,
      // which at-least-once allows.
      await recordReportSent(store, due, claimedAt, 'none' in sent ? sent.none : null).catch((err: unknown) =>
        log.error({ err: (err as Error).message }, 'the report went out but recording it failed; it may be sent again'),
      );
      if ('none' in sent) log.warn(`report not sent: ${sent.none}`);
      else log.info({ to, messageId: sent.messageId }, `${due.kind} report e-mailed`);
    }
  }
}
