/** `redrive` on the jetstream bus, every part a real process or server (see ./redrive-durable.ts). */
import { redriveSuite } from "./redrive-durable.js";

redriveSuite("jetstream");
