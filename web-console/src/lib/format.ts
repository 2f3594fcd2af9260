// How the console shows sizes and times (like cloudctl's tables: 256MiB, times to the second).

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];

/** 268435456 → "256MiB"; 1.5 GiB → "1.5GiB". */
export function bytes(value: number | null | undefined): string {
  if (value === null || value === undefined) return '—';
  let v = value;
  let unit = 0;
  while (v >= 1024 && unit < UNITS.length - 1) {
    v /= 1024;
    unit++;
  }
  const text = Number.isInteger(v) ? String(v) : v.toFixed(1).replace(/\.0$/, '');
  return `${text}${UNITS[unit]}`;
}

/** A timestamp in the browser's time zone, to the second; "—" for none. */
export function time(value: string | null | undefined): string {
  if (!value) return '—';
  const d = new Date(value);
  if (Number.isNaN(d.getTime())) return value;
  return d.toLocaleString(undefined, {
    year: 'numeric',
    month: 'short',
    day: '2-digit',
    hour: '2-digit',
    minute: '2-digit',
    second: '2-digit',
  });
}

/** "3 min ago"-style age, for tables. */
export function ago(value: string | null | undefined, now = Date.now()): string {
  if (!value) return '—';
  const secs = Math.max(0, Math.round((now - new Date(value).getTime()) / 1000));
  if (secs < 60) return `${secs}s ago`;
  if (secs < 3600) return `${Math.floor(secs / 60)} min ago`;
  if (secs < 86400) return `${Math.floor(secs / 3600)} h ago`;
  return `${Math.floor(secs / 86400)} d ago`;
}

/** Words of a snake_case name: instance_create → "instance create". */
export function words(value: string): string {
  return value.replace(/_/g, ' ');
}

/** A timestamp for tables: the time alone today, without the year this year. */
export function shortTime(value: string | null | undefined, now = new Date()): string {
  if (!value) return '—';
  const d = new Date(value);
  if (Number.isNaN(d.getTime())) return value;
  const clock: Intl.DateTimeFormatOptions = { hour: '2-digit', minute: '2-digit', second: '2-digit' };
  if (d.toDateString() === now.toDateString()) return d.toLocaleTimeString(undefined, clock);
  const day: Intl.DateTimeFormatOptions = { month: 'short', day: 'numeric', ...clock };
  if (d.getFullYear() === now.getFullYear()) return d.toLocaleString(undefined, day);
  return d.toLocaleString(undefined, { year: 'numeric', ...day });
}
