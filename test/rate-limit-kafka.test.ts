/** `rate-limit` on the kafka bus, every part a real process or server (see ./semantics-durable.ts). */
import { rateLimitSuite } from "./semantics-durable.js";

rateLimitSuite("kafka");
