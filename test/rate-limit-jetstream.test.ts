/** `rate-limit` on the jetstream bus, every part a real process or server (see ./semantics-durable.ts). */
import { rateLimitSuite } from "./semantics-durable.js";

rateLimitSuite("jetstream");
