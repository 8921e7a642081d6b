import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Two cores: keep worker count small so the heavy suites do not starve each other.
    maxWorkers: 2,
    // In CI, also a machine-readable report: .ci/run ends with its counts.
    reporters: process.env.CI ? ["default", ["json", { outputFile: "build/vitest-report.json" }]] : ["default"],
  },
});
