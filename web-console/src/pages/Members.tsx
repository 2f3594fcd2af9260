// The project's members: add by name or e-mail with a role, change a role, remove.
import { useId, useState, type FormEvent } from 'react';
import { api, messageOf, unwrap, type Member, type Role } from '../api/client';
import { useAuth, useWhoami } from '../auth';
import { ConfirmDialog, ErrorBanner } from '../components/Dialog';
import { PageHeader } from '../components/PageHeader';
import { Empty, LoadState } from '../components/States';
import { time } from '../lib/format';
import { useLoad } from '../lib/useLoad';
import { useProject } from '../lib/project';

const ROLES: Role[] = ['viewer', 'member', 'admin'];

function asRole(value: string): Role {
  return ROLES.find((r) => r === value) ?? 'viewer';
}

export function Members() {
  const project = useProject();
  const whoami = useWhoami();
  const { reloadWhoami } = useAuth();
  const members = useLoad(
    () => unwrap(api.GET('/v1/projects/{project}/members', { params: { path: { project } } })).then((l) => l.items),
    [project],
  );
  const myRole = whoami.projects.find((p) => p.name === project)?.role;
  const isAdmin = myRole === 'admin';
  const [removing, setRemoving] = useState<Member | null>(null);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [rowError, setRowError] = useState<string | null>(null);

  const setRole = async (m: Member, role: Role) => {
    setRowError(null);
    try {
      await unwrap(api.PATCH('/v1/projects/{project}/members/{user}', { params: { path: { project, user: m.user_id } }, body: { role } }));
      members.reload();
      if (m.user_id === whoami.user.id) await reloadWhoami();
    } catch (err) {
      setRowError(`Cannot change ${m.name}'s role: ${messageOf(err)}`);
    }
  };
  const remove = async () => {
    if (!removing) return;
    setBusy(true);
    setError(null);
    try {
      await unwrap(api.DELETE('/v1/projects/{project}/members/{user}', { params: { path: { project, user: removing.user_id } } }));
      const self = removing.user_id === whoami.user.id;
      setRemoving(null);
      members.reload();
      if (self) await reloadWhoami();
    } catch (err) {
      setError(messageOf(err));
    } finally {
      setBusy(false);
    }
  };

  return (
    <>
      <PageHeader
        title="Members"
        sub={`Who can use project ${project}, and how: viewers read, members change resources, admins also manage members`}
      />
      {isAdmin && <AddMember project={project} onAdded={members.reload} />}
      {rowError && <ErrorBanner message={rowError} />}
      <LoadState what="members" {...members} retry={members.reload}>
        {(all) =>
          all.length === 0 ? (
            <Empty>No members.</Empty>
          ) : (
            <div className="table-wrap">
              <table className="table" aria-label="Members">
                <thead>
                  <tr>
                    <th scope="col">Name</th>
                    <th scope="col">E-mail</th>
                    <th scope="col">Role</th>
                    <th scope="col">Since</th>
                    <th scope="col">
                      <span className="visually-hidden">Actions</span>
                    </th>
                  </tr>
                </thead>
                <tbody>
                  {all.map((m) => (
                    <tr key={m.user_id}>
                      <td>
                        {m.name}
                        {m.user_id === whoami.user.id && <span className="muted"> (you)</span>}
                      </td>
                      <td>{m.email ?? '—'}</td>
                      <td>
                        {isAdmin ? (
                          <select aria-label={`Role of ${m.name}`} value={m.role} onChange={(e) => void setRole(m, asRole(e.target.value))}>
                            {ROLES.map((r) => (
                              <option key={r} value={r}>
                                {r}
                              </option>
                            ))}
                          </select>
                        ) : (
                          m.role
                        )}
                      </td>
                      <td>{time(m.created_at)}</td>
                      <td className="actions">
                        {(isAdmin || m.user_id === whoami.user.id) && (
                          <button type="button" className="btn btn-small btn-danger" onClick={() => setRemoving(m)}>
                            {m.user_id === whoami.user.id ? 'Leave' : 'Remove'}
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
        open={removing !== null}
        title={removing?.user_id === whoami.user.id ? `Leave ${project}?` : `Remove ${removing?.name ?? ''}?`}
        confirmLabel={removing?.user_id === whoami.user.id ? 'Leave' : 'Remove'}
        danger
        busy={busy}
        error={error}
        onCancel={() => {
          setRemoving(null);
          setError(null);
        }}
        onConfirm={remove}
      >
        <p>They lose access to the project's resources at once.</p>
      </ConfirmDialog>
    </>
  );
}

function AddMember({ project, onAdded }: { project: string; onAdded: () => void }) {
  const [user, setUser] = useState('');
  const [role, setRole] = useState<Role>('member');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const userId = useId();
  const roleId = useId();
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await unwrap(api.POST('/v1/projects/{project}/members', { params: { path: { project } }, body: { user: user.trim(), role } }));
      setUser('');
      onAdded();
    } catch (err) {
      setError(messageOf(err));
    } finally {
      setBusy(false);
    }
  };
  return (
    <form className="form card" onSubmit={(e) => void submit(e)} aria-label="Add member">
      <h2>Add a member</h2>
      <div className="inline-form">
        <div className="field field-inline grow">
          <label htmlFor={userId}>Name or e-mail</label>
          <input id={userId} value={user} onChange={(e) => setUser(e.target.value)} required autoComplete="off" />
        </div>
        <div className="field field-inline">
          <label htmlFor={roleId}>Role</label>
          <select id={roleId} value={role} onChange={(e) => setRole(asRole(e.target.value))}>
            {ROLES.map((r) => (
              <option key={r} value={r}>
                {r}
              </option>
            ))}
          </select>
        </div>
        <button type="submit" className="btn btn-primary" disabled={busy}>
          {busy ? 'Adding…' : 'Add'}
        </button>
      </div>
      <p className="hint">An e-mail address nobody has yet adds whoever signs in with it later.</p>
      {error && <ErrorBanner message={error} />}
    </form>
  );
}
