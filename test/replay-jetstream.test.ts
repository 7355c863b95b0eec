/** `replay` on the jetstream bus, every part a real process or server (see ./replay-durable.ts). */
import { replaySuite } from "./replay-durable.js";

replaySuite("jetstream");
