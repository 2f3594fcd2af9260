//! A database of several hosts — a primary and its replicas, as Patroni runs them — named by one
//! URL with a host list (`postgres://cloud:…@10.0.0.1:5432,10.0.0.2:5432/cloud`, as libpq takes
//! it): the control plane uses the one that is the primary and follows it when another host is
//! promoted. sqlx takes one host per URL, so the list is split here.
//!
//! ```text
//!  start:     try each host in turn ─▶ the first answering pg_is_in_recovery() = false
//!  follow:    every second, ask the pools' host; unreachable or now a replica
//!             ─▶ find the primary again ─▶ the pools open new connections there
//! ```
//! Connections to the old primary must end with it, and the pool drops broken connections by
//! itself. A crashed server's are reset by its machine's kernel, and a demoted one restarts as a
//! replica, ending its sessions; but a machine that hangs, loses power or drops off the network
//! resets nothing, and sqlx sets no TCP keepalive: a statement waiting on such a connection would
//! wait forever, holding its pool connection, until the pools are empty. So after a switch the
//! control plane shuts down its own sockets to the old primary (`cut_connections_to`). A
//! statement in flight at the switch fails (503 `unavailable` to an API caller, a retried step
//! to the executor); what was committed before is on the new primary when the cluster replicates
//! synchronously (Patroni's `synchronous_mode`).

use std::net::SocketAddr;
use std::time::Duration;

use nix::sys::socket::{Shutdown, SockaddrStorage, getpeername, shutdown};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, PgPool};

use super::DbError;

/// How often the pools' host is asked whether it is still the primary.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// How long one host may take to answer before the next is tried.
const ANSWER_WITHIN: Duration = Duration::from_secs(2);

/// The connection options of each host of `url`, in its order; one for a URL of one host.
pub fn hosts_from_url(url: &str) -> Result<Vec<PgConnectOptions>, DbError> {
    let invalid = |why: &str| DbError::InvalidUrl(sqlx::Error::Configuration(why.into()));
    let (scheme, rest) = url.split_once("://").ok_or_else(|| invalid("no scheme (postgres://…)"))?;
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => (Some(userinfo), hosts),
        None => (None, authority),
    };
    if !hosts.contains(',') {
        return Ok(vec![super::options_from_url(url)?]);
    }
    hosts
        .split(',')
        .map(|host| {
            if host.is_empty() {
                return Err(invalid("an empty host in the URL's host list"));
            }
            let userinfo = userinfo.map(|u| format!("{u}@")).unwrap_or_default();
            super::options_from_url(&format!("{scheme}://{userinfo}{host}{tail}"))
        })
        .collect()
}

/// Whether the server of `conn` takes writes (is not in recovery).
async fn is_primary(conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
    let in_recovery: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()").fetch_one(conn).await?;
    Ok(!in_recovery)
}

/// The first of `hosts` that answers as a primary; the error of the last host tried if none.
pub async fn find(hosts: &[PgConnectOptions]) -> Result<PgConnectOptions, sqlx::Error> {
    let mut last = sqlx::Error::Configuration("no database host".into());
    for options in hosts {
        let attempt = async {
            let mut conn = PgConnection::connect_with(options).await?;
            let primary = is_primary(&mut conn).await;
            let _ = conn.close().await;
            primary
        };
        match tokio::time::timeout(ANSWER_WITHIN, attempt).await {
            Ok(Ok(true)) => return Ok(options.clone()),
            Ok(Ok(false)) => {
                last = sqlx::Error::Configuration(format!("{} is a replica", describe(options)).into());
            }
            Ok(Err(err)) => last = err,
            Err(_) => last = sqlx::Error::PoolTimedOut,
        }
    }
    Err(last)
}

/// `host:port` of `options`, for logs.
pub fn describe(options: &PgConnectOptions) -> String {
    format!("{}:{}", options.get_host(), options.get_port())
}

/// Keeps `pools` on the primary among `hosts` until `stop`: checks the pools' host every second
/// and, when it is gone or no longer the primary, points the pools at the one that is.
pub async fn follow(hosts: Vec<PgConnectOptions>, pools: Vec<PgPool>, stop: impl Future<Output = ()>) {
    let Some(first) = pools.first().cloned() else { return };
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = tokio::time::sleep(CHECK_EVERY) => {}
            () = &mut stop => return,
        }
        let check = async {
            let mut conn = first.acquire().await?;
            is_primary(&mut conn).await
        };
        let why = match tokio::time::timeout(ANSWER_WITHIN, check).await {
            Ok(Ok(true)) => continue,
            Ok(Ok(false)) => "the database host is now a replica".to_owned(),
            Ok(Err(err)) => format!("the database host does not answer: {err}"),
            Err(_) => format!("the database host did not answer within {ANSWER_WITHIN:?}"),
        };
        let old = first.connect_options();
        let was = describe(&old);
        match find(&hosts).await {
            Ok(primary) if describe(&primary) == was => {}
            Ok(primary) => {
                for pool in &pools {
                    pool.set_connect_options(primary.clone());
                }
                let addrs = tokio::net::lookup_host((old.get_host(), old.get_port())).await;
                let cut = addrs.map(|addrs| cut_connections_to(&addrs.collect::<Vec<_>>())).unwrap_or(0);
                tracing::warn!(from = %was, to = %describe(&primary), %why, cut, "following the new database primary");
            }
            Err(err) => tracing::warn!(%why, error = %err, "no database primary found yet"),
        }
    }
}

/// Shuts down (without closing: each stays owned by its connection) this process's sockets
/// connected to any of `addrs`, so that whatever waits on them sees the end of the stream at once;
/// returns how many. Linux: the sockets are found in `/proc/self/fd`.
fn cut_connections_to(addrs: &[SocketAddr]) -> usize {
    let Ok(fds) = std::fs::read_dir("/proc/self/fd") else { return 0 };
    let peer_of = |fd| {
        let peer = getpeername::<SockaddrStorage>(fd).ok()?;
        let v4 = peer.as_sockaddr_in().map(|a| SocketAddr::from(std::net::SocketAddrV4::from(*a)));
        v4.or_else(|| peer.as_sockaddr_in6().map(|a| SocketAddr::from(std::net::SocketAddrV6::from(*a))))
    };
    fds.flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .filter(|&fd| peer_of(fd).is_some_and(|peer| addrs.contains(&peer)))
        .filter(|&fd| shutdown(fd, Shutdown::Both).is_ok())
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sockets_to_an_old_primary_are_cut_and_no_others() -> std::io::Result<()> {
        use std::io::Read;
        use std::net::{TcpListener, TcpStream};
        let (old, other) = (TcpListener::bind("127.0.0.1:0")?, TcpListener::bind("127.0.0.1:0")?);
        let mut to_old = TcpStream::connect(old.local_addr()?)?;
        let mut to_other = TcpStream::connect(other.local_addr()?)?;
        let _accepted = (old.accept()?, other.accept()?);

        assert_eq!(cut_connections_to(&[old.local_addr()?]), 1);
        // A read waiting for the old primary's answer ends at once ...
        to_old.set_read_timeout(Some(Duration::from_secs(5)))?;
        assert_eq!(to_old.read(&mut [0; 8])?, 0);
        // ... and the other connection still waits for its peer.
        to_other.set_read_timeout(Some(Duration::from_millis(100)))?;
        let err = to_other.read(&mut [0; 8]).expect_err("nothing was sent on the other connection");
        assert!(matches!(err.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut), "{err}");
        Ok(())
    }

    #[test]
    fn a_host_list_is_one_url_per_host_with_the_rest_shared() {
        let hosts =
            hosts_from_url("postgres://cloud:s3cret@10.0.0.1:5433,db2:5434/cloud?sslmode=disable").expect("two hosts");
        let seen: Vec<_> = hosts.iter().map(|o| (describe(o), o.get_username().to_owned())).collect();
        assert_eq!(
            seen,
            [("10.0.0.1:5433".to_owned(), "cloud".to_owned()), ("db2:5434".to_owned(), "cloud".to_owned())]
        );
        assert!(hosts.iter().all(|o| o.get_database() == Some("cloud")));

        let one = hosts_from_url("postgres://cloud@localhost/cloud?host=/run/pg&port=5432").expect("one host");
        assert_eq!(one.len(), 1);
        for bad in ["postgres://cloud@a:1,,b:2/cloud", "cloud@a:1,b:2/cloud"] {
            assert!(matches!(hosts_from_url(bad), Err(DbError::InvalidUrl(_))), "{bad}");
        }
    }
}
