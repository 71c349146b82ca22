/**
 * Sends the report e-mails that are due (schedule.ts) through nodemailer's SMTP transport.
 * Run by the scheduler of every `serve`; claims keep each report to one sender.
 */
import { createTransport } from 'nodemailer';
import type { Logger } from 'pino';
import type { Store } from '../store/open.js';
import { buildReport } from './batch-report.js';
import { composeReportEmail } from './compose.js';
import { hideUrlPassword, type ReportMailConfig } from './mail-config.js';
import { claimReport, type DueReport, dueReports, recordReportFailed, recordReportSent } from './schedule.js';

/** An SMTP server that accepts the connection and then says nothing must not hold the scheduler. */
const SMTP_TIMEOUT_MS = 60_000;

export interface ReportSenderOptions {
  store: Store;
  config: ReportMailConfig;
  incrementalEveryMs: number;
  logger: Logger;
}

/** nodemailer's errors may quote the connection URL; none of it leaves here with a password. */
function safeError(err: unknown, config: ReportMailConfig): string {
  let msg = (err as Error)?.message ?? String(err);
  const password = (() => {
    try {
      return decodeURIComponent(new URL(config.url).password);
    } catch {
      return '';
    }
  })();
  msg = msg.split(config.url).join(hideUrlPassword(config.url));
  if (password) msg = msg.split(password).join('***');
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

export class ReportSender {
  private readonly transport;

  constructor(private readonly opts: ReportSenderOptions) {
    // Settings in the URL's query (e.g. ?tls.rejectUnauthorized=false) win over these defaults.
    this.transport = createTransport({ url: opts.config.url, connectionTimeout: SMTP_TIMEOUT_MS, greetingTimeout: SMTP_TIMEOUT_MS, socketTimeout: SMTP_TIMEOUT_MS });
  }

  /** Sends every report due now; a failure is recorded for a later retry and never thrown. */
  async tick(now = Date.now()): Promise<void> {
    const { store, logger } = this.opts;
    for (const due of await dueReports(store, now, this.opts.incrementalEveryMs)) {
      if (!(await claimReport(store, due, now))) continue;
      const log = logger.child({ batch: due.batch.name, report: due.kind });
      try {
        const to = recipientsOf(due.batch, this.opts.config);
        if (to.length === 0) {
          log.warn('report not sent: no recipients (set MAILFERRY_ADMIN_EMAIL, or --notify on the batch)');
          await recordReportSent(store, due, now, 'no recipients: set MAILFERRY_ADMIN_EMAIL, or --notify on the batch');
          continue;
        }
        const report = await buildReport(store.db, due.batch, now, { since: due.since, until: now });
        const mail = composeReportEmail(report, due.kind);
        const info = await this.transport.sendMail({ from: this.opts.config.from, to, ...mail });
        await recordReportSent(store, due, now, null);
        log.info({ to, messageId: info.messageId }, `${due.kind} report e-mailed`);
      } catch (err) {
        const error = safeError(err, this.opts.config);
        log.warn({ err: error }, 'report e-mail failed; retrying later');
        await recordReportFailed(store, due, now, `could not e-mail the report through ${this.opts.config.display}: ${error}`).catch(() => undefined);
      }
    }
  }

  close(): void {
    this.transport.close();
  }
}
