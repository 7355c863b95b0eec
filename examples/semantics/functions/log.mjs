// Logs each event it gets, under the function's name.
export default async function log(event, ctx) {
  ctx.logger.info({ fn: ctx.name, received: event }, `${ctx.name}: reading ${event.data?.reading}`);
}
