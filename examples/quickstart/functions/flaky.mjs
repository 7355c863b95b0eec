// A sync function that always fails with 503, so deliveries are retried, then dead-lettered.
export default async function flaky(event, ctx) {
  ctx.logger.info({ fn: "flaky", received: event }, "flaky sink refuses the event");
  const err = new Error("flaky sink is down");
  err.status = 503;
  throw err;
}
