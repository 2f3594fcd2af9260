// The one API client of the console: typed by src/api/schema.d.ts, which build.sh generates from
// the control plane's OpenAPI document. Every change carries the session's CSRF token; a 401
// from any call (but the session calls themselves) sends the user back to sign in.
import createClient, { type Middleware } from 'openapi-fetch';
import type { components, paths } from './schema';

export type Schemas = components['schemas'];
export type Instance = Schemas['InstanceRow'];
export type Operation = Schemas['OperationRow'];
export type Image = Schemas['ImageView'];
export type SshKey = Schemas['SshKeyView'];
export type Snapshot = Schemas['SnapshotRow'];
export type Member = Schemas['Member'];
export type Role = Schemas['Role'];
export type Host = Schemas['HostRow'];
export type WhoAmI = Schemas['WhoAmI'];
export type Session = Schemas['SessionView'];

let csrfToken: string | null = null;
let onUnauthenticated: (() => void) | null = null;

/** Remembers the session's CSRF token (null once signed out). */
export function setCsrfToken(token: string | null): void {
  csrfToken = token;
}

/** What to do when the API answers 401 (the session ended). */
export function setUnauthenticatedHandler(handler: (() => void) | null): void {
  onUnauthenticated = handler;
}

const MUTATING = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

const auth: Middleware = {
  onRequest({ request }) {
    if (MUTATING.has(request.method) && csrfToken !== null) {
      request.headers.set('X-CSRF-Token', csrfToken);
    }
    return request;
  },
  onResponse({ request, response }) {
    const path = new URL(request.url).pathname;
    if (response.status === 401 && path !== '/v1/auth/session') {
      onUnauthenticated?.();
    }
    return response;
  },
};

export const api = createClient<paths>({ baseUrl: window.location.origin, credentials: 'same-origin' });
api.use(auth);

/** An API call that failed: the server's message (from its ErrorBody) and request id. */
export class ApiFailure extends Error {
  constructor(
    message: string,
    readonly status: number,
    readonly code: string | null,
    readonly requestId: string | null,
  ) {
    super(message);
    this.name = 'ApiFailure';
  }
}

function isErrorBody(value: unknown): value is Schemas['ErrorBody'] {
  if (typeof value !== 'object' || value === null || !('error' in value)) return false;
  const detail = (value as { error: unknown }).error;
  return typeof detail === 'object' && detail !== null && 'message' in detail;
}

/** The failure a response stands for (its ErrorBody's message, else its status). */
export function failureOf(error: unknown, response: Response): ApiFailure {
  if (isErrorBody(error)) {
    return new ApiFailure(error.error.message, response.status, error.error.code, error.error.request_id);
  }
  const text = response.statusText ? `${response.status} ${response.statusText}` : String(response.status);
  return new ApiFailure(`the API answered ${text}`, response.status, null, null);
}

type Result<T> = { data?: T; error?: unknown; response: Response };

/** The data of a successful call; throws an ApiFailure otherwise. */
export async function unwrap<T>(call: Promise<Result<T>>): Promise<T> {
  let result: Result<T>;
  try {
    result = await call;
  } catch (err) {
    throw new ApiFailure(`cannot reach the API (${err instanceof Error ? err.message : String(err)})`, 0, null, null);
  }
  if (!result.response.ok) throw failureOf(result.error, result.response);
  return result.data as T;
}

/** Every item of a paged listing (following `next_cursor`, at most `maxPages` pages). */
export async function listAll<T>(
  page: (cursor: string | undefined) => Promise<Result<{ items: T[]; next_cursor?: string | null }>>,
  maxPages = 20,
): Promise<T[]> {
  const items: T[] = [];
  let cursor: string | undefined;
  for (let i = 0; i < maxPages; i++) {
    const data = await unwrap(page(cursor));
    items.push(...data.items);
    if (!data.next_cursor) break;
    cursor = data.next_cursor;
  }
  return items;
}

/** A message for anything thrown. */
export function messageOf(err: unknown): string {
  if (err instanceof ApiFailure) {
    return err.requestId ? `${err.message} (request id ${err.requestId})` : err.message;
  }
  return err instanceof Error ? err.message : String(err);
}

/** A new Idempotency-Key (crypto.randomUUID needs a secure context; fall back to random bytes). */
export function newIdempotencyKey(): string {
  if (typeof crypto.randomUUID === 'function') return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}
