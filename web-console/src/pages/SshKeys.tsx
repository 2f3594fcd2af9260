// The project's SSH keys: list, add (name + public key), delete.
import { useState } from 'react';
import { api, unwrap, type SshKey } from '../api/client';
import { ConfirmDialog } from '../components/Dialog';
import { Field, FormCard, SubmitButton } from '../components/Form';
import { PageHeader } from '../components/PageHeader';
import { LoadState } from '../components/States';
import { Table } from '../components/Table';
import { time } from '../lib/format';
import { useLoad } from '../lib/useLoad';
import { useAction, useConfirmedAction } from '../lib/useAction';
import { useProjectPage } from '../lib/project';
import { listSshKeys } from '../lib/resources';

export function SshKeys() {
  const { project, writable } = useProjectPage();
  const keys = useLoad(() => listSshKeys(project), [project]);
  const deleting = useConfirmedAction(
    (k: SshKey) => unwrap(api.DELETE('/v1/projects/{project}/ssh-keys/{key}', { params: { path: { project, key: k.id } } })),
    keys.reload,
  );
  return (
    <>
      <PageHeader title="SSH keys" sub="Public keys the project's instances can be created with" />
      {writable && <AddKey project={project} onAdded={keys.reload} />}
      <LoadState what="SSH keys" {...keys} empty="No SSH keys yet. Add one above to log in to new instances.">
        {(all) => (
          <Table label="SSH keys" columns={['Name', 'Fingerprint', 'Added']} actions>
            {all.map((k) => (
              <tr key={k.id}>
                <td>{k.name}</td>
                <td className="mono">{k.fingerprint}</td>
                <td>{time(k.created_at)}</td>
                <td className="actions">
                  {writable && (
                    <button
                      type="button"
                      className="btn btn-small btn-danger"
                      onClick={() => deleting.ask(k)}
                      aria-label={`Delete SSH key ${k.name}`}
                    >
                      Delete
                    </button>
                  )}
                </td>
              </tr>
            ))}
          </Table>
        )}
      </LoadState>
      <ConfirmDialog {...deleting.dialog} title={`Delete SSH key ${deleting.target?.name ?? ''}?`} confirmLabel="Delete" danger>
        <p>New instances can no longer get this key. Instances that have it keep it.</p>
      </ConfirmDialog>
    </>
  );
}

function AddKey({ project, onAdded }: { project: string; onAdded: () => void }) {
  const [name, setName] = useState('');
  const [publicKey, setPublicKey] = useState('');
  const { busy, error, run } = useAction();
  const submit = () =>
    run(async () => {
      await unwrap(
        api.POST('/v1/projects/{project}/ssh-keys', {
          params: { path: { project } },
          body: { name: name.trim(), public_key: publicKey.trim() },
        }),
      );
      setName('');
      setPublicKey('');
      onAdded();
    });
  return (
    <FormCard
      label="Add SSH key"
      title="Add a key"
      onSubmit={submit}
      error={error}
      actions={
        <SubmitButton busy={busy} busyLabel="Adding…">
          Add SSH key
        </SubmitButton>
      }
    >
      <Field label="Name">{(id) => <input id={id} value={name} onChange={(e) => setName(e.target.value)} required autoComplete="off" />}</Field>
      <Field
        label="Public key"
        hint={
          <>
            One line, e.g. the contents of <code>~/.ssh/id_ed25519.pub</code>.
          </>
        }
      >
        {(id) => (
          <textarea
            id={id}
            rows={3}
            className="mono"
            value={publicKey}
            onChange={(e) => setPublicKey(e.target.value)}
            required
            spellCheck={false}
            placeholder="ssh-ed25519 AAAA… you@laptop"
          />
        )}
      </Field>
    </FormCard>
  );
}
