import { readdirSync, readFileSync } from 'node:fs';

/** CPU accounting from /proc (Linux). The machines are small and shared, so benches say how busy they were. */
export const TICK_MS = 10; // USER_HZ is 100 on Linux

/** utime + stime (all threads) of a process, from its /proc stat file; null when it is gone. */
export function processCpuMs(statPath: string): number | null {
  try {
    const s = readFileSync(statPath, 'utf8');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' '); // fields from #3 (state) on
    return (Number(f[11]) + Number(f[12])) * TICK_MS;
  } catch {
    return null;
  }
}

/**
 * Read and write system calls a process has made (`syscr` + `syscw` of /proc/<pid>/io): on these
 * machines much of a hop's cost is the kernel's (a socket write wakes the next process), so calls
 * per job say what batching saves where CPU per job alone does not.
 */
export function processSyscalls(pid: number | 'self'): { reads: number; writes: number } | null {
  try {
    const s = readFileSync(`/proc/${pid}/io`, 'utf8');
    const field = (k: string) => Number(new RegExp(`^${k}: (\\d+)$`, 'm').exec(s)?.[1] ?? NaN);
    return { reads: field('syscr'), writes: field('syscw') };
  } catch {
    return null;
  }
}

/** Busy CPU time of the whole machine (all but idle and iowait). */
export function machineBusyMs(): number | null {
  try {
    const cpu = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1, 9).map(Number);
    return (cpu.reduce((a, b) => a + b, 0) - cpu[3] - cpu[4]) * TICK_MS;
  } catch {
    return null;
  }
}

/** Pids of processes whose command name is `comm` (e.g. postgres, redis-server). */
export function pidsNamed(comm: string): number[] {
  try {
    return readdirSync('/proc').filter((d) => /^\d+$/.test(d)).map(Number).filter((pid) => {
      try {
        return readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === comm;
      } catch {
        return false;
      }
    });
  } catch {
    return [];
  }
}
