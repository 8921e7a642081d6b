// A radix tree over 20-bit indices in the spirit of Linux's xarray: 64-slot
// nodes, 6 index bits a level, four levels (the leaf is level 0, the root
// level 3; PASIDs are 20 bits, so the root uses slots 0..3). Values are u32.
//
//   index bits   19 18 | 17 .. 12 | 11 .. 6 | 5 .. 0
//   level           3  |     2    |    1    |   0      (slot = 6 bits of the index)
//
// Node k of the pool lives in two areas (assembly/layout.ts), and is named
// by its ref n = k·256, the offset of its slots (so a step down the tree is
// one add, no multiply):
//
//   slots  xaSlots + n        64 × u32: child ref (levels 3..1) or value (level 0)
//   marks  xaMarks + n / 16   present u64 | full u64
//
//   present bit s: slot s holds a value (leaf) or a non-empty child (above)
//   full bit s:    every index under slot s is present (at a leaf, = present)
//
// `full` is the complement of the xarray's FREE mark, kept in this sense so a
// zeroed node is consistent. Both bitmaps make the two searches a few ctz's
// per level: "first present index in [from, max]" (xaFind) and "lowest absent
// index in [from, max]" (xaFindFree), whatever the width of the range.
//
// Nodes come from a fixed pool sized at init. Node 0 (ref 0) is never handed
// out and stays zero: an absent child reads as ref 0, whose slots read 0, so
// a lookup walks four loads with no branch (see xaLookup). An emptied node goes
// back to the pool at once, so the tree holds only nodes with something in
// them (its root excepted) and erased leaf slots read 0.
//
// Nothing here allocates: the descent path lives in a 16-byte static area.
import { xaSlots, xaMarks, xaNodeCount } from "../layout";
import { XA_NONE, PASID_MAX } from "../abi";

const LEVELS: u32 = 4;
const TOP: u32 = LEVELS - 1;
const ALL: u64 = 0xFFFFFFFFFFFFFFFF;

// path[level]: the node at `level` on the way to the current index.
const path: usize = memory.data(16, 4);

let freeHead: u32 = 0;   // refs of freed nodes, linked through their slot 0
let nextUnused: u32 = 1; // node numbers from here up were never handed out
let nodesFree: u32 = 0;
// Nodes read by searches, stores and erases (not by lookups): lets a test
// check that a range free costs O(entries), not O(width).
let visits: u64 = 0;

@inline function slotAddr(n: u32, s: u32): usize { return xaSlots + <usize>n + (<usize>s << 2); }
@inline function presentAddr(n: u32): usize { return xaMarks + (<usize>n >> 4); }
@inline function fullAddr(n: u32): usize { return xaMarks + (<usize>n >> 4) + 8; }
@inline function slotOf(index: u32, level: u32): u32 { return (index >> (level * 6)) & 63; }
@inline function pathAt(level: u32): u32 { return load<u32>(path + (<usize>level << 2)); }
@inline function setPath(level: u32, n: u32): void { store<u32>(path + (<usize>level << 2), n); }
@inline function setBit(a: usize, s: u32): void { store<u64>(a, load<u64>(a) | (<u64>1 << s)); }
@inline function clearBit(a: usize, s: u32): void { store<u64>(a, load<u64>(a) & ~(<u64>1 << s)); }
@inline function testBit(a: usize, s: u32): bool { return ((load<u64>(a) >> s) & 1) != 0; }

// The first index of slot t of the level-`level` node holding `index`.
@inline function slotStart(index: u32, level: u32, t: u32): u32 {
  const above = (level + 1) * 6;
  return ((index >> above) << above) | (t << (level * 6));
}

export function xaInit(): void {
  freeHead = 0;
  nextUnused = 1;
  nodesFree = xaNodeCount - 1;
  visits = 0;
}

export function xaNodesFree(): u32 { return nodesFree; }
export function xaNodesTotal(): u32 { return xaNodeCount - 1; }
export function xaVisits(): u64 { return visits; }

// Callers check nodesFree first (xaNodesNeeded), so this never fails.
function nodeAlloc(): u32 {
  let n: u32;
  if (freeHead != 0) {
    n = freeHead;
    freeHead = load<u32>(slotAddr(n, 0));
  } else {
    n = nextUnused++ << 8;
  }
  // A reused node may have been a leaf: stale values would read as children.
  memory.fill(slotAddr(n, 0), 0, 256);
  store<u64>(presentAddr(n), 0);
  store<u64>(fullAddr(n), 0);
  nodesFree--;
  return n;
}

function nodeFree(n: u32): void {
  store<u32>(slotAddr(n, 0), freeHead);
  freeHead = n;
  nodesFree++;
}

// An empty tree: its root node, or 0 when the pool is empty.
export function xaCreate(): u32 { return nodesFree == 0 ? 0 : nodeAlloc(); }

// Returns every node of the tree, root included, to the pool.
export function xaDestroy(root: u32): void {
  let p3 = load<u64>(presentAddr(root));
  while (p3 != 0) {
    const n2 = load<u32>(slotAddr(root, <u32>ctz(p3)));
    p3 &= p3 - 1;
    let p2 = load<u64>(presentAddr(n2));
    while (p2 != 0) {
      const n1 = load<u32>(slotAddr(n2, <u32>ctz(p2)));
      p2 &= p2 - 1;
      let p1 = load<u64>(presentAddr(n1));
      while (p1 != 0) {
        nodeFree(load<u32>(slotAddr(n1, <u32>ctz(p1))));
        p1 &= p1 - 1;
      }
      nodeFree(n1);
    }
    nodeFree(n2);
  }
  nodeFree(root);
}

// The value at index, 0 when absent (a tree whose values are never 0 needs
// nothing else). Indices above PASID_MAX are absent. Each step is a shift, a
// mask, two adds and a load: the slot's byte offset ((index >> 6L) & 63) · 4
// is (index >> (6L - 2)) & 0xFC (a left shift by 2 at the leaf).
@inline export function xaLookup(root: u32, index: u32): u32 {
  const slots = xaSlots;
  let n = index <= PASID_MAX ? root : 0;
  n = load<u32>(slots + n + ((index >> 16) & 0xFC));
  n = load<u32>(slots + n + ((index >> 10) & 0xFC));
  n = load<u32>(slots + n + ((index >> 4) & 0xFC));
  return load<u32>(slots + n + ((index << 2) & 0xFC));
}

// Nodes a store at index would create: checked against xaNodesFree() before
// anything changes, so a full pool is ENOMEM with the tree untouched.
export function xaNodesNeeded(root: u32, index: u32): u32 {
  let n = root;
  for (let level = TOP; level > 0; level--) {
    n = load<u32>(slotAddr(n, slotOf(index, level)));
    if (n == 0) return level;
  }
  return 0;
}

// Stores value at index (index ≤ PASID_MAX; xaNodesNeeded nodes must be free).
export function xaStore(root: u32, index: u32, value: u32): void {
  let n = root;
  for (let level = TOP; level > 0; level--) {
    visits++;
    setPath(level, n);
    const s = slotOf(index, level);
    let child = load<u32>(slotAddr(n, s));
    if (child == 0) {
      child = nodeAlloc();
      store<u32>(slotAddr(n, s), child);
      setBit(presentAddr(n), s);
    }
    n = child;
  }
  visits++;
  const s = slotOf(index, 0);
  store<u32>(slotAddr(n, s), value);
  setBit(presentAddr(n), s);
  setBit(fullAddr(n), s);
  // A node that became full makes its slot in the parent full, and so on up.
  for (let level: u32 = 1; level <= TOP && load<u64>(fullAddr(n)) == ALL; level++) {
    n = pathAt(level);
    setBit(fullAddr(n), slotOf(index, level));
  }
}

// Removes index; false when it was absent. Emptied nodes go back to the pool.
export function xaErase(root: u32, index: u32): bool {
  let n = root;
  for (let level = TOP; level > 0; level--) {
    visits++;
    setPath(level, n);
    n = load<u32>(slotAddr(n, slotOf(index, level)));
    if (n == 0) return false;
  }
  visits++;
  setPath(0, n);
  if (!testBit(presentAddr(n), slotOf(index, 0))) return false;
  eraseOnPath(index);
  return true;
}

// Removes index, which the last xaFind returned: the nodes on its way down
// are still in `path`, so nothing is read again to find them.
export function xaEraseFound(index: u32): void { eraseOnPath(index); }

// Removes index (present) from the leaf path[0]. Upwards: the parent's slot
// is no longer full, and an emptied child leaves it. Once a parent's bit was
// already clear and its child stays, nothing above changes (only full nodes
// make full bits).
function eraseOnPath(index: u32): void {
  let child = pathAt(0);
  const s = slotOf(index, 0);
  clearBit(presentAddr(child), s);
  clearBit(fullAddr(child), s);
  store<u32>(slotAddr(child, s), 0);
  for (let level: u32 = 1; level <= TOP; level++) {
    const parent = pathAt(level);
    const ps = slotOf(index, level);
    const wasFull = testBit(fullAddr(parent), ps);
    clearBit(fullAddr(parent), ps);
    if (load<u64>(presentAddr(child)) == 0) {
      nodeFree(child);
      store<u32>(slotAddr(parent, ps), 0);
      clearBit(presentAddr(parent), ps);
    } else if (!wasFull) {
      break;
    }
    child = parent;
  }
}

// After the level-`level` node on the path has nothing left at or after
// index: index moves to the first index past that node, and the search goes
// on in the lowest ancestor still holding it. Returns the level to go on at,
// or LEVELS when the search is over (past the root, or past max).
// `searchIndex` carries the moved index out.
let searchIndex: u32 = 0;
@inline function climb(index: u32, level: u32, max: u32): u32 {
  if (level == TOP) return LEVELS;
  const above = (level + 1) * 6;
  index = ((index >> above) + 1) << above;
  if (index > max) return LEVELS;
  level++;
  // Slot 0 at a level means the increment carried out of that node too.
  while (level < TOP && slotOf(index, level) == 0) level++;
  searchIndex = index;
  return level;
}

// The lowest index in [from, max] that is present (free = false) or absent
// (free = true), or XA_NONE. One descent serves both: only the bitmap that
// rules a slot out differs (present bits, or full bits for a free search).
@inline function scan(root: u32, from: u32, max: u32, free: bool): u32 {
  if (max > PASID_MAX) max = PASID_MAX;
  if (from > max) return XA_NONE;
  let index = from;
  let level = TOP;
  let n = root;
  setPath(TOP, root);
  while (true) {
    visits++;
    const s = slotOf(index, level);
    const bits = (free ? ~load<u64>(fullAddr(n)) : load<u64>(presentAddr(n))) & (ALL << s);
    if (bits == 0) {
      level = climb(index, level, max);
      if (level == LEVELS) return XA_NONE;
      index = searchIndex;
      n = pathAt(level);
      continue;
    }
    const t = <u32>ctz(bits);
    if (t != s) index = slotStart(index, level, t);
    if (index > max) return XA_NONE;
    if (level == 0) return index;
    const child = load<u32>(slotAddr(n, t));
    // A free search into an empty slot: every index under it is free, index the lowest ≥ from.
    if (free && child == 0) return index;
    n = child;
    level--;
    setPath(level, n);
  }
  return XA_NONE;
}

// The lowest present index in [from, max], or XA_NONE.
export function xaFind(root: u32, from: u32, max: u32): u32 { return scan(root, from, max, false); }

// The lowest absent index in [from, max], or XA_NONE.
export function xaFindFree(root: u32, from: u32, max: u32): u32 { return scan(root, from, max, true); }
