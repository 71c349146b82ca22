/** A page of the admin app: renders into `root`, and stops its polling when left. */
export interface View {
  dispose(): void;
}

/**
 * Runs `refresh` now and every `ms` while the page is shown (live status, SPEC §6), one at a
 * time (a slow answer is not overtaken by the next poll).
 */
export function poll(refresh: () => Promise<void>, ms: number): View {
  let stopped = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const tick = async () => {
    try {
      await refresh();
    } finally {
      if (!stopped) timer = setTimeout(() => void tick(), ms);
    }
  };
  void tick();
  return {
    dispose() {
      stopped = true;
      clearTimeout(timer);
    },
  };
}

export const LIVE_MS = 2000;
