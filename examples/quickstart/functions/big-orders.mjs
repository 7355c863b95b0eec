// A sync function: receives each big order as a CloudEvent; its result is the HTTP answer.
export default async function bigOrders(event, ctx) {
  ctx.logger.info({ fn: "big-orders", received: event }, `big order ${event.data?.id}: ${event.data?.amount}`);
  return { accepted: event.data?.id };
}
