// The create form, with the equivalent cloudctl command kept up to date under it.
import { useState, type InputHTMLAttributes } from 'react';
import { Link, useNavigate } from 'react-router-dom';
import { api, messageOf, newIdempotencyKey, unwrap } from '../api/client';
import { CopyButton } from '../components/CopyButton';
import { ErrorBanner } from '../components/Dialog';
import { Checkbox, Field, FormCard, SubmitButton } from '../components/Form';
import { PageHeader } from '../components/PageHeader';
import { Loading } from '../components/States';
import { instanceCreateCommand } from '../lib/cloudctl';
import { bytes } from '../lib/format';
import { useLoad } from '../lib/useLoad';
import { useAction } from '../lib/useAction';
import { useProjectPage } from '../lib/project';
import { listImages, listSshKeys } from '../lib/resources';

const NAME_PATTERN = String.raw`[a-z0-9]([a-z0-9\-]{0,61}[a-z0-9])?`;

export function InstanceCreate() {
  const { project, base } = useProjectPage();
  const navigate = useNavigate();
  const images = useLoad(() => listImages(project), [project]);
  const keys = useLoad(() => listSshKeys(project), [project]);

  const [name, setName] = useState('');
  const [image, setImage] = useState('');
  const [vcpus, setVcpus] = useState(1);
  const [memoryMib, setMemoryMib] = useState(512);
  const [diskGib, setDiskGib] = useState(0);
  const [sshKeys, setSshKeys] = useState<string[]>([]);
  const [userData, setUserData] = useState('');
  const [group, setGroup] = useState('');
  const [drEnabled, setDrEnabled] = useState(false);
  const [drPriority, setDrPriority] = useState(100);
  const { busy, error, run } = useAction();

  const available = (images.data ?? []).filter((i) => i.state === 'available');
  const chosenImage = image || available[0]?.name || '';

  const submit = () =>
    run(async () => {
      const accepted = await unwrap(
        api.POST('/v1/projects/{project}/instances', {
          params: { path: { project }, header: { 'Idempotency-Key': newIdempotencyKey() } },
          body: {
            name,
            image: chosenImage,
            vcpus,
            memory_mib: memoryMib,
            disk_gib: diskGib,
            ssh_keys: sshKeys,
            user_data: userData === '' ? null : userData,
            anti_affinity_group: group === '' ? null : group,
          },
        }),
      );
      let notice: string | null = null;
      if (drEnabled) {
        try {
          await unwrap(
            api.PUT('/v1/projects/{project}/instances/{instance}/dr-policy', {
              params: { path: { project, instance: accepted.instance.id } },
              body: { priority: drPriority },
            }),
          );
        } catch (err) {
          // The instance exists: go to it, and say what is missing.
          notice = `The instance was created, but its DR policy was not set: ${messageOf(err)}`;
        }
      }
      navigate(`${base}/instances/${encodeURIComponent(accepted.instance.name)}`, { state: { notice } });
    });

  const toggleKey = (key: string, on: boolean) => setSshKeys((ks) => (on ? [...ks, key] : ks.filter((k) => k !== key)));
  const command = instanceCreateCommand({
    project,
    name,
    image: chosenImage,
    vcpus,
    memoryMib,
    diskGib,
    sshKeys,
    userData,
    antiAffinityGroup: group,
    drPriority: drEnabled ? drPriority : null,
  });

  return (
    <>
      <nav className="breadcrumbs" aria-label="Breadcrumbs">
        <Link to={`${base}/instances`}>Instances</Link> <span aria-hidden="true">/</span> New
      </nav>
      <PageHeader title="Create instance" />
      <FormCard
        label="Create instance"
        onSubmit={submit}
        error={error}
        actions={
          <>
            <Link className="btn" to={`${base}/instances`}>
              Cancel
            </Link>
            <SubmitButton busy={busy} busyLabel="Creating…" disabled={chosenImage === ''}>
              Create instance
            </SubmitButton>
          </>
        }
      >
        <div className="form-grid">
          <Field label="Name" hint="A DNS label, also the guest's hostname.">
            {(id) => (
              <input id={id} value={name} onChange={(e) => setName(e.target.value)} required pattern={NAME_PATTERN} autoComplete="off" />
            )}
          </Field>
          <Field label="Image">
            {(id) =>
              images.data === undefined ? (
                images.error ? (
                  <ErrorBanner message={`Cannot load images: ${images.error}`} />
                ) : (
                  <Loading what="images" />
                )
              ) : available.length === 0 ? (
                <p className="muted">No available image. An operator registers images.</p>
              ) : (
                <select id={id} value={chosenImage} onChange={(e) => setImage(e.target.value)} required>
                  {available.map((i) => (
                    <option key={i.id} value={i.name}>
                      {i.name} ({i.boot_mode === 'firmware' ? `whole disk, ${i.firmware ?? 'uefi'}` : 'kernel'}
                      {i.disk_virtual_bytes ? `, ${bytes(i.disk_virtual_bytes)}` : ''}){i.public ? '' : ' — project'}
                    </option>
                  ))}
                </select>
              )
            }
          </Field>
          <Field label="vCPUs">
            {(id) => <NumberInput id={id} min={1} max={64} value={vcpus} onChange={setVcpus} required />}
          </Field>
          <Field label="Memory (MiB)">
            {(id) => <NumberInput id={id} min={64} step={64} value={memoryMib} onChange={setMemoryMib} required />}
          </Field>
          <Field label="Disk (GiB)" hint="0: the image's size (a 1 GiB data disk for a kernel image without one).">
            {(id) => <NumberInput id={id} min={0} value={diskGib} onChange={setDiskGib} />}
          </Field>
          <Field label="Anti-affinity group (optional)" hint="Instances of one group are placed on different hosts.">
            {(id) => <input id={id} value={group} onChange={(e) => setGroup(e.target.value)} autoComplete="off" />}
          </Field>
        </div>
        <fieldset className="field">
          <legend>SSH keys</legend>
          {keys.data === undefined ? (
            keys.error ? (
              <ErrorBanner message={`Cannot load SSH keys: ${keys.error}`} />
            ) : (
              <Loading what="SSH keys" />
            )
          ) : keys.data.length === 0 ? (
            <p className="muted">
              The project has no SSH keys. <Link to={`${base}/ssh-keys`}>Add one</Link>.
            </p>
          ) : (
            <div className="checks">
              {keys.data.map((k) => (
                <Checkbox key={k.id} checked={sshKeys.includes(k.name)} onChange={(on) => toggleKey(k.name, on)}>
                  {k.name} <span className="mono muted">{k.fingerprint}</span>
                </Checkbox>
              ))}
            </div>
          )}
        </fieldset>
        <Field label="User-data (optional)">
          {(id) => (
            <textarea
              id={id}
              rows={5}
              value={userData}
              onChange={(e) => setUserData(e.target.value)}
              spellCheck={false}
              className="mono"
              placeholder="#cloud-config"
            />
          )}
        </Field>
        <fieldset className="field">
          <legend>Disaster recovery</legend>
          <div className="inline-form">
            <Checkbox checked={drEnabled} onChange={setDrEnabled}>
              Restore on a healthy host from its latest snapshot when its host dies
            </Checkbox>
            <Field label="Priority" inline>
              {(id) => <NumberInput id={id} min={0} max={1000} value={drPriority} onChange={setDrPriority} disabled={!drEnabled} />}
            </Field>
          </div>
        </fieldset>
      </FormCard>
      <section className="card command-box" aria-labelledby="cli">
        <div className="command-head">
          <h2 id="cli">Equivalent cloudctl command</h2>
          <CopyButton text={command} />
        </div>
        <pre className="mono" data-testid="cloudctl-command">
          {/* Words never break inside (not at the hyphens of --memory); lines break between them. */}
          {command.split(/( )/).map((part, i) =>
            part === ' ' ? (
              ' '
            ) : (
              <span className="word" key={i}>
                {part}
              </span>
            ),
          )}
        </pre>
      </section>
    </>
  );
}

type NumberInputProps = Omit<InputHTMLAttributes<HTMLInputElement>, 'type' | 'value' | 'onChange'> & {
  value: number;
  onChange: (value: number) => void;
};

/** An `<input type="number">` whose value is a number. */
function NumberInput({ value, onChange, ...rest }: NumberInputProps) {
  return <input {...rest} type="number" value={value} onChange={(e) => onChange(Number(e.target.value))} />;
}
