// An async function: consumes the topic order-batches from the bus.
export default async function batcher(event, ctx) {
  ctx.logger.info(
    { fn: "batcher", received: event },
    `order ${event.data?.order?.id} joined with tick ${event.data?.tickedAt}`,
  );
}
