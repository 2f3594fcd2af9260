// A state as a coloured badge: green when settled and well, amber on the way, red when broken.

const TONES: Record<string, string> = {
  running: 'ok',
  available: 'ok',
  active: 'ok',
  succeeded: 'ok',
  healthy: 'ok',
  stopped: 'idle',
  suspended: 'idle',
  deleted: 'idle',
  cancelled: 'idle',
  draining: 'warn',
  suspect: 'warn',
  degraded: 'warn',
  undoing: 'warn',
  failed: 'bad',
  lost: 'bad',
  dead: 'bad',
};

/** `kind="operation"`: an operation's `running` is work in progress, not a healthy instance. */
export function Badge({ state, kind }: { state: string; kind?: 'operation' }) {
  const tone = kind === 'operation' && state === 'running' ? 'busy' : (TONES[state] ?? 'busy');
  return <span className={`badge badge-${tone}`}>{state.replace(/_/g, ' ')}</span>;
}
