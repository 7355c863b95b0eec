/**
 * Inside a child process: how long its event loop was held up (monitorEventLoopDelay) and how
 * long garbage collection paused it (PerformanceObserver "gc"), between two reads. It tells
 * whether a latency tail comes from the measured process itself or from outside it.
 */
import { monitorEventLoopDelay, PerformanceObserver } from "node:perf_hooks";

export interface LoopStats {
  /** Event-loop delay percentiles, ms. */
  delayP50Ms: number;
  delayP99Ms: number;
  delayMaxMs: number;
  gcCount: number;
  gcTotalMs: number;
  gcMaxMs: number;
}

export interface LoopMonitor {
  /** Figures since the previous read (or start), then starts over. */
  read(): LoopStats;
  stop(): void;
}

export function startLoopMonitor(): LoopMonitor {
  const h = monitorEventLoopDelay({ resolution: 1 });
  h.enable();
  let gcCount = 0;
  let gcTotal = 0;
  let gcMax = 0;
  const obs = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      gcCount++;
      gcTotal += e.duration;
      gcMax = Math.max(gcMax, e.duration);
    }
  });
  obs.observe({ entryTypes: ["gc"] });
  return {
    read() {
      const ms = (ns: number): number => Number((ns / 1e6).toFixed(3));
      const s: LoopStats = {
        delayP50Ms: ms(h.percentile(50)),
        delayP99Ms: ms(h.percentile(99)),
        delayMaxMs: ms(h.max),
        gcCount,
        gcTotalMs: Number(gcTotal.toFixed(3)),
        gcMaxMs: Number(gcMax.toFixed(3)),
      };
      h.reset();
      gcCount = 0;
      gcTotal = 0;
      gcMax = 0;
      return s;
    },
    stop() {
      h.disable();
      obs.disconnect();
    },
  };
}
