// The project's SSH keys: list, add (name + public key), delete.
import { useId, useState, type FormEvent } from 'react';
import { api, messageOf, unwrap, type SshKey } from '../api/client';
import { ConfirmDialog, ErrorBanner } from '../components/Dialog';
import { PageHeader } from '../components/PageHeader';
import { Empty, LoadState } from '../components/States';
import { time } from '../lib/format';
import { useLoad } from '../lib/useLoad';
import { canChange, useProject } from '../lib/project';
import { useWhoami } from '../auth';
import { listSshKeys } from '../lib/resources';

export function SshKeys() {
  const project = useProject();
  const writable = canChange(useWhoami(), project);
  const keys = useLoad(() => listSshKeys(project), [project]);
  const [deleting, setDeleting] = useState<SshKey | null>(null);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const remove = async () => {
    if (!deleting) return;
    setBusy(true);
    setError(null);
    try {
      await unwrap(api.DELETE('/v1/projects/{project}/ssh-keys/{key}', { params: { path: { project, key: deleting.id } } }));
      setDeleting(null);
      keys.reload();
    } catch (err) {
      setError(messageOf(err));
    } finally {
      setBusy(false);
    }
  };
  return (
    <>
      <PageHeader title="SSH keys" sub="Public keys the project's instances can be created with" />
      {writable && <AddKey project={project} onAdded={keys.reload} />}
      <LoadState what="SSH keys" {...keys} retry={keys.reload}>
        {(all) =>
          all.length === 0 ? (
            <Empty>No SSH keys yet. Add one above to log in to new instances.</Empty>
          ) : (
            <div className="table-wrap">
              <table className="table" aria-label="SSH keys">
                <thead>
                  <tr>
                    <th scope="col">Name</th>
                    <th scope="col">Fingerprint</th>
                    <th scope="col">Added</th>
                    <th scope="col">
                      <span className="visually-hidden">Actions</span>
                    </th>
                  </tr>
                </thead>
                <tbody>
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
                            onClick={() => setDeleting(k)}
                            aria-label={`Delete SSH key ${k.name}`}
                          >
                            Delete
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
        open={deleting !== null}
        title={`Delete SSH key ${deleting?.name ?? ''}?`}
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
        <p>New instances can no longer get this key. Instances that have it keep it.</p>
      </ConfirmDialog>
    </>
  );
}

function AddKey({ project, onAdded }: { project: string; onAdded: () => void }) {
  const [name, setName] = useState('');
  const [publicKey, setPublicKey] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const nameId = useId();
  const keyId = useId();
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await unwrap(
        api.POST('/v1/projects/{project}/ssh-keys', {
          params: { path: { project } },
          body: { name: name.trim(), public_key: publicKey.trim() },
        }),
      );
      setName('');
      setPublicKey('');
      onAdded();
    } catch (err) {
      setError(messageOf(err));
    } finally {
      setBusy(false);
    }
  };
  return (
    <form className="form card" onSubmit={(e) => void submit(e)} aria-label="Add SSH key">
      <h2>Add a key</h2>
      <div className="field">
        <label htmlFor={nameId}>Name</label>
        <input id={nameId} value={name} onChange={(e) => setName(e.target.value)} required autoComplete="off" />
      </div>
      <div className="field">
        <label htmlFor={keyId}>Public key</label>
        <textarea
          id={keyId}
          rows={3}
          className="mono"
          value={publicKey}
          onChange={(e) => setPublicKey(e.target.value)}
          required
          spellCheck={false}
          placeholder="ssh-ed25519 AAAA… you@laptop"
        />
        <p className="hint">
          One line, e.g. the contents of <code>~/.ssh/id_ed25519.pub</code>.
        </p>
      </div>
      {error && <ErrorBanner message={error} />}
      <div className="form-actions">
        <button type="submit" className="btn btn-primary" disabled={busy}>
          {busy ? 'Adding…' : 'Add SSH key'}
        </button>
      </div>
    </form>
  );
}
