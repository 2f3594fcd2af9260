// Listings several pages share.
import { api, listAll, type Image, type Instance, type SshKey } from '../api/client';

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

