// Who is signed in: the session (its CSRF token) and whoami (name, projects, operator), for
// every page. No session → the sign-in page, which brings the user back to where they were.
import { createContext, useCallback, useContext, useEffect, useMemo, useState, type ReactNode } from 'react';
import { api, messageOf, setCsrfToken, setUnauthenticatedHandler, unwrap, type Session, type WhoAmI } from './api/client';

type AuthState =
  | { status: 'loading' }
  | { status: 'signed-out'; reason: string | null }
  | { status: 'error'; message: string }
  | { status: 'signed-in'; session: Session; whoami: WhoAmI };

interface AuthContextValue {
  state: AuthState;
  /** After a sign-in that set the cookie (or to try again): reads the session anew. */
  refresh: () => Promise<void>;
  /** Signs in with an API token: the control plane turns it into a session cookie. */
  signInWithToken: (token: string) => Promise<void>;
  signOut: () => Promise<void>;
  /** whoami again (after membership changes). */
  reloadWhoami: () => Promise<void>;
}

const AuthContext = createContext<AuthContextValue | null>(null);

async function loadSignedIn(): Promise<AuthState> {
  const result = await api.GET('/v1/auth/session');
  if (result.response.status === 401) return { status: 'signed-out', reason: null };
  const session = await unwrap(Promise.resolve(result));
  setCsrfToken(session.csrf_token);
  const whoami = await unwrap(api.GET('/v1/auth/whoami'));
  return { status: 'signed-in', session, whoami };
}

export function AuthProvider({ children }: { children: ReactNode }) {
  const [state, setState] = useState<AuthState>({ status: 'loading' });

  const refresh = useCallback(async () => {
    try {
      setState(await loadSignedIn());
    } catch (err) {
      setState({ status: 'error', message: messageOf(err) });
    }
  }, []);

  useEffect(() => {
    setUnauthenticatedHandler(() => {
      setCsrfToken(null);
      setState({ status: 'signed-out', reason: 'Your session ended. Sign in again.' });
    });
    void refresh();
    return () => setUnauthenticatedHandler(null);
  }, [refresh]);

  const signInWithToken = useCallback(async (token: string) => {
    const session = await unwrap(api.POST('/v1/auth/session', { body: { token } }));
    setCsrfToken(session.csrf_token);
    const whoami = await unwrap(api.GET('/v1/auth/whoami'));
    setState({ status: 'signed-in', session, whoami });
  }, []);

  const signOut = useCallback(async () => {
    let reason: string | null = null;
    try {
      await unwrap(api.DELETE('/v1/auth/session'));
    } catch (err) {
      // The cookie may still be good: say so rather than pretend.
      reason = `Signing out failed: ${messageOf(err)}. Close the browser to end the session.`;
    }
    setCsrfToken(null);
    setState({ status: 'signed-out', reason });
  }, []);

  const reloadWhoami = useCallback(async () => {
    const whoami = await unwrap(api.GET('/v1/auth/whoami'));
    setState((s) => (s.status === 'signed-in' ? { ...s, whoami } : s));
  }, []);

  const value = useMemo(
    () => ({ state, refresh, signInWithToken, signOut, reloadWhoami }),
    [state, refresh, signInWithToken, signOut, reloadWhoami],
  );
  return <AuthContext.Provider value={value}>{children}</AuthContext.Provider>;
}

export function useAuth(): AuthContextValue {
  const value = useContext(AuthContext);
  if (!value) throw new Error('useAuth outside AuthProvider');
  return value;
}

/** The signed-in user's whoami; only under a signed-in route. */
export function useWhoami(): WhoAmI {
  const { state } = useAuth();
  if (state.status !== 'signed-in') throw new Error('useWhoami while not signed in');
  return state.whoami;
}
