/**
 * The in-process bus of the embedded mode. It keeps every contract of the durable drivers within
 * one process: ack on resolve, redelivery with backoff on throw, dead-letter topic after
 * `maxDeliver`, durable groups (a group keeps receiving into its queue while no member is
 * attached), bounded in-flight per member, and backpressure: `publish` waits while a group's queue
 * is full. Events are stored as a copy of their own and each delivery gets another (`copyJson`: what
 * crossing a bus as JSON would give), so handlers never share an object with each other or with
 * the publisher.
 */
import {
  BusError,
  assertCloudEvent,
  copyJson,
  createInstrumentation,
  type CloudEvent,
  type Logger,
} from "@ofevents/core";
import { ConsumerEngine, type InboundMessage } from "../consumer.js";
import { MemorySeenSet } from "../seen.js";
import {
  DEFAULT_MAX_DELIVER,
  DEFAULT_MAX_IN_FLIGHT,
  type BusEvents,
  type EventBus,
  type MessageHandler,
  type SeenSet,
  type SubscribeOptions,
  type Subscription,
  type Tail,
  type TailedEvent,
} from "../types.js";

export interface MemoryBusOptions {
  logger: Logger;
  /** Default deliveries before dead-lettering (5). */
  maxDeliver?: number | undefined;
  /** Queued messages per group before publish waits (10,000). */
  maxQueued?: number | undefined;
}

interface Message {
  topic: string;
  /** Position on the bus, naming the message when it is not a CloudEvent. */
  seq: number;
  /** The event as published, copied once: never handed out, each delivery copies it again. */
  event: CloudEvent;
  deliveries: number;
}

interface Member {
  engine: ConsumerEngine;
  maxInFlight: number;
  inFlight: number;
  closed: boolean;
  idle: Array<() => void>;
}

interface Group {
  name: string;
  topic: string;
  queue: Message[];
  head: number;
  members: Member[];
  next: number;
  /** Messages waiting for their redelivery timer. */
  timers: Map<NodeJS.Timeout, Message>;
}

/** One delivery of a stored message: the engine's view of it (one object, methods shared). */
class MemoryInbound implements InboundMessage {
  readonly topic: string;
  readonly deliveryCount: number;

  constructor(
    private readonly bus: MemoryBus,
    private readonly g: Group,
    private readonly msg: Message,
  ) {
    this.topic = msg.topic;
    this.deliveryCount = msg.deliveries;
  }

  /** A copy for this delivery only: what the handler does with it never reaches the stored event. */
  decode(): CloudEvent {
    const event = copyJson(this.msg.event);
    assertCloudEvent(event);
    return event;
  }

  raw(): Uint8Array {
    return Buffer.from(JSON.stringify(this.msg.event));
  }

  position(): { id: string; source: string; fields: Record<string, unknown> } {
    const { topic, seq } = this.msg;
    return { id: `${topic}-${seq}`, source: `/ofevents/bus/memory/${topic}`, fields: { seq } };
  }

  ack(): void {}

  redeliver(delayMs: number): void {
    this.bus.redeliver(this.g, this.msg, delayMs);
  }
}

class MemoryBus implements EventBus {
  readonly driver = "memory";
  readonly events = createInstrumentation<BusEvents>();
  private readonly groups = new Map<string, Map<string, Group>>();
  private readonly subs = new Set<MemorySubscription>();
  /** The keys of each seen set by name, shared by the sets of one name. */
  private readonly seen = new Map<string, Map<string, number>>();
  private readonly waiters: Array<() => void> = [];
  /** Tails by topic: called on publish, outside every group. */
  private readonly taps = new Map<string, Set<(e: TailedEvent) => void>>();
  private closed = false;
  /** Messages settled with an error after close began: nothing will redeliver them. */
  private readonly leftOver: Array<{ g: Group; msg: Message }> = [];
  private readonly log: Logger;
  private readonly maxDeliver: number;
  private readonly maxQueued: number;
  private seq = 0;

  constructor(o: MemoryBusOptions) {
    this.log = o.logger.child({ component: "bus.memory" });
    this.maxDeliver = o.maxDeliver ?? DEFAULT_MAX_DELIVER;
    this.maxQueued = o.maxQueued ?? 10_000;
  }

  async publish(topic: string, event: CloudEvent): Promise<void> {
    if (this.closed) throw BusError.closed(topic);
    // Copied now: what the publisher does with its object afterwards changes nothing here; an
    // event JSON cannot encode (a cycle, a BigInt) fails the publish, as on every bus.
    const stored = copyJson(event);
    const groups = this.groups.get(topic);
    if (groups !== undefined) {
      while (!this.closed && this.anyFull(groups)) {
        await new Promise<void>((r) => this.waiters.push(r));
      }
      if (this.closed) throw BusError.closed(topic);
      for (const g of groups.values()) {
        g.queue.push({ topic, seq: ++this.seq, event: stored, deliveries: 0 });
        this.pump(g);
      }
    }
    this.events.emit("published", { topic, id: event.id });
    const taps = this.taps.get(topic);
    if (taps !== undefined) {
      const copy = copyJson(stored);
      for (const tap of taps) {
        try {
          tap({ topic, event: copy });
        } catch (err) {
          this.log.warn({ err, topic }, "a tail failed on an event");
        }
      }
    }
  }

  private anyFull(groups: Map<string, Group>): boolean {
    for (const g of groups.values()) if (g.queue.length - g.head >= this.maxQueued) return true;
    return false;
  }

  async tail(topics: readonly string[], onEvent: (e: TailedEvent) => void): Promise<Tail> {
    if (this.closed) throw BusError.closed();
    for (const t of topics) {
      let s = this.taps.get(t);
      if (s === undefined) this.taps.set(t, (s = new Set()));
      s.add(onEvent);
    }
    return {
      close: async () => {
        for (const t of topics) {
          const s = this.taps.get(t);
          s?.delete(onEvent);
          if (s?.size === 0) this.taps.delete(t);
        }
      },
    };
  }

  async subscribe(
    topics: readonly string[],
    handler: MessageHandler,
    options: SubscribeOptions,
  ): Promise<Subscription> {
    if (this.closed) throw BusError.closed();
    const member: Member = {
      engine: new ConsumerEngine({
        group: options.group,
        options,
        maxDeliver: this.maxDeliver,
        handler,
        events: this.events,
        log: this.log,
        publishDeadLetter: (topic, event) => this.publish(topic, event),
      }),
      maxInFlight: Math.max(1, options.maxInFlight ?? DEFAULT_MAX_IN_FLIGHT),
      inFlight: 0,
      closed: false,
      idle: [],
    };
    const joined: Group[] = [];
    for (const topic of new Set(topics)) {
      let byName = this.groups.get(topic);
      if (byName === undefined) this.groups.set(topic, (byName = new Map()));
      let g = byName.get(options.group);
      if (g === undefined) {
        g = { name: options.group, topic, queue: [], head: 0, members: [], next: 0, timers: new Map() };
        byName.set(options.group, g);
      }
      g.members.push(member);
      joined.push(g);
    }
    const sub = new MemorySubscription(this, [...topics], options.group, member, joined);
    this.subs.add(sub);
    for (const g of joined) this.pump(g);
    return sub;
  }

  /** Hands queued messages to members with free capacity, round-robin. */
  pump(g: Group): void {
    while (g.head < g.queue.length) {
      const member = this.pickMember(g);
      if (member === undefined) return;
      const msg = g.queue[g.head]!;
      g.queue[g.head] = undefined as unknown as Message;
      g.head++;
      if (g.head > 1024 && g.head * 2 > g.queue.length) {
        g.queue = g.queue.slice(g.head);
        g.head = 0;
      }
      this.deliver(g, member, msg);
    }
    this.wakePublishers();
  }

  private pickMember(g: Group): Member | undefined {
    const n = g.members.length;
    for (let i = 0; i < n; i++) {
      const m = g.members[(g.next + i) % n]!;
      if (!m.closed && m.inFlight < m.maxInFlight) {
        g.next = (g.next + i + 1) % n;
        return m;
      }
    }
    return undefined;
  }

  private wakePublishers(): void {
    if (this.waiters.length === 0) return;
    for (const w of this.waiters.splice(0)) w();
  }

  /** Holds the member's slot until the message is settled (a dead letter published, too). */
  private deliver(g: Group, member: Member, msg: Message): void {
    member.inFlight++;
    msg.deliveries++;
    const settled = (): void => {
      member.inFlight--;
      if (member.inFlight === 0 && member.idle.length > 0) for (const r of member.idle.splice(0)) r();
      this.pump(g);
    };
    // engine.deliver never rejects; then(settled, settled) rather than finally, which adds promises.
    void member.engine.deliver(new MemoryInbound(this, g, msg)).then(settled, settled);
  }

  /** Queues `msg` on its group again after `delayMs` (a failed delivery); held back once closed. */
  redeliver(g: Group, msg: Message, delayMs: number): void {
    if (this.closed) {
      this.leftOver.push({ g, msg });
      return;
    }
    const t = setTimeout(() => {
      g.timers.delete(t);
      if (this.closed) return;
      g.queue.splice(g.head, 0, msg);
      this.pump(g);
    }, delayMs);
    g.timers.set(t, msg);
  }

  async removeMember(member: Member, joined: Group[]): Promise<void> {
    member.closed = true;
    for (const g of joined) g.members = g.members.filter((m) => m !== member);
    if (member.inFlight > 0) await new Promise<void>((r) => member.idle.push(r));
  }

  forget(sub: MemorySubscription): void {
    this.subs.delete(sub);
  }

  /** Sets of one name share their keys for the life of the process, as a durable bus's would. */
  async seenSet(name: string, windowMs: number): Promise<SeenSet> {
    if (this.closed) throw BusError.closed();
    let keys = this.seen.get(name);
    if (keys === undefined) this.seen.set(name, (keys = new Map()));
    return new MemorySeenSet(windowMs, keys);
  }

  ping(): Promise<void> {
    return this.closed ? Promise.reject(BusError.closed()) : Promise.resolve();
  }

  async drain(o: { timeoutMs: number; held?: () => number }): Promise<boolean> {
    const deadline = Date.now() + o.timeoutMs;
    for (;;) {
      let busy = 0;
      for (const byName of this.groups.values())
        for (const g of byName.values()) {
          busy += g.queue.length - g.head + g.timers.size;
          for (const m of g.members) busy += m.inFlight;
        }
      if (busy <= (o.held?.() ?? 0)) return true;
      if (Date.now() >= deadline) return false;
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.wakePublishers();
    await Promise.all([...this.subs].map((s) => s.close()));
    const lost = this.leftOver.splice(0);
    for (const byName of this.groups.values())
      for (const g of byName.values()) {
        for (const [t, msg] of g.timers) {
          clearTimeout(t);
          lost.push({ g, msg });
        }
        for (let i = g.head; i < g.queue.length; i++) lost.push({ g, msg: g.queue[i]! });
      }
    this.groups.clear();
    this.taps.clear();
    for (const { g, msg } of lost) this.events.emit("abandoned", { topic: msg.topic, group: g.name, id: msg.event.id });
    if (lost.length > 0) {
      this.log.warn(
        { count: lost.length, ids: [...new Set(lost.map((l) => l.msg.event.id))] },
        "%d event deliveries not finished at shutdown: the in-memory bus keeps nothing (use a durable EventBus to keep them)",
        lost.length,
      );
    }
  }
}

class MemorySubscription implements Subscription {
  private closing: Promise<void> | undefined;
  constructor(
    private readonly bus: MemoryBus,
    readonly topics: readonly string[],
    readonly group: string,
    private readonly member: Member,
    private readonly joined: Group[],
  ) {}

  close(): Promise<void> {
    this.closing ??= this.bus.removeMember(this.member, this.joined).then(() => this.bus.forget(this));
    return this.closing;
  }
}

/** Creates the in-process bus. */
export function createMemoryBus(options: MemoryBusOptions): EventBus {
  return new MemoryBus(options);
}
