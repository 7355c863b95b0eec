// Gets a batch of readings as an array of CloudEvents (one request per batch).
export default async function archive(events, ctx) {
  const batch = Array.isArray(events) ? events : [events];
  ctx.logger.info(
    { fn: ctx.name, received: batch },
    `archived ${batch.length} readings: ${batch.map((e) => e.data?.reading).join(", ")}`,
  );
  return { archived: batch.length };
}
