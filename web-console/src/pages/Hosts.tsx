// The fleet, for operators: hosts with their capacity in use, drain/undrain, join tokens.
import { useState } from 'react';
import { api, unwrap, type Host, type Schemas } from '../api/client';
import { useWhoami } from '../auth';
import { Badge } from '../components/Badge';
import { CopyButton } from '../components/CopyButton';
import { ConfirmDialog, Dialog, ErrorBanner } from '../components/Dialog';
import { Field } from '../components/Form';
import { PageHeader } from '../components/PageHeader';
import { Empty, LoadState } from '../components/States';
import { Table } from '../components/Table';
import { ago, bytes, time } from '../lib/format';
import { useLoad } from '../lib/useLoad';
import { useAction, useConfirmedAction } from '../lib/useAction';

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
  const changing = useConfirmedAction(({ host, drain }: { host: Host; drain: boolean }) => {
    const params = { params: { path: { id: host.id } } };
    return drain ? unwrap(api.POST('/v1/hosts/{id}/drain', params)) : unwrap(api.POST('/v1/hosts/{id}/undrain', params));
  }, hosts.reload);
  const [tokenOpen, setTokenOpen] = useState(false);
  const target = changing.target;

  return (
    <>
      <PageHeader title="Hosts" sub={liveness.data ? <Liveness value={liveness.data} /> : 'The fleet of hypervisor hosts'}>
        <button type="button" className="btn btn-primary" onClick={() => setTokenOpen(true)}>
          Create join token
        </button>
      </PageHeader>
      <LoadState what="hosts" {...hosts} empty="No hosts yet. Create a join token and run the command it comes with on a new host.">
        {(all) => (
          <Table label="Hosts" columns={['Host', 'State', 'vCPUs', 'Memory', 'Disk', 'Last report']} actions>
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
                  <Capacity used={h.reserved_vcpus} total={h.total_vcpus} name="vCPUs" />
                </td>
                <td>
                  <Capacity used={h.reserved_memory_bytes} total={h.total_memory_bytes} format={bytes} name="Memory" />
                </td>
                <td>
                  <Capacity used={h.reserved_disk_bytes} total={h.total_disk_bytes} format={bytes} name="Disk" />
                </td>
                <td title={time(h.last_report_at)}>{ago(h.last_report_at)}</td>
                <td className="actions">
                  {h.draining ? (
                    <button type="button" className="btn btn-small" onClick={() => changing.ask({ host: h, drain: false })}>
                      Undrain
                    </button>
                  ) : (
                    <button
                      type="button"
                      className="btn btn-small"
                      onClick={() => changing.ask({ host: h, drain: true })}
                      disabled={h.state === 'dead'}
                    >
                      Drain
                    </button>
                  )}
                </td>
              </tr>
            ))}
          </Table>
        )}
      </LoadState>
      <ConfirmDialog
        {...changing.dialog}
        title={target ? `${target.drain ? 'Drain' : 'Undrain'} ${target.host.hostname}?` : ''}
        confirmLabel={target?.drain ? 'Drain' : 'Undrain'}
      >
        <p>{target?.drain ? 'It takes no new instances; those running on it stay.' : 'It takes new instances again.'}</p>
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

/** A bar of `used` out of `total`, labelled "used / total" (each `format`ted). */
function Capacity({
  used,
  total,
  format = String,
  name,
}: {
  used: number;
  total: number;
  format?: (value: number) => string;
  name: string;
}) {
  const label = `${format(used)} / ${format(total)}`;
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
  const { busy, error, run } = useAction();
  const create = () =>
    run(async () => {
      setCreated(await unwrap(api.POST('/v1/hosts/join-tokens', { body: { ttl_secs: Math.round(ttlHours * 3600) } })));
    });
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
          <Secret label={`Token (expires ${time(created.expires_at)})`} value={created.token} />
          <Secret label="On the new host" value={created.command} />
        </>
      ) : (
        <Field label="Valid for (hours)">
          {(id) => (
            <input id={id} type="number" min={0.1} max={168} step={0.5} value={ttlHours} onChange={(e) => setTtlHours(Number(e.target.value))} />
          )}
        </Field>
      )}
      {error && <ErrorBanner message={error} />}
    </Dialog>
  );
}

/** Text shown once, with a copy button. */
function Secret({ label, value }: { label: string; value: string }) {
  return (
    <div className="field">
      <span className="label">{label}</span>
      <div className="secret">
        <code className="mono">{value}</code>
        <CopyButton text={value} />
      </div>
    </div>
  );
}
