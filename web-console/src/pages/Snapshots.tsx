// The project's snapshots (refreshed every 3 s): take one of an instance, delete, restore into a
// new instance.
import { useMemo, useState } from 'react';
import { Link, useNavigate } from 'react-router-dom';
import { api, listAll, newIdempotencyKey, unwrap, type Snapshot } from '../api/client';
import { Badge } from '../components/Badge';
import { ConfirmDialog } from '../components/Dialog';
import { Checkbox, Field, FormCard, SubmitButton } from '../components/Form';
import { PageHeader } from '../components/PageHeader';
import { LoadState } from '../components/States';
import { Table } from '../components/Table';
import { bytes, time } from '../lib/format';
import { useLoad } from '../lib/useLoad';
import { useAction, useConfirmedAction } from '../lib/useAction';
import { useProjectPage } from '../lib/project';
import { listInstances, listSshKeys, takeSnapshot } from '../lib/resources';

export function Snapshots() {
  const { project, writable, base } = useProjectPage();
  const snapshots = useLoad(
    async () => {
      const all = await listAll((cursor) =>
        api.GET('/v1/projects/{project}/snapshots', { params: { path: { project }, query: { cursor } } }),
      );
      return all.filter((s) => s.state !== 'deleted');
    },
    [project],
    3000,
  );
  const instances = useLoad(() => listInstances(project), [project], 10000);
  const names = useMemo(() => new Map((instances.data ?? []).map((i) => [i.id, i.name])), [instances.data]);
  const deleting = useConfirmedAction(
    (s: Snapshot) => unwrap(api.DELETE('/v1/projects/{project}/snapshots/{snapshot}', { params: { path: { project, snapshot: s.id } } })),
    snapshots.reload,
  );
  const [restoring, setRestoring] = useState<Snapshot | null>(null);

  return (
    <>
      <PageHeader title="Snapshots" sub="Disks (and, for full snapshots, memory) of the project's instances" />
      {writable && (
        <TakeSnapshot
          project={project}
          instances={(instances.data ?? []).map((i) => ({ id: i.id, name: i.name, state: i.state }))}
          onDone={snapshots.reload}
        />
      )}
      <LoadState what="snapshots" {...snapshots} empty="No snapshots yet.">
        {(live) => (
          <Table
            label="Snapshots"
            columns={['Name', 'State', 'Kind', 'Instance', { label: 'Size', className: 'num' }, 'Taken']}
            actions
          >
            {live.map((s) => {
              const instanceName = s.instance_id ? names.get(s.instance_id) : undefined;
              return (
                <tr key={s.id}>
                  <td>
                    {s.name}
                    {s.scheduled && <span className="muted"> (scheduled)</span>}
                  </td>
                  <td>
                    <Badge state={s.state} />
                    {s.state_reason && <div className="error-cell">{s.state_reason}</div>}
                  </td>
                  <td>{s.kind === 'full' ? 'disks + memory' : 'disks'}</td>
                  <td>
                    {instanceName ? (
                      <Link to={`${base}/instances/${encodeURIComponent(instanceName)}`}>{instanceName}</Link>
                    ) : (
                      <span className="muted">deleted</span>
                    )}
                  </td>
                  <td className="num">{bytes(s.size_bytes)}</td>
                  <td>{time(s.created_at)}</td>
                  <td className="actions">
                    {writable && (
                      <>
                        <button
                          type="button"
                          className="btn btn-small"
                          disabled={s.state !== 'available'}
                          onClick={() => setRestoring(s)}
                          aria-label={`Restore snapshot ${s.name}`}
                        >
                          Restore
                        </button>
                        <button
                          type="button"
                          className="btn btn-small btn-danger"
                          disabled={s.state === 'deleting'}
                          onClick={() => deleting.ask(s)}
                          aria-label={`Delete snapshot ${s.name}`}
                        >
                          Delete
                        </button>
                      </>
                    )}
                  </td>
                </tr>
              );
            })}
          </Table>
        )}
      </LoadState>
      <ConfirmDialog {...deleting.dialog} title={`Delete snapshot ${deleting.target?.name ?? ''}?`} confirmLabel="Delete" danger>
        <p>Its files are removed from the store. This cannot be undone.</p>
      </ConfirmDialog>
      {restoring && <RestoreDialog project={project} snapshot={restoring} onClose={() => setRestoring(null)} />}
    </>
  );
}

function TakeSnapshot({
  project,
  instances,
  onDone,
}: {
  project: string;
  instances: { id: string; name: string; state: string }[];
  onDone: () => void;
}) {
  const [instance, setInstance] = useState('');
  const [name, setName] = useState('');
  const [memory, setMemory] = useState(false);
  const { busy, error, run } = useAction();
  const submit = () =>
    run(async () => {
      await takeSnapshot(project, instance, name, memory);
      setName('');
      onDone();
    });
  return (
    <FormCard label="Take a snapshot" title="Take a snapshot" onSubmit={submit} error={error}>
      <div className="inline-form">
        <Field label="Instance" inline>
          {(id) => (
            <select id={id} value={instance} onChange={(e) => setInstance(e.target.value)} required>
              <option value="">Choose…</option>
              {instances.map((i) => (
                <option key={i.id} value={i.id}>
                  {i.name} ({i.state})
                </option>
              ))}
            </select>
          )}
        </Field>
        <Field label="Name (optional)" inline>
          {(id) => <input id={id} value={name} onChange={(e) => setName(e.target.value)} />}
        </Field>
        <Checkbox checked={memory} onChange={setMemory}>
          With memory
        </Checkbox>
        <SubmitButton busy={busy} busyLabel="Taking…" disabled={instance === ''}>
          Take snapshot
        </SubmitButton>
      </div>
    </FormCard>
  );
}

function RestoreDialog({ project, snapshot, onClose }: { project: string; snapshot: Snapshot; onClose: () => void }) {
  const navigate = useNavigate();
  const keys = useLoad(() => listSshKeys(project), [project]);
  const [name, setName] = useState('');
  const [sshKeys, setSshKeys] = useState<string[]>([]);
  const { busy, error, run } = useAction();
  const submit = () =>
    run(async () => {
      const accepted = await unwrap(
        api.POST('/v1/projects/{project}/snapshots/{snapshot}/restore', {
          params: { path: { project, snapshot: snapshot.id }, header: { 'Idempotency-Key': newIdempotencyKey() } },
          body: { name: name.trim(), ssh_keys: sshKeys },
        }),
      );
      navigate(`/projects/${encodeURIComponent(project)}/instances/${encodeURIComponent(accepted.instance.name)}`);
    });
  return (
    <ConfirmDialog
      title={`Restore ${snapshot.name}`}
      open
      onCancel={onClose}
      onConfirm={submit}
      confirmLabel="Restore"
      busyLabel="Restoring…"
      busy={busy}
      disabled={name.trim() === ''}
      error={error}
    >
      <p className="muted">A new instance from this snapshot, on any host with room.</p>
      <Field label="New instance name">{(id) => <input id={id} value={name} onChange={(e) => setName(e.target.value)} required />}</Field>
      <fieldset className="field">
        <legend>Also inject SSH keys</legend>
        {(keys.data ?? []).length === 0 ? (
          <p className="muted">{keys.data ? 'The project has no SSH keys.' : 'Loading…'}</p>
        ) : (
          <div className="checks">
            {(keys.data ?? []).map((k) => (
              <Checkbox
                key={k.id}
                checked={sshKeys.includes(k.name)}
                onChange={(on) => setSshKeys((ks) => (on ? [...ks, k.name] : ks.filter((x) => x !== k.name)))}
              >
                {k.name}
              </Checkbox>
            ))}
          </div>
        )}
      </fieldset>
    </ConfirmDialog>
  );
}
