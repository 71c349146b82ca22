/** Input and output of the endpoint connection test (SPEC §3). */
import type { ImapLogin, TlsMode } from '../imap/endpoint.js';

export interface ProbeOptions {
  host: string;
  port: number;
  tls: TlsMode;
  /** Accept a certificate that does not verify (self-signed, expired, wrong name). Default false. */
  acceptUntrustedCert?: boolean;
  /** Limit for the whole test, all steps together. Default 15 000 ms. */
  timeoutMs?: number;
  /** With a sample login the test also logs in (and reads the capabilities after login). */
  login?: ImapLogin;
}

export type ProbeStepName = 'connect' | 'tls' | 'greeting' | 'starttls' | 'capabilities' | 'login';

export interface ProbeStep {
  step: ProbeStepName;
  ok: boolean;
  /** One plain sentence (or a few, joined by '; '): what happened, or what failed and why. */
  detail: string;
  /** How long the step took. */
  ms: number;
}

export interface ProbeResult {
  /** Every step that ran succeeded (warnings do not count). */
  ok: boolean;
  /** In the order they ran; the steps after a failed one are absent. */
  steps: ProbeStep[];
  /** Upper-case capability names: after login when a login was tested and succeeded,
   * otherwise as announced before login (after STARTTLS where used). */
  capabilities: string[];
  /** Things that did not fail the test but matter (untrusted certificate accepted, no
   * encryption, missing extensions). */
  warnings: string[];
  /** Wall time of the whole test. */
  ms: number;
}
