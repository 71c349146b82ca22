/** The migration endpoint connection test (SPEC §3). */
export { DEFAULT_PROBE_TIMEOUT_MS, probeEndpoint } from './probe.js';
export type { ProbeOptions, ProbeResult, ProbeStep, ProbeStepName } from './types.js';
export { assessCapabilities, type CapabilityAssessment, NOTABLE_EXTENSIONS } from './capabilities.js';
