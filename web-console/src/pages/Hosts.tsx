// The fleet, for operators: hosts with their capacity in use, drain/undrain, join tokens.
import { useState } from 'react';
import { api, messageOf, unwrap, type Host, type Schemas } from '../api/client';
import { useWhoami } from '../auth';
import { Badge } from '../components/Badge';
import { CopyButton } from '../components/CopyButton';
import { ConfirmDialog, Dialog, ErrorBanner } from '../components/Dialog';
import { PageHeader } from '../components/PageHeader';
import { Empty, LoadState } from '../components/States';
import { ago, bytes, time } from '../lib/format';
import { useLoad } from '../lib/useLoad';

export function Hosts() {
  const whoami = useWhoami();
  if (!whoami.is_operator) {
    return (
      <>
        <PageHeader title="Hosts" />
        <Empty>Only operators see the fleet.</Empty>
      </>
    );
  }
  return <Fleet />;
}

function Fleet() {
  const hosts = useLoad(() => unwrap(api.GET('/v1/hosts')), [], 5000);
  const liveness = useLoad(() => unwrap(api.GET('/v1/fleet/liveness')), [], 5000);
  const [changing, setChanging] = useState<{ host: Host; drain: boolean } | null>(null);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [tokenOpen, setTokenOpen] = useState(false);

  const change = async () => {
    if (!changing) return;
    setBusy(true);
    setError(null);
    const params = { params: { path: { id: changing.host.id } } };
    try {
      if (changing.drain) await unwrap(api.POST('/v1/hosts/{id}/drain', params));
      else await unwrap(api.POST('/v1/hosts/{id}/undrain', params));
      setChanging(null);
      hosts.reload();
    } catch (err) {
      setError(messageOf(err));
    } finally {
      setBusy(false);
    }
  };

  return (
    <>
      <PageHeader title="Hosts" sub={liveness.data ? <Liveness value={liveness.data} /> : 'The fleet of hypervisor hosts'}>
        <button type="button" className="btn btn-primary" onClick={() => setTokenOpen(true)}>
          Create join token
        </button>
      </PageHeader>
      <LoadState what="hosts" {...hosts} retry={hosts.reload}>
        {(all) =>
          all.length === 0 ? (
            <Empty>No hosts yet. Create a join token and run the command it comes with on a new host.</Empty>
          ) : (
            <div className="table-wrap">
              <table className="table" aria-label="Hosts">
                <thead>
                  <tr>
                    <th scope="col">Host</th>
                    <th scope="col">State</th>
                    <th scope="col">vCPUs</th>
                    <th scope="col">Memory</th>
                    <th scope="col">Disk</th>
                    <th scope="col">Last report</th>
                    <th scope="col">
                      <span className="visually-hidden">Actions</span>
                    </th>
                  </tr>
                </thead>
                <tbody>
                  {all.map((h) => (
                    <tr key={h.id}>
                      <td>
                        <div>{h.hostname}</div>
                        <div className="mono muted small">
                          {h.instance_subnet} · {h.accelerator}
                        </div>
                      </td>
                      <td>
                        <Badge state={h.state} />
                        {h.draining && h.state !== 'draining' && <span className="badge badge-warn">draining</span>}
                      </td>
                      <td>
                        <Capacity
                          used={h.reserved_vcpus}
                          total={h.total_vcpus}
                          label={`${h.reserved_vcpus} / ${h.total_vcpus}`}
                          name="vCPUs"
                        />
                      </td>
                      <td>
                        <Capacity
                          used={h.reserved_memory_bytes}
                          total={h.total_memory_bytes}
                          label={`${bytes(h.reserved_memory_bytes)} / ${bytes(h.total_memory_bytes)}`}
                          name="Memory"
                        />
                      </td>
                      <td>
                        <Capacity
                          used={h.reserved_disk_bytes}
                          total={h.total_disk_bytes}
                          label={`${bytes(h.reserved_disk_bytes)} / ${bytes(h.total_disk_bytes)}`}
                          name="Disk"
                        />
                      </td>
                      <td title={time(h.last_report_at)}>{ago(h.last_report_at)}</td>
                      <td className="actions">
                        {h.draining ? (
                          <button type="button" className="btn btn-small" onClick={() => setChanging({ host: h, drain: false })}>
                            Undrain
                          </button>
                        ) : (
                          <button
                            type="button"
                            className="btn btn-small"
                            onClick={() => setChanging({ host: h, drain: true })}
                            disabled={h.state === 'dead'}
                          >
                            Drain
                          </button>
                        )}
                      </td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
          )
        }
      </LoadState>
      <ConfirmDialog
        open={changing !== null}
        title={changing ? `${changing.drain ? 'Drain' : 'Undrain'} ${changing.host.hostname}?` : ''}
        confirmLabel={changing?.drain ? 'Drain' : 'Undrain'}
        busy={busy}
        error={error}
        onCancel={() => {
          setChanging(null);
          setError(null);
        }}
        onConfirm={change}
      >
        <p>{changing?.drain ? 'It takes no new instances; those running on it stay.' : 'It takes new instances again.'}</p>
      </ConfirmDialog>
      {tokenOpen && <JoinTokenDialog onClose={() => setTokenOpen(false)} />}
    </>
  );
}

function Liveness({ value }: { value: Schemas['FleetLiveness'] }) {
  return (
    <>
      Fleet <Badge state={value.state} /> {value.hosts} host{value.hosts === 1 ? '' : 's'}, {value.silent_hosts} silent, {value.dead_hosts}{' '}
      dead
    </>
  );
}

function Capacity({ used, total, label, name }: { used: number; total: number; label: string; name: string }) {
  const pct = total > 0 ? Math.min(100, Math.round((used / total) * 100)) : 0;
  const tone = pct >= 90 ? 'bad' : pct >= 70 ? 'warn' : 'ok';
  return (
    <div className="capacity">
      <div
        className="capacity-bar"
        role="meter"
        aria-label={`${name} reserved`}
        aria-valuemin={0}
        aria-valuemax={total}
        aria-valuenow={used}
        aria-valuetext={`${label} (${pct}%)`}
      >
        <div className={`capacity-fill capacity-${tone}`} style={{ width: `${pct}%` }} />
      </div>
      <span className="capacity-label">{label}</span>
    </div>
  );
}

function JoinTokenDialog({ onClose }: { onClose: () => void }) {
  const [created, setCreated] = useState<Schemas['JoinTokenCreated'] | null>(null);
  const [ttlHours, setTtlHours] = useState(1);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const create = async () => {
    setBusy(true);
    setError(null);
    try {
      setCreated(await unwrap(api.POST('/v1/hosts/join-tokens', { body: { ttl_secs: Math.round(ttlHours * 3600) } })));
    } catch (err) {
      setError(messageOf(err));
    } finally {
      setBusy(false);
    }
  };
  return (
    <Dialog
      title="Join token"
      open
      wide
      onClose={onClose}
      actions={
        created ? (
          <button type="button" className="btn btn-primary" onClick={onClose}>
            Done
          </button>
        ) : (
          <>
            <button type="button" className="btn" onClick={onClose} disabled={busy}>
              Cancel
            </button>
            <button type="button" className="btn btn-primary" onClick={() => void create()} disabled={busy}>
              {busy ? 'Creating…' : 'Create token'}
            </button>
          </>
        )
      }
    >
      {created ? (
        <>
          <div className="banner banner-warn">This token is shown only now. Copy it before closing.</div>
          <div className="field">
            <span className="label">Token (expires {time(created.expires_at)})</span>
            <div className="secret">
              <code className="mono">{created.token}</code>
              <CopyButton text={created.token} />
            </div>
          </div>
          <div className="field">
            <span className="label">On the new host</span>
            <div className="secret">
              <code className="mono">{created.command}</code>
              <CopyButton text={created.command} />
            </div>
          </div>
        </>
      ) : (
        <div className="field">
          <label htmlFor="join-ttl">Valid for (hours)</label>
          <input
            id="join-ttl"
            type="number"
            min={0.1}
            max={168}
            step={0.5}
            value={ttlHours}
            onChange={(e) => setTtlHours(Number(e.target.value))}
          />
        </div>
      )}
      {error && <ErrorBanner message={error} />}
    </Dialog>
  );
}
