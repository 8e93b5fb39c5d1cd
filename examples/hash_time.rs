//! The time of one sign-in's argon2 verification (used by `bench/run.sh`'s
//! logins scenario, which compares logins/s with `workers / hash time`).
//!
//! Uses the service's own code, not a copy of its parameters: the PHC hash
//! is made by `auth::password::hash_password` (argon2id, m=19456 KiB, t=2,
//! p=1) and verified by `auth::verifier::verify_with` with memory reused
//! across calls, as the argon2 workers of `auth::verifier` do on every
//! sign-in. 2 warm-ups, then SAMPLES (default 20) timed verifications, one
//! after another on this thread. Prints one line:
//! `hash_ms=<median> min_ms=... max_ms=... samples=20 params=m=19456,t=2,p=1
//! workers=<the server's argon2 workers: one per core> argon2_limit_per_s=<workers / median>`.
//!
//! cargo run --release --example hash_time

use std::time::{Duration, Instant};

use dzdesk_auth::auth::password::{self, M_COST_KIB, P_COST, T_COST};
use dzdesk_auth::auth::verifier::verify_with;
use dzdesk_auth::domain::{NewPassword, Password};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const WARM_UPS: usize = 2;

fn main() -> Result<(), BoxError> {
    let samples: usize = match std::env::var("SAMPLES") {
        Ok(s) => s.parse()?,
        Err(_) => 20,
    };
    if samples == 0 {
        return Err("SAMPLES must be at least 1".into());
    }
    let raw = "bench-hash-time-password".to_owned();
    let phc = password::hash_password(&NewPassword::parse(raw.clone())?)?;
    let params = format!("m={M_COST_KIB},t={T_COST},p={P_COST}");
    if !phc.starts_with(&format!("$argon2id$v=19${params}$")) {
        return Err(format!("unexpected hash parameters: {phc}").into());
    }
    let password = Password::new(raw);
    // One worker's memory, reused by every verification (as in the pool).
    let mut memory = Vec::new();
    for _ in 0..WARM_UPS {
        if !verify_with(&password, &phc, &mut memory) {
            return Err("the right password did not verify".into());
        }
    }
    let mut times: Vec<Duration> = Vec::with_capacity(samples);
    for _ in 0..samples {
        let started = Instant::now();
        let ok = verify_with(&password, &phc, &mut memory);
        times.push(started.elapsed());
        if !ok {
            return Err("the right password did not verify".into());
        }
    }
    times.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mid = times.len() / 2;
    let median = if times.len() % 2 == 0 {
        (ms(times[mid - 1]) + ms(times[mid])) / 2.0
    } else {
        ms(times[mid])
    };
    // As `startup` sizes the pool: one argon2 worker per core.
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    println!(
        "hash_ms={median:.2} min_ms={:.2} max_ms={:.2} samples={samples} params={params} \
         workers={workers} argon2_limit_per_s={:.1}",
        ms(times[0]),
        ms(times[times.len() - 1]),
        workers as f64 * 1000.0 / median
    );
    Ok(())
}
