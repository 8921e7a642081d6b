// Bundles tsc's ES module output into one file; the WASM bytes are already
// inlined (src/engine/wasm-bytes.generated.ts), so the bundle loads the
// engine the same way in Node and in browsers.
export default {
  input: "build/tsc/index.js",
  output: { file: "dist/iommu-wasm.js", format: "es", sourcemap: false },
};
