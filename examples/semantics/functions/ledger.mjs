import { setTimeout as sleep } from "node:timers/promises";

// Takes 0-30 ms per call, at random: ordering still hands it each sensor's readings in order.
export default async function ledger(event, ctx) {
  await sleep(Math.random() * 30);
  ctx.logger.info({ fn: ctx.name, received: event }, `ledger: sensor ${event.data?.sensor} #${event.data?.seq}`);
}
