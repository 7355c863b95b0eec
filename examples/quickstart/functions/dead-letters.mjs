// The dead-letter sink: gets what could not be delivered, with the reason in oferrorreason.
export default async function deadLetters(event, ctx) {
  ctx.logger.info({ fn: "dead-letters", received: event }, `dead letter ${event.id}: ${event.oferrorreason}`);
  return { stored: event.id };
}
