// Formatting of times, durations and numbers for tables.

/** `812` → `13m 32s`; `93784` → `1d 2h 3m`. */
export function formatUptime(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return '—';
  const s = Math.max(0, Math.floor(seconds));
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  if (d > 0) return `${d}d ${h}h ${m}m`;
  if (h > 0) return `${h}h ${m}m`;
  if (m > 0) return `${m}m ${sec}s`;
  return `${sec}s`;
}

/** An RFC 3339 string or Unix ms as `2026-11-26 23:40:00 UTC` (as given when unparseable). */
export function formatTime(value: string | number | null | undefined): string {
  if (value === null || value === undefined || value === '' || value === 0) return '—';
  const ms = typeof value === 'number' ? value : Date.parse(value);
  if (Number.isNaN(ms)) return String(value);
  return new Date(ms).toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC').replace(/Z$/, ' UTC');
}

/** ISO form for `<time dateTime>`. */
export function isoTime(value: string | number | null | undefined): string | undefined {
  if (value === null || value === undefined || value === '' || value === 0) return undefined;
  const ms = typeof value === 'number' ? value : Date.parse(value);
  return Number.isNaN(ms) ? undefined : new Date(ms).toISOString();
}

/** `now - then` as `5s ago`, `3m ago`, or `in 2m` for the future. */
export function relative(value: string | number | null | undefined, now: number = Date.now()): string {
  if (value === null || value === undefined || value === '' || value === 0) return '';
  const ms = typeof value === 'number' ? value : Date.parse(value);
  if (Number.isNaN(ms)) return '';
  const diff = Math.round((now - ms) / 1000);
  const text = formatUptime(Math.abs(diff)).replace(/ .*$/, '');
  return diff >= 0 ? `${text} ago` : `in ${text}`;
}

export function formatNumber(n: number | null | undefined): string {
  if (n === null || n === undefined || !Number.isFinite(n)) return '—';
  return n.toLocaleString('en-US');
}

export function prettyJson(value: unknown): string {
  // JSON.stringify(undefined) is undefined, whatever its type says.
  return value === undefined ? 'null' : JSON.stringify(value, null, 2);
}

export function percent(part: number, whole: number): number {
  if (!(whole > 0)) return 0;
  return Math.max(0, Math.min(100, (part / whole) * 100));
}
