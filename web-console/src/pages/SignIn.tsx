// Sign-in: with the identity provider when one is configured (GET /v1/auth/oidc), and always
// with an API token (POST /v1/auth/session turns it into a session cookie).
import { useEffect, useId, useState, type FormEvent } from 'react';
import { Navigate, useSearchParams } from 'react-router-dom';
import { api, messageOf, unwrap } from '../api/client';
import { useAuth } from '../auth';
import { ErrorBanner } from '../components/Dialog';
import { Loading } from '../components/States';

type Provider = { status: 'loading' } | { status: 'none' } | { status: 'some'; host: string } | { status: 'error'; message: string };

/** Only a path of this site: never an absolute URL someone slipped into ?next=. */
function safeNext(next: string | null): string {
  if (next && next.startsWith('/') && !next.startsWith('//') && !next.startsWith('/signin')) return next;
  return '/';
}

export function SignIn() {
  const { state, signInWithToken } = useAuth();
  const [params] = useSearchParams();
  const next = safeNext(params.get('next'));
  const [provider, setProvider] = useState<Provider>({ status: 'loading' });
  const [token, setToken] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const tokenId = useId();

  useEffect(() => {
    let cancelled = false;
    void (async () => {
      try {
        const result = await api.GET('/v1/auth/oidc');
        if (cancelled) return;
        if (result.response.status === 404) return setProvider({ status: 'none' });
        const info = await unwrap(Promise.resolve(result));
        let host = info.issuer;
        try {
          host = new URL(info.issuer).host;
        } catch {
          // Not a URL: show it as it is.
        }
        setProvider({ status: 'some', host });
      } catch (err) {
        if (!cancelled) setProvider({ status: 'error', message: messageOf(err) });
      }
    })();
    return () => {
      cancelled = true;
    };
  }, []);

  if (state.status === 'signed-in') return <Navigate to={next} replace />;

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await signInWithToken(token.trim());
    } catch (err) {
      setError(messageOf(err));
      setBusy(false);
    }
  };

  return (
    <div className="signin-page">
      <main className="signin-card">
        <div className="brand brand-large">
          <span className="brand-mark" aria-hidden="true" />
          Cloud
        </div>
        <h1>Sign in to the console</h1>
        {state.status === 'signed-out' && state.reason && <div className="banner banner-info">{state.reason}</div>}
        {state.status === 'loading' && <Loading what="your session" />}
        {provider.status === 'loading' && <Loading what="sign-in options" />}
        {provider.status === 'error' && <ErrorBanner message={`Cannot ask for the identity provider: ${provider.message}`} />}
        {provider.status === 'some' && (
          <>
            <a className="btn btn-primary btn-block" href={`/auth/login?next=${encodeURIComponent(next)}`}>
              Sign in with {provider.host}
            </a>
            <div className="divider">
              <span>or</span>
            </div>
          </>
        )}
        <form onSubmit={(e) => void submit(e)} className="form">
          <div className="field">
            <label htmlFor={tokenId}>Sign in with an API token</label>
            <input
              id={tokenId}
              type="password"
              autoComplete="off"
              spellCheck={false}
              value={token}
              onChange={(e) => setToken(e.target.value)}
              placeholder="cloud_…"
              required
            />
            <p className="hint">
              A token from <code>cloudctl token create</code>, or the administrator's token in <code>&lt;data_dir&gt;/admin-token</code>.
            </p>
          </div>
          {error && <ErrorBanner message={error} />}
          <button
            type="submit"
            className={provider.status === 'some' ? 'btn btn-block' : 'btn btn-primary btn-block'}
            disabled={busy || token.trim() === ''}
          >
            {busy ? 'Signing in…' : 'Sign in with token'}
          </button>
        </form>
      </main>
    </div>
  );
}
