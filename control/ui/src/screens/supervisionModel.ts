// Pure helpers of the Supervision screen: flatten trees into restart counters, diff two refreshes,
// filter a tree by text.

import type { ChildSnapshot, NodeSupervision, SupervisorSnapshot } from '../api/types';

export function nodeKey(n: Pick<NodeSupervision, 'role' | 'node_id' | 'address'>): string {
  return `${n.role}/${n.node_id ?? n.address}`;
}

/** Key of a supervisor (`path` is the chain of supervisor names from the root). */
export function supervisorKey(node: string, path: readonly string[]): string {
  return `${node}|${path.join('/')}`;
}

export function childKey(node: string, path: readonly string[], child: string): string {
  return `${node}|${path.join('/')}|${child}`;
}

/** Every supervisor's and child's restart count, by key. */
export function restartCounts(nodes: readonly NodeSupervision[]): Map<string, number> {
  const out = new Map<string, number>();
  const walk = (node: string, sup: SupervisorSnapshot, path: string[]) => {
    out.set(supervisorKey(node, path), sup.restarts);
    for (const c of sup.children) out.set(childKey(node, path, c.name), c.restarts);
    for (const s of sup.supervisors ?? []) walk(node, s, [...path, s.name]);
  };
  for (const n of nodes) if (n.tree) walk(nodeKey(n), n.tree, [n.tree.name]);
  return out;
}

/** Increases since the previous refresh (only keys whose count went up). */
export function restartIncreases(prev: Map<string, number> | null, next: Map<string, number>): Map<string, number> {
  const out = new Map<string, number>();
  if (!prev) return out;
  for (const [k, v] of next) {
    const before = prev.get(k);
    if (before !== undefined && v > before) out.set(k, v - before);
  }
  return out;
}

function childMatches(c: ChildSnapshot, q: string): boolean {
  return [c.name, c.kind, c.status, c.last_failure ?? ''].some((f) => f.toLowerCase().includes(q));
}

/** The tree keeping only children (and supervisors) that match `text`; null when nothing does. */
export function filterTree(sup: SupervisorSnapshot, text: string): SupervisorSnapshot | null {
  const q = text.trim().toLowerCase();
  if (q === '') return sup;
  if (sup.name.toLowerCase().includes(q)) return sup;
  const supervisors = (sup.supervisors ?? [])
    .map((s) => filterTree(s, q))
    .filter((s): s is SupervisorSnapshot => s !== null);
  const keep = new Set(supervisors.map((s) => s.name));
  const children = sup.children.filter((c) => childMatches(c, q) || keep.has(c.name));
  if (children.length === 0 && supervisors.length === 0) return null;
  return { ...sup, children, supervisors };
}

/** Counts of a tree's children by status, and the fullest mailbox. */
export function treeSummary(sup: SupervisorSnapshot): { children: number; failing: number; fullest: number } {
  let children = 0;
  let failing = 0;
  let fullest = 0;
  const walk = (s: SupervisorSnapshot) => {
    for (const c of s.children) {
      children += 1;
      if (c.status !== 'running') failing += 1;
      if (c.mailbox && c.mailbox.capacity > 0) fullest = Math.max(fullest, c.mailbox.depth / c.mailbox.capacity);
    }
    for (const sub of s.supervisors ?? []) walk(sub);
  };
  walk(sup);
  return { children, failing, fullest };
}
