// "/": the remembered (or first) project's instances; a form to make a project when there is none.
import { useState } from 'react';
import { Navigate, useNavigate } from 'react-router-dom';
import { api, unwrap } from '../api/client';
import { useAuth, useWhoami } from '../auth';
import { Field, FormCard, SubmitButton } from '../components/Form';
import { PageHeader } from '../components/PageHeader';
import { defaultProject, rememberProject } from '../lib/project';
import { useAction } from '../lib/useAction';

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
  const { busy, error, run } = useAction();
  const submit = () =>
    run(async () => {
      const created = await unwrap(api.POST('/v1/projects', { body: { name, description } }));
      rememberProject(created.name);
      await reloadWhoami();
      navigate(`/projects/${encodeURIComponent(created.name)}/instances`);
    });
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
      <FormCard
        className="narrow"
        onSubmit={submit}
        error={error}
        actions={
          <SubmitButton busy={busy} busyLabel="Creating…">
            Create project
          </SubmitButton>
        }
      >
        <Field label="Project name" hint="A DNS label: lower-case letters, digits and hyphens.">
          {(id) => <input id={id} value={name} onChange={(e) => setName(e.target.value)} required pattern="[a-z0-9]([a-z0-9\-]*[a-z0-9])?" />}
        </Field>
        <Field label="Description (optional)">
          {(id) => <input id={id} value={description} onChange={(e) => setDescription(e.target.value)} />}
        </Field>
      </FormCard>
    </>
  );
}
