//! Password verification on a small fixed pool of argon2 workers.
//!
//! A sign-in flood used to run argon2 on every blocking thread at once, each
//! with its own 19 MiB block (4 GB of RSS at 150 connections), while holding
//! a pooled database connection. Here one worker per core verifies, each
//! reusing its own memory, behind a bounded queue: a request that finds the
//! queue full is refused at once ([`Busy`]), before it counts as a guess.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};

use argon2::{Algorithm, Argon2, Block, Params, PasswordHash, Version};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use crate::auth::password;
use crate::domain::Password;
use crate::tokens;

/// The queue is full: answer at once (503), and count no guess.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many sign-ins at once")]
pub struct Busy;

/// A place in the queue, taken before anything else is done.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
}

struct Job {
    password: Password,
    /// None: an unknown email, checked against the dummy hash (same cost).
    phc: Option<String>,
    reply: oneshot::Sender<bool>,
    _slot: Slot,
}

pub struct VerifierPool {
    jobs: SyncSender<Job>,
    slots: Arc<Semaphore>,
}

impl VerifierPool {
    /// `workers` threads (one per core is right: argon2 is pure CPU) and
    /// room for `queue` more waiting requests.
    pub fn new(workers: usize, queue: usize) -> std::io::Result<Self> {
        let workers = workers.max(1);
        let capacity = workers + queue;
        let (jobs, rx) = sync_channel::<Job>(capacity);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..workers {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || work(&rx))?;
        }
        Ok(Self {
            jobs,
            slots: Arc::new(Semaphore::new(capacity)),
        })
    }

    /// A place in the queue, or [`Busy`] at once.
    pub fn reserve(&self) -> Result<Slot, Busy> {
        self.slots
            .clone()
            .try_acquire_owned()
            .map(|p| Slot { _permit: p })
            .map_err(|_| Busy)
    }

    /// Checks `password` against `phc` (None: against the dummy hash,
    /// always false) on a worker. False on any failure.
    pub async fn verify(&self, slot: Slot, password: Password, phc: Option<String>) -> bool {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            password,
            phc,
            reply,
            _slot: slot,
        };
        // Never full: the channel holds as many jobs as there are slots.
        if self.jobs.try_send(job).is_err() {
            return false;
        }
        answer.await.unwrap_or(false)
    }
}

fn work(rx: &Mutex<Receiver<Job>>) {
    // Reused across verifications: the pool's whole argon2 memory.
    let mut memory: Vec<Block> = Vec::new();
    loop {
        let job = match rx.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else {
            return; // the pool is gone
        };
        let Job {
            password,
            phc,
            reply,
            _slot: slot,
        } = job;
        let ok = match &phc {
            Some(phc) => verify_with(&password, phc, &mut memory),
            None => {
                let _ = verify_with(&password, password::dummy_hash(), &mut memory);
                false
            }
        };
        // The place in the queue is free before the answer leaves.
        drop(slot);
        let _ = reply.send(ok);
    }
}

/// argon2 verification into caller-owned memory: the PHC string's own
/// algorithm, version and parameters, and a constant-time comparison.
pub fn verify_with(password: &Password, phc: &str, memory: &mut Vec<Block>) -> bool {
    let Ok(hash) = PasswordHash::new(phc) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (&hash.salt, &hash.hash) else {
        return false;
    };
    let Ok(params) = Params::try_from(&hash) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(hash.algorithm.as_str()) else {
        return false;
    };
    let version = match hash.version.map(Version::try_from).transpose() {
        Ok(v) => v.unwrap_or_default(),
        Err(_) => return false,
    };
    let blocks = params.block_count();
    if memory.len() < blocks {
        memory.resize(blocks, Block::new());
    }
    let expected = expected.as_ref();
    let mut out = vec![0u8; expected.len()];
    let ok = Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(
            password.expose().as_bytes(),
            salt.as_ref(),
            &mut out,
            &mut memory[..blocks],
        )
        .is_ok();
    ok && tokens::constant_time_eq(&out, expected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::NewPassword;

    #[test]
    fn reused_memory_verifies_like_the_crate_does() {
        let p = NewPassword::parse("correct horse battery".into()).unwrap();
        let phc = password::hash_password(&p).unwrap();
        let mut memory = Vec::new();
        assert!(verify_with(p.as_password(), &phc, &mut memory));
        assert!(!verify_with(
            &Password::new("wrong horse battery".into()),
            &phc,
            &mut memory
        ));
        assert!(
            verify_with(p.as_password(), &phc, &mut memory),
            "memory reused"
        );
        assert!(!verify_with(p.as_password(), "not a hash", &mut memory));
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once() {
        let pool = VerifierPool::new(1, 1).unwrap();
        let a = pool.reserve().unwrap();
        let _b = pool.reserve().unwrap();
        assert_eq!(pool.reserve().err(), Some(Busy));
        let p = NewPassword::parse("correct horse battery".into()).unwrap();
        let phc = password::hash_password(&p).unwrap();
        assert!(
            pool.verify(a, Password::new("correct horse battery".into()), Some(phc))
                .await
        );
        assert!(pool.reserve().is_ok(), "the slot came back");
        let c = pool.reserve().unwrap();
        assert!(
            !pool
                .verify(c, Password::new("correct horse battery".into()), None)
                .await
        );
    }
}
