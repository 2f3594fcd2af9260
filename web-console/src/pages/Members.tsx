// The project's members: add by name or e-mail with a role, change a role, remove.
import { useState } from 'react';
import { api, messageOf, unwrap, type Member, type Role } from '../api/client';
import { useAuth } from '../auth';
import { ConfirmDialog, ErrorBanner } from '../components/Dialog';
import { Field, FormCard, SubmitButton } from '../components/Form';
import { PageHeader } from '../components/PageHeader';
import { LoadState } from '../components/States';
import { Table } from '../components/Table';
import { time } from '../lib/format';
import { useLoad } from '../lib/useLoad';
import { useAction, useConfirmedAction } from '../lib/useAction';
import { useProjectPage } from '../lib/project';

const ROLES: Role[] = ['viewer', 'member', 'admin'];

function asRole(value: string): Role {
  return ROLES.find((r) => r === value) ?? 'viewer';
}

const roleOptions = ROLES.map((r) => (
  <option key={r} value={r}>
    {r}
  </option>
));

export function Members() {
  const { project, whoami } = useProjectPage();
  const { reloadWhoami } = useAuth();
  const members = useLoad(
    () => unwrap(api.GET('/v1/projects/{project}/members', { params: { path: { project } } })).then((l) => l.items),
    [project],
  );
  const myRole = whoami.projects.find((p) => p.name === project)?.role;
  const isAdmin = myRole === 'admin';
  const isMe = (m: Member | null) => m?.user_id === whoami.user.id;
  const removing = useConfirmedAction(
    (m: Member) => unwrap(api.DELETE('/v1/projects/{project}/members/{user}', { params: { path: { project, user: m.user_id } } })),
    async (m) => {
      members.reload();
      if (isMe(m)) await reloadWhoami();
    },
  );
  const [rowError, setRowError] = useState<string | null>(null);

  const setRole = async (m: Member, role: Role) => {
    setRowError(null);
    try {
      await unwrap(api.PATCH('/v1/projects/{project}/members/{user}', { params: { path: { project, user: m.user_id } }, body: { role } }));
      members.reload();
      if (isMe(m)) await reloadWhoami();
    } catch (err) {
      setRowError(`Cannot change ${m.name}'s role: ${messageOf(err)}`);
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
      <LoadState what="members" {...members} empty="No members.">
        {(all) => (
          <Table label="Members" columns={['Name', 'E-mail', 'Role', 'Since']} actions>
            {all.map((m) => (
              <tr key={m.user_id}>
                <td>
                  {m.name}
                  {isMe(m) && <span className="muted"> (you)</span>}
                </td>
                <td>{m.email ?? '—'}</td>
                <td>
                  {isAdmin ? (
                    <select aria-label={`Role of ${m.name}`} value={m.role} onChange={(e) => void setRole(m, asRole(e.target.value))}>
                      {roleOptions}
                    </select>
                  ) : (
                    m.role
                  )}
                </td>
                <td>{time(m.created_at)}</td>
                <td className="actions">
                  {(isAdmin || isMe(m)) && (
                    <button type="button" className="btn btn-small btn-danger" onClick={() => removing.ask(m)}>
                      {isMe(m) ? 'Leave' : 'Remove'}
                    </button>
                  )}
                </td>
              </tr>
            ))}
          </Table>
        )}
      </LoadState>
      <ConfirmDialog
        {...removing.dialog}
        title={isMe(removing.target) ? `Leave ${project}?` : `Remove ${removing.target?.name ?? ''}?`}
        confirmLabel={isMe(removing.target) ? 'Leave' : 'Remove'}
        danger
      >
        <p>They lose access to the project's resources at once.</p>
      </ConfirmDialog>
    </>
  );
}

function AddMember({ project, onAdded }: { project: string; onAdded: () => void }) {
  const [user, setUser] = useState('');
  const [role, setRole] = useState<Role>('member');
  const { busy, error, run } = useAction();
  const submit = () =>
    run(async () => {
      await unwrap(api.POST('/v1/projects/{project}/members', { params: { path: { project } }, body: { user: user.trim(), role } }));
      setUser('');
      onAdded();
    });
  return (
    <FormCard label="Add member" title="Add a member" onSubmit={submit} error={error}>
      <div className="inline-form">
        <Field label="Name or e-mail" inline className="grow">
          {(id) => <input id={id} value={user} onChange={(e) => setUser(e.target.value)} required autoComplete="off" />}
        </Field>
        <Field label="Role" inline>
          {(id) => (
            <select id={id} value={role} onChange={(e) => setRole(asRole(e.target.value))}>
              {roleOptions}
            </select>
          )}
        </Field>
        <SubmitButton busy={busy} busyLabel="Adding…">
          Add
        </SubmitButton>
      </div>
      <p className="hint">An e-mail address nobody has yet adds whoever signs in with it later.</p>
    </FormCard>
  );
}
