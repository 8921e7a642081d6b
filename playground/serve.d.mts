// Types for serve.mjs, for the TypeScript tests that start the server in-process.
export interface RunningServer {
  /** http://127.0.0.1:PORT/ */
  url: string;
  /** Stops listening and drops open connections. */
  close(): Promise<void>;
}

/** Serves the playground and dist/iommu-wasm.js on 127.0.0.1 (port 0: any free port). */
export function start(options?: { port?: number }): Promise<RunningServer>;
