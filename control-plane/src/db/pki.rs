//! The fleet CA (`fleet_ca`, one row): shared by every replica through the database.

use sqlx::PgExecutor;

/// The CA's certificate and private key, both PEM.
#[derive(Clone, sqlx::FromRow)]
pub struct StoredCa {
    pub cert_pem: String,
    pub key_pem: String,
}

/// Never prints the key.
impl std::fmt::Debug for StoredCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredCa").field("cert_pem", &self.cert_pem).field("key_pem", &"<redacted>").finish()
    }
}

/// The fleet CA, if one was stored.
pub async fn fleet_ca(db: impl PgExecutor<'_>) -> Result<Option<StoredCa>, sqlx::Error> {
    sqlx::query_as("SELECT cert_pem, key_pem FROM fleet_ca").fetch_optional(db).await
}

/// Stores `ca` unless a CA is stored already (another replica won the race); then returns the
/// one stored, whichever it is. (Two statements: the read must see a row another replica
/// committed while the insert waited on it.)
pub async fn fleet_ca_insert(conn: &mut sqlx::PgConnection, ca: &StoredCa) -> Result<StoredCa, sqlx::Error> {
    sqlx::query("INSERT INTO fleet_ca (cert_pem, key_pem) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING")
        .bind(&ca.cert_pem)
        .bind(&ca.key_pem)
        .execute(&mut *conn)
        .await?;
    fleet_ca(&mut *conn).await?.ok_or(sqlx::Error::RowNotFound)
}
