// PASID tables and allocation: the engine's export surface for them
// (re-exported by assembly/index.ts).
