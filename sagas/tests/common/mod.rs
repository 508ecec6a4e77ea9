//! What the binary's process tests share: the services, and a database of their own.

use sqlx::{Connection, Executor, PgConnection};
use uuid::Uuid;

/// A fresh database on the server of `DATABASE_URL` (its URL), and `KAFKA_BROKERS`.
pub async fn services() -> (String, String) {
    let (Ok(database), Ok(brokers)) = (
        std::env::var("DATABASE_URL"),
        std::env::var("KAFKA_BROKERS"),
    ) else {
        panic!("DATABASE_URL and KAFKA_BROKERS must name the services (scripts/test.sh sets them)");
    };
    let name = format!("sagatest_{}", Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(&database).await.unwrap();
    admin
        .execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .unwrap();
    let (base, _) = database.rsplit_once('/').unwrap();
    (format!("{base}/{name}"), brokers)
}
