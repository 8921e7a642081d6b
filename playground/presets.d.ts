// Types for presets.js, for the TypeScript test that replays the presets in Node.
import type { PageTableOptions, Prot } from "../src/index.js";

export interface PlaygroundFormat {
  label: string;
  options: PageTableOptions;
  family: "x86-64" | "vtd-sl" | "arm64";
  /** Entry names by level (leaf = 0). */
  levelNames: string[];
}

export interface PlaygroundMapping { iova: bigint; hpa: bigint; size: bigint; perms: Required<Prot> }

export interface PlaygroundPreset { label: string; walkAt: bigint; mappings: PlaygroundMapping[] }

export const RAM_SIZE: number;
export const FORMATS: Record<"x86-64-4" | "x86-64-5" | "vtd-sl-4" | "arm64-s1", PlaygroundFormat>;
export const IOTLB_SIZES: Record<"16x4" | "64x4" | "512x4", { sets: number; ways: number }>;
export const PRESETS: Record<"mixed" | "small" | "huge" | "empty", PlaygroundPreset>;
export const DEFAULTS: { format: keyof typeof FORMATS; iotlb: keyof typeof IOTLB_SIZES; preset: keyof typeof PRESETS };
