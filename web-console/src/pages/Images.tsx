// Images the project sees (its own and public ones); operators register files of the control
// plane host as new images.
import { useState } from 'react';
import { api, unwrap, type Image, type Schemas } from '../api/client';
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
import { listImages } from '../lib/resources';

export function Images() {
  const { project, whoami } = useProjectPage();
  const images = useLoad(() => listImages(project), [project]);
  const deleting = useConfirmedAction(
    (i: Image) => unwrap(api.DELETE('/v1/projects/{project}/images/{image}', { params: { path: { project, image: i.id } } })),
    images.reload,
  );
  const [registering, setRegistering] = useState(false);
  return (
    <>
      <PageHeader title="Images" sub="What instances boot from: the project's own images and the public ones">
        {whoami.is_operator && (
          <button type="button" className="btn btn-primary" onClick={() => setRegistering((r) => !r)} aria-expanded={registering}>
            Register image
          </button>
        )}
      </PageHeader>
      {registering && (
        <RegisterImage
          project={project}
          onDone={() => {
            setRegistering(false);
            images.reload();
          }}
        />
      )}
      <LoadState
        what="images"
        {...images}
        empty="No images. An operator registers them (cloudctl image create), or make one from a snapshot."
      >
        {(all) => (
          <Table
            label="Images"
            columns={['Name', 'State', 'Boots', { label: 'Disk', className: 'num' }, 'Visibility', 'Created']}
            actions
          >
            {all.map((i) => (
              <tr key={i.id}>
                <td>{i.name}</td>
                <td>
                  <Badge state={i.state} />
                </td>
                <td>{i.boot_mode === 'firmware' ? `whole disk (${i.firmware ?? 'uefi'})` : 'kernel'}</td>
                <td className="num">{bytes(i.disk_virtual_bytes)}</td>
                <td>{i.public ? 'public' : 'project'}</td>
                <td>{time(i.created_at)}</td>
                <td className="actions">
                  {(!i.public || whoami.is_operator) && (
                    <button
                      type="button"
                      className="btn btn-small btn-danger"
                      onClick={() => deleting.ask(i)}
                      aria-label={`Delete image ${i.name}`}
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
      <ConfirmDialog {...deleting.dialog} title={`Delete image ${deleting.target?.name ?? ''}?`} confirmLabel="Delete" danger>
        <p>New instances can no longer boot from it.</p>
      </ConfirmDialog>
    </>
  );
}

function RegisterImage({ project, onDone }: { project: string; onDone: () => void }) {
  const [name, setName] = useState('');
  const [bootMode, setBootMode] = useState<Schemas['BootMode']>('direct_kernel');
  const [kernel, setKernel] = useState('');
  const [initrd, setInitrd] = useState('');
  const [disk, setDisk] = useState('');
  const [cmdline, setCmdline] = useState('');
  const [firmware, setFirmware] = useState<Schemas['Firmware']>('uefi');
  const [isPublic, setPublic] = useState(true);
  const { busy, error, run } = useAction();
  const kernelImage = bootMode === 'direct_kernel';
  const orNull = (v: string) => (v.trim() === '' ? null : v.trim());
  const submit = () =>
    run(async () => {
      await unwrap(
        api.POST('/v1/projects/{project}/images', {
          params: { path: { project } },
          // Each boot mode takes its own fields (the document's oneOf).
          body: kernelImage
            ? {
                name: name.trim(),
                boot_mode: 'direct_kernel',
                kernel_path: kernel.trim(),
                initrd_path: orNull(initrd),
                disk_path: orNull(disk),
                kernel_cmdline: cmdline,
                public: isPublic,
              }
            : { name: name.trim(), boot_mode: 'firmware', disk_path: disk.trim(), firmware, public: isPublic },
        }),
      );
      onDone();
    });
  /** A path (or a command line) on the control plane's host. */
  const pathField = (label: string, value: string, set: (v: string) => void, required = false) => (
    <Field label={label}>
      {(id) => <input id={id} value={value} onChange={(e) => set(e.target.value)} required={required} className="mono" />}
    </Field>
  );
  return (
    <FormCard
      label="Register image"
      title="Register an image"
      onSubmit={submit}
      error={error}
      actions={
        <SubmitButton busy={busy} busyLabel="Registering…">
          Register
        </SubmitButton>
      }
    >
      <p className="hint">Paths are files on the control plane's host; it copies them into its store.</p>
      <div className="form-grid">
        <Field label="Name">{(id) => <input id={id} value={name} onChange={(e) => setName(e.target.value)} required />}</Field>
        <Field label="Boot mode">
          {(id) => (
            <select id={id} value={bootMode} onChange={(e) => setBootMode(e.target.value === 'firmware' ? 'firmware' : 'direct_kernel')}>
              <option value="direct_kernel">Kernel (direct boot)</option>
              <option value="firmware">Whole disk (firmware)</option>
            </select>
          )}
        </Field>
        {kernelImage ? (
          <>
            {pathField('Kernel path', kernel, setKernel, true)}
            {pathField('Initrd path (optional)', initrd, setInitrd)}
            {pathField('Disk path (optional)', disk, setDisk)}
            {pathField('Kernel command line', cmdline, setCmdline)}
          </>
        ) : (
          <>
            {pathField('Disk path', disk, setDisk, true)}
            <Field label="Firmware">
              {(id) => (
                <select id={id} value={firmware} onChange={(e) => setFirmware(e.target.value === 'bios' ? 'bios' : 'uefi')}>
                  <option value="uefi">UEFI</option>
                  <option value="bios">BIOS</option>
                </select>
              )}
            </Field>
          </>
        )}
      </div>
      <Checkbox checked={isPublic} onChange={setPublic}>
        Public: every project sees it
      </Checkbox>
    </FormCard>
  );
}
