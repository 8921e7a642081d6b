import { describe, expect, it } from "vitest";
import { createHost } from "../src/index.js";

describe("smoke", () => {
  it("maps and translates", async () => {
    const host = await createHost({ ramSize: 16 * 1024 * 1024 });
    const pt = host.createPageTable();
    pt.map(0x1000n, 0x3000n, 0x1000n, { write: true });
    expect(pt.iovaToPhys(0x1234n)).toBe(0x3234n);
  });
});
