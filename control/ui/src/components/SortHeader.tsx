import type { ReactNode } from 'react';

export type SortDir = 'ascending' | 'descending';
export interface Sort<K extends string> {
  key: K;
  dir: SortDir;
}

/** A column header that sorts its table: a button inside `<th scope="col" aria-sort>`. */
export function SortHeader<K extends string>({
  column,
  sort,
  onSort,
  children,
}: {
  column: K;
  sort: Sort<K>;
  onSort: (s: Sort<K>) => void;
  children: ReactNode;
}) {
  const active = sort.key === column;
  return (
    <th scope="col" aria-sort={active ? sort.dir : 'none'}>
      <button
        type="button"
        className="sort-button"
        onClick={() =>
          onSort({ key: column, dir: active && sort.dir === 'ascending' ? 'descending' : 'ascending' })
        }
      >
        {children}
        <span aria-hidden="true" className="sort-mark">
          {active ? (sort.dir === 'ascending' ? '▲' : '▼') : '↕'}
        </span>
      </button>
    </th>
  );
}

/** Compares two cell values: nulls last, numbers numerically, strings naturally. */
export type Cell = string | number | boolean | null | undefined;

export function compareValues(a: Cell, b: Cell): number {
  const an = a === null || a === undefined || a === '';
  const bn = b === null || b === undefined || b === '';
  if (an || bn) return an === bn ? 0 : an ? 1 : -1;
  if (typeof a === 'number' && typeof b === 'number') return a - b;
  return String(a).localeCompare(String(b), 'en', { numeric: true });
}

/** Rows sorted by one column; empty values last in either direction. */
export function sortRows<T, K extends string>(rows: readonly T[], sort: Sort<K>, get: (row: T, key: K) => Cell): T[] {
  const sign = sort.dir === 'ascending' ? 1 : -1;
  return [...rows].sort((x, y) => {
    const a = get(x, sort.key);
    const b = get(y, sort.key);
    const an = a === null || a === undefined || a === '';
    const bn = b === null || b === undefined || b === '';
    if (an || bn) return an === bn ? 0 : an ? 1 : -1;
    return sign * compareValues(a, b);
  });
}
