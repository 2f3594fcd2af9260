// The instance's serial console: xterm.js over the console WebSocket (the session cookie
// authenticates it). Binary frames both ways; the first ones are the scrollback. It reconnects
// by itself with a growing delay, and says why the socket closed.
import { useCallback, useEffect, useRef, useState } from 'react';
import { Link, useParams } from 'react-router-dom';
import { Terminal } from '@xterm/xterm';
import { FitAddon } from '@xterm/addon-fit';
import '@xterm/xterm/css/xterm.css';
import { api, unwrap } from '../api/client';
import { Badge } from '../components/Badge';
import { PageHeader } from '../components/PageHeader';
import { useLoad } from '../lib/useLoad';
import { useProject } from '../lib/project';

declare global {
  interface Window {
    /** The console's terminal, for the browser test to read its buffer. */
    __term?: Terminal;
  }
}

type Status =
  { kind: 'connecting'; attempt: number } | { kind: 'connected' } | { kind: 'disconnected'; reason: string; retryAt: number | null };

const BACKOFF_MS = [1000, 2000, 4000, 8000, 15000, 30000];

export function SerialConsole() {
  const project = useProject();
  const { instance = '' } = useParams();
  const base = `/projects/${encodeURIComponent(project)}`;
  const hostRef = useRef<HTMLDivElement>(null);
  const termRef = useRef<Terminal | null>(null);
  const socketRef = useRef<WebSocket | null>(null);
  const retryTimer = useRef<number | undefined>(undefined);
  const attempt = useRef(0);
  const [status, setStatus] = useState<Status>({ kind: 'connecting', attempt: 0 });
  const [now, setNow] = useState(Date.now());
  // The socket stays open while the VM is off: the instance's state says why the console is quiet.
  const state = useLoad(
    () => unwrap(api.GET('/v1/projects/{project}/instances/{instance}', { params: { path: { project, instance } } })).then((i) => i.state),
    [project, instance],
    3000,
  );

  const connect = useCallback(() => {
    const term = termRef.current;
    if (!term) return;
    window.clearTimeout(retryTimer.current);
    socketRef.current?.close();
    const scheme = window.location.protocol === 'https:' ? 'wss' : 'ws';
    const url = `${scheme}://${window.location.host}/v1/projects/${encodeURIComponent(project)}/instances/${encodeURIComponent(instance)}/console`;
    setStatus({ kind: 'connecting', attempt: attempt.current });
    const ws = new WebSocket(url);
    ws.binaryType = 'arraybuffer';
    socketRef.current = ws;
    let opened = false;
    let replayed = false;
    ws.onopen = () => {
      opened = true;
      attempt.current = 0;
      setStatus({ kind: 'connected' });
      term.focus();
    };
    ws.onmessage = (e: MessageEvent<ArrayBuffer | string>) => {
      // A new connection replays the scrollback: clear the screen at its first frame (not at
      // the open, so a connection that brings nothing leaves the old text readable).
      if (!replayed) {
        replayed = true;
        term.reset();
      }
      if (typeof e.data === 'string') term.write(e.data);
      else term.write(new Uint8Array(e.data));
    };
    ws.onclose = (e) => {
      if (socketRef.current !== ws) return;
      socketRef.current = null;
      const reason = e.reason || (opened ? `closed (code ${e.code})` : 'could not connect');
      const delay = BACKOFF_MS[Math.min(attempt.current, BACKOFF_MS.length - 1)] ?? 30000;
      attempt.current += 1;
      setStatus({ kind: 'disconnected', reason, retryAt: Date.now() + delay });
      retryTimer.current = window.setTimeout(connect, delay);
    };
  }, [project, instance]);

  useEffect(() => {
    const host = hostRef.current;
    if (!host) return;
    const term = new Terminal({
      scrollback: 5000,
      convertEol: false,
      cursorBlink: true,
      fontFamily: 'ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace',
      fontSize: 14,
      theme: { background: '#0f1720', foreground: '#d8dee9' },
    });
    const fit = new FitAddon();
    term.loadAddon(fit);
    term.open(host);
    fit.fit();
    termRef.current = term;
    window.__term = term;
    const input = term.onData((data) => {
      const ws = socketRef.current;
      if (ws && ws.readyState === WebSocket.OPEN) ws.send(new TextEncoder().encode(data));
    });
    const observer = new ResizeObserver(() => fit.fit());
    observer.observe(host);
    connect();
    return () => {
      window.clearTimeout(retryTimer.current);
      const ws = socketRef.current;
      socketRef.current = null;
      ws?.close();
      observer.disconnect();
      input.dispose();
      term.dispose();
      termRef.current = null;
      if (window.__term === term) delete window.__term;
    };
  }, [connect]);

  // The countdown of the next attempt.
  useEffect(() => {
    if (status.kind !== 'disconnected' || status.retryAt === null) return;
    const t = window.setInterval(() => setNow(Date.now()), 500);
    return () => window.clearInterval(t);
  }, [status]);

  const reconnect = () => {
    attempt.current = 0;
    connect();
  };

  return (
    <div className="console-page">
      <nav className="breadcrumbs" aria-label="Breadcrumbs">
        <Link to={`${base}/instances`}>Instances</Link> <span aria-hidden="true">/</span>{' '}
        <Link to={`${base}/instances/${encodeURIComponent(instance)}`}>{instance}</Link> <span aria-hidden="true">/</span> Serial console
      </nav>
      <PageHeader
        title={
          <>
            Serial console of {instance} {state.data && <Badge state={state.data} />}
          </>
        }
      >
        <div className={`console-status console-${status.kind}`} role="status" aria-live="polite" data-testid="console-status">
          <span className="dot" aria-hidden="true" />
          {status.kind === 'connecting' && (status.attempt === 0 ? 'Connecting…' : `Connecting (attempt ${status.attempt + 1})…`)}
          {status.kind === 'connected' && 'Connected'}
          {status.kind === 'disconnected' &&
            `Disconnected: ${status.reason}${status.retryAt ? ` — reconnecting in ${Math.max(0, Math.ceil((status.retryAt - now) / 1000))}s` : ''}`}
        </div>
        {status.kind !== 'connected' && (
          <button type="button" className="btn" onClick={reconnect}>
            Reconnect
          </button>
        )}
      </PageHeader>
      {state.data && state.data !== 'running' && (
        <div className="banner banner-info">
          The instance is {state.data.replace(/_/g, ' ')}: its console shows nothing new until it runs.
        </div>
      )}
      <p className="hint">Keys typed in the terminal go to the instance's serial port. The first lines are the console's scrollback.</p>
      <div className="terminal-frame">
        <div ref={hostRef} className="terminal" aria-label={`Serial console of ${instance}`} />
      </div>
    </div>
  );
}
