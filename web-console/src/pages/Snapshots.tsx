// The project's snapshots (refreshed every 3 s): take one of an instance, delete, restore into a
// new instance.
import { useId, useMemo, useState, type FormEvent } from 'react';
import { Link, useNavigate } from 'react-router-dom';
import { api, listAll, messageOf, newIdempotencyKey, unwrap, type Snapshot } from '../api/client';
import { Badge } from '../components/Badge';
import { ConfirmDialog, Dialog, ErrorBanner } from '../components/Dialog';
import { PageHeader } from '../components/PageHeader';
import { Empty, LoadState } from '../components/States';
import { bytes, time } from '../lib/format';
import { useLoad } from '../lib/useLoad';
import { canChange, useProject } from '../lib/project';
import { useWhoami } from '../auth';
import { listInstances, listSshKeys } from '../lib/resources';

export function Snapshots() {
  const project = useProject();
  const writable = canChange(useWhoami(), project);
  const snapshots = useLoad(
    () => listAll((cursor) => api.GET('/v1/projects/{project}/snapshots', { params: { path: { project }, query: { cursor } } })),
    [project],
    3000,
  );
  const instances = useLoad(() => listInstances(project), [project], 10000);
  const names = useMemo(() => new Map((instances.data ?? []).map((i) => [i.id, i.name])), [instances.data]);
  const [deleting, setDeleting] = useState<Snapshot | null>(null);
  const [restoring, setRestoring] = useState<Snapshot | null>(null);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const base = `/projects/${encodeURIComponent(project)}`;

  const remove = async () => {
    if (!deleting) return;
    setBusy(true);
    setError(null);
    try {
      await unwrap(api.DELETE('/v1/projects/{project}/snapshots/{snapshot}', { params: { path: { project, snapshot: deleting.id } } }));
      setDeleting(null);
      snapshots.reload();
    } catch (err) {
      setError(messageOf(err));
    } finally {
      setBusy(false);
    }
  };

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
      <LoadState what="snapshots" {...snapshots} retry={snapshots.reload}>
        {(all) => {
          const live = all.filter((s) => s.state !== 'deleted');
          if (live.length === 0) return <Empty>No snapshots yet.</Empty>;
          return (
            <div className="table-wrap">
              <table className="table" aria-label="Snapshots">
                <thead>
                  <tr>
                    <th scope="col">Name</th>
                    <th scope="col">State</th>
                    <th scope="col">Kind</th>
                    <th scope="col">Instance</th>
                    <th scope="col" className="num">
                      Size
                    </th>
                    <th scope="col">Taken</th>
                    <th scope="col">
                      <span className="visually-hidden">Actions</span>
                    </th>
                  </tr>
                </thead>
                <tbody>
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
                                onClick={() => setDeleting(s)}
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
                </tbody>
              </table>
            </div>
          );
        }}
      </LoadState>
      <ConfirmDialog
        open={deleting !== null}
        title={`Delete snapshot ${deleting?.name ?? ''}?`}
        confirmLabel="Delete"
        danger
        busy={busy}
        error={error}
        onCancel={() => {
          setDeleting(null);
          setError(null);
        }}
        onConfirm={remove}
      >
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
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const id = { instance: useId(), name: useId(), memory: useId() };
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await unwrap(
        api.POST('/v1/projects/{project}/snapshots', {
          params: { path: { project } },
          body: { instance, name: name.trim() === '' ? null : name.trim(), memory },
        }),
      );
      setName('');
      onDone();
    } catch (err) {
      setError(messageOf(err));
    } finally {
      setBusy(false);
    }
  };
  return (
    <form className="form card" onSubmit={(e) => void submit(e)} aria-label="Take a snapshot">
      <h2>Take a snapshot</h2>
      <div className="inline-form">
        <div className="field field-inline">
          <label htmlFor={id.instance}>Instance</label>
          <select id={id.instance} value={instance} onChange={(e) => setInstance(e.target.value)} required>
            <option value="">Choose…</option>
            {instances.map((i) => (
              <option key={i.id} value={i.id}>
                {i.name} ({i.state})
              </option>
            ))}
          </select>
        </div>
        <div className="field field-inline">
          <label htmlFor={id.name}>Name (optional)</label>
          <input id={id.name} value={name} onChange={(e) => setName(e.target.value)} />
        </div>
        <div className="check">
          <input id={id.memory} type="checkbox" checked={memory} onChange={(e) => setMemory(e.target.checked)} />
          <label htmlFor={id.memory}>With memory</label>
        </div>
        <button type="submit" className="btn btn-primary" disabled={busy || instance === ''}>
          {busy ? 'Taking…' : 'Take snapshot'}
        </button>
      </div>
      {error && <ErrorBanner message={error} />}
    </form>
  );
}

function RestoreDialog({ project, snapshot, onClose }: { project: string; snapshot: Snapshot; onClose: () => void }) {
  const navigate = useNavigate();
  const keys = useLoad(() => listSshKeys(project), [project]);
  const [name, setName] = useState('');
  const [sshKeys, setSshKeys] = useState<string[]>([]);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const nameId = useId();
  const submit = async () => {
    setBusy(true);
    setError(null);
    try {
      const accepted = await unwrap(
        api.POST('/v1/projects/{project}/snapshots/{snapshot}/restore', {
          params: { path: { project, snapshot: snapshot.id }, header: { 'Idempotency-Key': newIdempotencyKey() } },
          body: { name: name.trim(), ssh_keys: sshKeys },
        }),
      );
      navigate(`/projects/${encodeURIComponent(project)}/instances/${encodeURIComponent(accepted.instance.name)}`);
    } catch (err) {
      setError(messageOf(err));
      setBusy(false);
    }
  };
  return (
    <Dialog
      title={`Restore ${snapshot.name}`}
      open
      onClose={onClose}
      actions={
        <>
          <button type="button" className="btn" onClick={onClose} disabled={busy}>
            Cancel
          </button>
          <button type="button" className="btn btn-primary" onClick={() => void submit()} disabled={busy || name.trim() === ''}>
            {busy ? 'Restoring…' : 'Restore'}
          </button>
        </>
      }
    >
      <p className="muted">A new instance from this snapshot, on any host with room.</p>
      <div className="field">
        <label htmlFor={nameId}>New instance name</label>
        <input id={nameId} value={name} onChange={(e) => setName(e.target.value)} required />
      </div>
      <fieldset className="field">
        <legend>Also inject SSH keys</legend>
        {(keys.data ?? []).length === 0 ? (
          <p className="muted">{keys.data ? 'The project has no SSH keys.' : 'Loading…'}</p>
        ) : (
          <div className="checks">
            {(keys.data ?? []).map((k) => (
              <div className="check" key={k.id}>
                <input
                  id={`restore-key-${k.id}`}
                  type="checkbox"
                  checked={sshKeys.includes(k.name)}
                  onChange={(e) => setSshKeys((ks) => (e.target.checked ? [...ks, k.name] : ks.filter((x) => x !== k.name)))}
                />
                <label htmlFor={`restore-key-${k.id}`}>{k.name}</label>
              </div>
            ))}
          </div>
        )}
      </fieldset>
      {error && <ErrorBanner message={error} />}
    </Dialog>
  );
}
