// Kills worker process groups, and makes sure none outlives this process: workers run detached (their
// own group, so a terminal's Ctrl-C reaches only the orchestrator), hence nothing kills them for us.

/** Live worker groups, each with what to clean up after killing it. */
const liveGroups = new Map<number, () => void>();
let exitHookInstalled = false;

/** Sends `signal` to the whole group led by `pid`; false if it is already gone. */
export function signalGroup(pid: number, signal: NodeJS.Signals): boolean {
  try {
    // Windows has no process groups; the pid alone is the best there is.
    process.kill(process.platform === 'win32' ? pid : -pid, signal);
    return true;
  } catch {
    return false;
  }
}

/**
 * Remembers a live worker group, to SIGKILL it if this process exits first; `cleanUp` (synchronous)
 * then removes what the killed worker leaves behind.
 */
export function trackGroup(pid: number, cleanUp: () => void = () => {}): void {
  liveGroups.set(pid, cleanUp);
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    // 'exit' handlers must be synchronous; process.kill is.
    process.on('exit', () => {
      for (const [group, cleanUp] of liveGroups) {
        signalGroup(group, 'SIGKILL');
        cleanUp();
      }
    });
  }
}

export function untrackGroup(pid: number): void {
  liveGroups.delete(pid);
}
