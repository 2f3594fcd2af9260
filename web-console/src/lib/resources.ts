// Listings and calls several pages share.
import { api, listAll, unwrap, type Image, type Instance, type SshKey } from '../api/client';

export function listInstances(project: string): Promise<Instance[]> {
  return listAll((cursor) =>
    api.GET('/v1/projects/{project}/instances', { params: { path: { project }, query: { cursor, limit: 1000 } } }),
  );
}

export function listImages(project: string): Promise<Image[]> {
  return listAll((cursor) => api.GET('/v1/projects/{project}/images', { params: { path: { project }, query: { cursor } } }));
}

export function listSshKeys(project: string): Promise<SshKey[]> {
  return listAll((cursor) => api.GET('/v1/projects/{project}/ssh-keys', { params: { path: { project }, query: { cursor } } }));
}

/** Takes a snapshot of an instance (its id), with its memory or not; a blank name lets the API name it. */
export async function takeSnapshot(project: string, instance: string, name: string, memory: boolean): Promise<void> {
  const body = { instance, name: name.trim() === '' ? null : name.trim(), memory };
  await unwrap(api.POST('/v1/projects/{project}/snapshots', { params: { path: { project } }, body }));
}

/** Every state an instance can be in, for filters (the API's InstanceState, in lifecycle order). */
export const INSTANCE_STATES = [
  'creating',
  'starting',
  'running',
  'rebooting',
  'stopping',
  'stopped',
  'suspending',
  'suspended',
  'snapshotting',
  'restoring',
  'deleting',
  'failed',
  'lost',
] as const satisfies readonly Instance['state'][];

