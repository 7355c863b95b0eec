import { defineConfig } from "vitest/config";

export default defineConfig({
  resolve: { conditions: ["@ofevents/source"] },
  ssr: { resolve: { conditions: ["@ofevents/source"] } },
  test: {
    include: ["packages/*/test/**/*.test.ts", "test/**/*.test.ts"],
    testTimeout: 30_000,
    hookTimeout: 120_000,
    setupFiles: ["test/setup/fail-on-console.ts"],
    pool: "forks",
  },
});
