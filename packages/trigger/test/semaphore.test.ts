import { describe, expect, it } from "vitest";
import { Semaphore } from "../src/semaphore.js";

describe("semaphore - delivery slots", () => {
  it("semaphore - tryAcquire takes a free slot at once and refuses when none is free", () => {
    const s = new Semaphore(2);
    const a = s.tryAcquire();
    const b = s.tryAcquire();
    expect(a).toBeTypeOf("function");
    expect(b).toBeTypeOf("function");
    expect(s.tryAcquire()).toBeUndefined();
    a!();
    a!(); // a second release of the same slot frees nothing more
    const c = s.tryAcquire();
    expect(c).toBeTypeOf("function");
    expect(s.tryAcquire()).toBeUndefined();
  });

  it("semaphore - tryAcquire does not pass a waiter; a release hands the slot to the oldest waiter", async () => {
    const s = new Semaphore(1);
    const first = s.tryAcquire()!;
    const order: string[] = [];
    const w1 = s.acquire().then((release) => {
      order.push("w1");
      return release;
    });
    const w2 = s.acquire().then((release) => {
      order.push("w2");
      return release;
    });
    first();
    // The slot went to w1: nothing is free for a newcomer while w2 still waits.
    expect(s.tryAcquire()).toBeUndefined();
    (await w1)();
    expect(s.tryAcquire()).toBeUndefined();
    (await w2)();
    expect(order).toEqual(["w1", "w2"]);
    expect(s.tryAcquire()).toBeTypeOf("function");
  });
});
