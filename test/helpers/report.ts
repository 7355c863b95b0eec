/**
 * Prints one line of figures from a test (sent, delivered, duplicates, lost...), straight to
 * stderr so it shows in CI's output; console.* is reserved for failures (fail-on-console).
 */
export function reportFigures(line: string): void {
  process.stderr.write(`[figures] ${line}\n`);
}
