// "/": the remembered (or first) project's instances; a form to make a project when there is none.
import { useId, useState, type FormEvent } from 'react';
import { Navigate, useNavigate } from 'react-router-dom';
import { api, messageOf, unwrap } from '../api/client';
import { useAuth, useWhoami } from '../auth';
import { ErrorBanner } from '../components/Dialog';
import { PageHeader } from '../components/PageHeader';
import { defaultProject, rememberProject } from '../lib/project';

export function Home() {
  const whoami = useWhoami();
  const project = defaultProject(whoami);
  if (project) return <Navigate to={`/projects/${encodeURIComponent(project)}/instances`} replace />;
  return <NoProject />;
}

function NoProject() {
  const { reloadWhoami } = useAuth();
  const whoami = useWhoami();
  const navigate = useNavigate();
  const [name, setName] = useState('');
  const [description, setDescription] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const nameId = useId();
  const descId = useId();
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const created = await unwrap(api.POST('/v1/projects', { body: { name, description } }));
      rememberProject(created.name);
      await reloadWhoami();
      navigate(`/projects/${encodeURIComponent(created.name)}/instances`);
    } catch (err) {
      setError(messageOf(err));
      setBusy(false);
    }
  };
  return (
    <>
      <PageHeader
        title="No project yet"
        sub={
          whoami.is_operator
            ? 'Operators manage the fleet but belong to no project by themselves. Create one, or ask a project admin to add you.'
            : 'You belong to no project. Ask a project admin to add you, or create one.'
        }
      />
      <form className="form card narrow" onSubmit={(e) => void submit(e)}>
        <div className="field">
          <label htmlFor={nameId}>Project name</label>
          <input id={nameId} value={name} onChange={(e) => setName(e.target.value)} required pattern="[a-z0-9]([a-z0-9\-]*[a-z0-9])?" />
          <p className="hint">A DNS label: lower-case letters, digits and hyphens.</p>
        </div>
        <div className="field">
          <label htmlFor={descId}>Description (optional)</label>
          <input id={descId} value={description} onChange={(e) => setDescription(e.target.value)} />
        </div>
        {error && <ErrorBanner message={error} />}
        <div className="form-actions">
          <button type="submit" className="btn btn-primary" disabled={busy}>
            {busy ? 'Creating…' : 'Create project'}
          </button>
        </div>
      </form>
    </>
  );
}
