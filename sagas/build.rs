//! Rebuilds when a migration is added, so `sqlx::migrate!` embeds it.

fn main() {
    for domain in ["balance", "points", "coupons"] {
        println!("cargo:rerun-if-changed=../migrations/{domain}");
    }
}
