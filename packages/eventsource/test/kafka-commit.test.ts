// The kafka source's offset committer alone, against a stand-in for the kafkajs consumer (only
// `commitOffsets`): how often it commits under a steady stream of marks, and that flush commits
// everything marked without waiting. The source's commits against a real broker are in
// kafka-source.test.ts.
import { setTimeout as sleep } from "node:timers/promises";
import type { Consumer } from "kafkajs";
import { silentLogger } from "@ofevents/core";
import { describe, expect, it } from "vitest";
import { COMMIT_INTERVAL_MS, OffsetCommitter } from "../src/sources/kafka.js";

type Commit = { topic: string; partition: number; offset: string }[];

/** A consumer whose commits take `ms` and are recorded. */
function recordingConsumer(ms: number): { consumer: Consumer; commits: Commit[] } {
  const commits: Commit[] = [];
  const consumer = {
    commitOffsets: async (offsets: Commit) => {
      await sleep(ms);
      commits.push(offsets);
    },
  } as unknown as Consumer;
  return { consumer, commits };
}

const log = silentLogger();

describe("kafka source - offset commits", () => {
  it("kafka source - a steady stream of taken records is committed at most once per interval, not once per record", async () => {
    const { consumer, commits } = recordingConsumer(1);
    const committer = new OffsetCommitter(consumer, "t", log);
    const started = performance.now();
    let marks = 0;
    // Four partitions taking a record each every millisecond or so, for three intervals.
    while (performance.now() - started < 3 * COMMIT_INTERVAL_MS) {
      for (let p = 0; p < 4; p++) committer.mark(p, BigInt(++marks));
      await sleep(1);
    }
    const elapsed = performance.now() - started;
    await committer.flush();
    // One commit at the first mark, then one per interval, and the flush.
    expect(commits.length).toBeLessThanOrEqual(Math.ceil(elapsed / COMMIT_INTERVAL_MS) + 2);
    expect(marks / commits.length).toBeGreaterThan(20);
    // Nothing lost in the coalescing: the last commit holds every partition's last mark.
    const last = new Map(commits.flat().map((o) => [o.partition, o.offset]));
    for (let p = 0; p < 4; p++) expect(last.get(p)).toBe(String(marks - 3 + p));
  });

  it("kafka source - flush commits everything marked, also within the interval after a commit", async () => {
    const { consumer, commits } = recordingConsumer(0);
    const committer = new OffsetCommitter(consumer, "t", log);
    committer.mark(0, 1n);
    await committer.flush();
    committer.mark(0, 2n);
    committer.mark(1, 7n);
    // The interval since the first commit has not passed: only flush sends these now.
    await committer.flush();
    expect(commits).toEqual([
      [{ topic: "t", partition: 0, offset: "1" }],
      [
        { topic: "t", partition: 0, offset: "2" },
        { topic: "t", partition: 1, offset: "7" },
      ],
    ]);
  });

  it("kafka source - a mark within the interval is committed when it ends, without a flush", async () => {
    const { consumer, commits } = recordingConsumer(0);
    const committer = new OffsetCommitter(consumer, "t", log);
    committer.mark(0, 1n);
    committer.mark(0, 5n);
    await sleep(5);
    committer.mark(0, 9n);
    await sleep(COMMIT_INTERVAL_MS * 3);
    expect(commits.map((c) => c[0]!.offset)).toEqual(["1", "9"]);
  });
});
