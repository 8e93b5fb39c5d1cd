//! Group commit: single statements of concurrent callers, each of which
//! would commit alone ([`super::commit_alone`]), sent as one statement: one
//! round trip, one executor start and one commit (one WAL flush) for all.
//!
//! Why: a refresh on PostgreSQL is one statement, and what it costs the
//! database is mostly the statement around its few rows. pgbench running
//! the rotation alone (prepared, 10 clients, this repository's schema) did
//! 7,378 rotations/s one per statement and 28,500/s eight per statement.
//!
//! How ([`super::Database::together`]): a caller queues its request and
//! waits, on its async task, holding neither a thread nor a connection.
//! While fewer than [`IN_FLIGHT`] leaders run, the request that finds the
//! queue without a free leader starts one: a blocking task that takes one
//! pooled connection and, until the queue is empty, takes every request
//! waiting ([`MAX_GROUP`] at most, in the order they came), sends them as
//! one statement (a request alone: its own statement) and answers each. So
//! a group is what came while the groups in flight ran: below saturation a
//! request is a group of one, sent at once; under load at most
//! [`IN_FLIGHT`] connections rotate for the whole instance.
//!
//! The rules of [`super::commit_alone`] hold for each request: one whose
//! caller gave up (its deadline, or it went away) before its group was sent
//! is left out: nothing done, as the 503 said. From the sending on its
//! caller waits for the outcome. A group the database refused (an error it
//! reported: the statement rolled back and changed nothing; a deadlock with
//! another instance's group, say) is sent again request by request, each
//! only if its caller still waits. A group that waited past `lock_timeout`
//! is not (each would wait as long again): each caller gets that error, a
//! 503, and nothing was done. Nor is a group whose outcome is unknown (the
//! connection failed): each caller gets that error, as a single statement's
//! caller would.

use std::any::{Any, TypeId};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::AtomicU8;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use diesel::result::{DatabaseErrorKind, Error};
use diesel::QueryResult;
use tokio::sync::oneshot;

use super::{AnyConnection, PoolObserver};

/// Requests of one group at most; the rest wait for the next.
pub const MAX_GROUP: usize = 64;
/// Leaders of one kind of request at once, each on a connection of its
/// own: while one waits for its commit, the next group is sent.
pub const IN_FLIGHT: usize = 2;

/// The statement of a group: one answer per request, in their order (None:
/// it matched nothing).
pub type Together<R, T> = fn(&mut AnyConnection, &[&R]) -> QueryResult<Vec<Option<T>>>;
/// The statement of one request.
pub type Alone<R, T> = fn(&mut AnyConnection, &R) -> QueryResult<Option<T>>;

/// What a caller is answered: its statement's outcome.
pub(super) type Answer<T> = QueryResult<Option<T>>;

/// The groups of one [`super::Database`], one per kind of request.
#[derive(Default)]
pub struct Groups {
    kinds: Mutex<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>,
}

impl Groups {
    /// The group of requests of type `R`. One kind, one pair of statements:
    /// the first caller's `together` and `alone` stay with it.
    pub(super) fn of<R, T>(&self, together: Together<R, T>, alone: Alone<R, T>) -> Arc<Group<R, T>>
    where
        R: Send + 'static,
        T: Send + 'static,
    {
        let new = || Group {
            queue: Mutex::new(Queue {
                waiting: VecDeque::new(),
                leading: 0,
            }),
            together,
            alone,
        };
        let mut kinds = self.kinds.lock().unwrap_or_else(PoisonError::into_inner);
        let kind = kinds
            .entry(TypeId::of::<Group<R, T>>())
            .or_insert_with(|| Arc::new(new()))
            .clone();
        drop(kinds);
        // Keyed by its own type: the downcast holds; a group apart otherwise.
        kind.downcast::<Group<R, T>>()
            .unwrap_or_else(|_| Arc::new(new()))
    }
}

pub(super) struct Group<R, T> {
    queue: Mutex<Queue<R, T>>,
    together: Together<R, T>,
    alone: Alone<R, T>,
}

struct Queue<R, T> {
    /// In the order they came.
    waiting: VecDeque<Member<R, T>>,
    /// Leaders started and not yet done ([`IN_FLIGHT`] at most).
    leading: usize,
}

/// A caller's request in the queue.
pub(super) struct Member<R, T> {
    pub request: R,
    /// Its caller's: whether it still waits ([`super::begin_commit_of`]).
    pub commitment: Arc<AtomicU8>,
    pub answer: oneshot::Sender<Answer<T>>,
}

impl<R, T> Member<R, T> {
    fn answer(self, done: Answer<T>) {
        // A caller that went away has no use for it.
        let _ = self.answer.send(done);
    }
}

impl<R, T> Group<R, T> {
    fn lock(&self) -> MutexGuard<'_, Queue<R, T>> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `member`; true when its caller is to start a leader (fewer
    /// than [`IN_FLIGHT`] run), counted as running from now.
    pub(super) fn enqueue(&self, member: Member<R, T>, observer: Option<&PoolObserver>) -> bool {
        let mut queue = self.lock();
        queue.waiting.push_back(member);
        if let Some(o) = observer {
            o.group_waiting.inc();
        }
        let start = queue.leading < IN_FLIGHT;
        queue.leading += usize::from(start);
        start
    }

    /// The next group, or None when nobody waits: then this leader is done
    /// (decided under the queue's lock, so a request that comes after it
    /// starts a leader of its own).
    fn next(&self, observer: Option<&PoolObserver>) -> Option<Vec<Member<R, T>>> {
        let mut queue = self.lock();
        if queue.waiting.is_empty() {
            queue.leading -= 1;
            return None;
        }
        let n = queue.waiting.len().min(MAX_GROUP);
        let group: Vec<_> = queue.waiting.drain(..n).collect();
        drop(queue);
        if let Some(o) = observer {
            o.group_waiting.sub(n as i64);
        }
        Some(group)
    }

    /// A leader's work on its connection: groups until nobody waits.
    /// Blocking.
    pub(super) fn lead(&self, conn: &mut AnyConnection, observer: Option<&PoolObserver>) {
        let mut leading = Leading(Some(self));
        while let Some(members) = self.next(observer) {
            let sent = send(conn, members, self.together, self.alone);
            if let (Some(o), true) = (observer, sent > 0) {
                o.group_size.observe(sent as f64);
            }
        }
        leading.0 = None;
    }

    /// A leader that got no connection: done. The callers waiting give up
    /// at their deadline (nothing done: the 503 is true), unless a leader
    /// started by a later request takes them first.
    pub(super) fn give_up_lead(&self) {
        self.lock().leading -= 1;
    }
}

/// A leader that panicked (a bug of ours) is done all the same: a later
/// request starts another, which takes the callers still waiting. Those in
/// the group it was sending see their answer dropped (an error).
struct Leading<'a, R, T>(Option<&'a Group<R, T>>);

impl<R, T> Drop for Leading<'_, R, T> {
    fn drop(&mut self) {
        if let Some(group) = self.0 {
            group.give_up_lead();
        }
    }
}

/// Sends `members` as one statement (`alone`, for one) and answers each;
/// how many it sent together (those whose callers still waited).
fn send<R, T>(
    conn: &mut AnyConnection,
    members: Vec<Member<R, T>>,
    together: Together<R, T>,
    alone: Alone<R, T>,
) -> usize {
    // [`super::commit_alone`]'s rule, per request: sent only if its caller
    // still waits; from then on it waits for the outcome.
    let mut live: Vec<Member<R, T>> = members
        .into_iter()
        .filter_map(
            |member| match super::begin_commit_of(Some(&member.commitment)) {
                Some(_) => Some(member),
                None => {
                    member.answer(Err(Error::RollbackTransaction));
                    None
                }
            },
        )
        .collect();
    let sent = live.len();
    let outcome = match live.as_slice() {
        [] => return 0,
        [one] => alone(conn, &one.request).map(|done| vec![done]),
        many => {
            let requests: Vec<&R> = many.iter().map(|m| &m.request).collect();
            together(conn, &requests)
        }
    };
    match outcome {
        Ok(rows) if rows.len() == live.len() => {
            for (member, row) in live.into_iter().zip(rows) {
                member.answer(Ok(row));
            }
        }
        Ok(rows) => {
            // A bug in `together`: what committed is not known per request.
            let e = format!("a group of {} had {} answers", live.len(), rows.len());
            for member in live {
                member.answer(Err(Error::QueryBuilderError(e.clone().into())));
            }
        }
        Err(e) if live.len() > 1 && rolled_back(&e) => {
            // Nothing was done: each caller may give up again, and those
            // that still wait are sent alone.
            for member in &live {
                super::end_commit_unused_of(Some(&member.commitment));
            }
            for member in live.drain(..) {
                match super::begin_commit_of(Some(&member.commitment)) {
                    Some(_) => {
                        let done = alone(conn, &member.request);
                        member.answer(done);
                    }
                    None => member.answer(Err(Error::RollbackTransaction)),
                }
            }
        }
        Err(e) => {
            for member in live {
                member.answer(Err(copy_of(&e)));
            }
        }
    }
    sent
}

/// Whether the database refused the statement and it rolled back (it was
/// autocommitted): an error it reported, but not a connection that failed
/// (the outcome unknown) nor a wait it gave up on (`lock_timeout`: sending
/// each request again would wait as long again, each).
fn rolled_back(e: &Error) -> bool {
    match e {
        Error::DatabaseError(
            DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
            _,
        ) => false,
        Error::DatabaseError(..) => !super::cause_is_unavailable(e),
        _ => false,
    }
}

/// The same error for another caller (diesel's errors are not `Clone`):
/// kind and message of a database error (so a lock timeout or a closed
/// connection is still told apart: a 503), else its text.
fn copy_of(e: &Error) -> Error {
    match e {
        Error::DatabaseError(kind, info) => {
            Error::DatabaseError(*kind, Box::new(info.message().to_owned()))
        }
        other => Error::QueryBuilderError(other.to_string().into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{ABANDONED, WORKING};
    use diesel::connection::SimpleConnection;
    use diesel::sql_types::{BigInt, Text};
    use diesel::RunQueryDsl;
    use std::sync::atomic::Ordering;

    /// A real SQLite connection with a table `sent` that records each
    /// statement's requests.
    fn conn() -> AnyConnection {
        use diesel::Connection;
        let mut lite = diesel::SqliteConnection::establish(":memory:").unwrap();
        lite.batch_execute("CREATE TABLE sent (statement INTEGER, request TEXT)")
            .unwrap();
        AnyConnection::Sqlite(lite)
    }

    fn record(conn: &mut AnyConnection, requests: &[&String]) -> QueryResult<()> {
        let AnyConnection::Sqlite(lite) = conn else {
            unreachable!()
        };
        let statement = diesel::sql_query("SELECT count(DISTINCT statement) AS n FROM sent")
            .get_result::<Count>(lite)?
            .n;
        for request in requests {
            if request.as_str() == "refused" {
                // An error the database reports: nothing of this statement
                // is kept (it rolled back).
                diesel::sql_query("SELECT * FROM no_such_table").execute(lite)?;
            }
        }
        for request in requests {
            diesel::sql_query("INSERT INTO sent VALUES (?, ?)")
                .bind::<BigInt, _>(statement)
                .bind::<Text, _>(request.as_str())
                .execute(lite)?;
        }
        Ok(())
    }

    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }

    fn together(conn: &mut AnyConnection, group: &[&String]) -> QueryResult<Vec<Option<usize>>> {
        record(conn, group)?;
        Ok(group.iter().map(|r| Some(r.len())).collect())
    }

    fn alone(conn: &mut AnyConnection, request: &String) -> QueryResult<Option<usize>> {
        record(conn, &[request])?;
        Ok(Some(request.len()))
    }

    fn sent(conn: &mut AnyConnection) -> Vec<(i64, String)> {
        #[derive(diesel::QueryableByName)]
        struct Row {
            #[diesel(sql_type = BigInt)]
            statement: i64,
            #[diesel(sql_type = Text)]
            request: String,
        }
        let AnyConnection::Sqlite(lite) = conn else {
            unreachable!()
        };
        diesel::sql_query("SELECT statement, request FROM sent ORDER BY rowid")
            .load::<Row>(lite)
            .unwrap()
            .into_iter()
            .map(|r| (r.statement, r.request))
            .collect()
    }

    type Waiting = oneshot::Receiver<Answer<usize>>;

    fn member(request: &str, state: u8) -> (Member<String, usize>, Waiting) {
        let (answer, answered) = oneshot::channel();
        let member = Member {
            request: request.to_owned(),
            commitment: Arc::new(AtomicU8::new(state)),
            answer,
        };
        (member, answered)
    }

    #[test]
    fn requests_still_waited_for_are_sent_in_one_statement_and_the_others_not_at_all() {
        let mut conn = conn();
        let (a, mut a_rx) = member("a", WORKING);
        let (gone, mut gone_rx) = member("gone", ABANDONED);
        let (ccc, mut ccc_rx) = member("ccc", WORKING);
        let a_commitment = a.commitment.clone();
        assert_eq!(send(&mut conn, vec![a, gone, ccc], together, alone), 2);
        assert_eq!(sent(&mut conn), [(0, "a".into()), (0, "ccc".into())]);
        assert_eq!(a_rx.try_recv().unwrap().unwrap(), Some(1));
        assert_eq!(ccc_rx.try_recv().unwrap().unwrap(), Some(3));
        // Left out: told so (its caller answered 503 already).
        assert!(matches!(
            gone_rx.try_recv().unwrap(),
            Err(Error::RollbackTransaction)
        ));
        // Sent: its caller waits for the outcome from then on.
        assert_eq!(a_commitment.load(Ordering::Acquire), crate::db::COMMITTING);
    }

    #[test]
    fn a_group_the_database_refused_is_sent_again_one_by_one() {
        let mut conn = conn();
        let (a, mut a_rx) = member("a", WORKING);
        let (refused, mut refused_rx) = member("refused", WORKING);
        let (bb, mut bb_rx) = member("bb", WORKING);
        assert_eq!(send(&mut conn, vec![a, refused, bb], together, alone), 3);
        // The group's statement left nothing; then each alone, the refused
        // one failing on its own.
        assert_eq!(sent(&mut conn), [(0, "a".into()), (1, "bb".into())]);
        assert_eq!(a_rx.try_recv().unwrap().unwrap(), Some(1));
        assert_eq!(bb_rx.try_recv().unwrap().unwrap(), Some(2));
        assert!(matches!(
            refused_rx.try_recv().unwrap(),
            Err(Error::DatabaseError(..))
        ));
    }

    #[test]
    fn a_request_alone_is_sent_as_its_own_statement() {
        let mut conn = conn();
        let (one, mut one_rx) = member("one", WORKING);
        assert_eq!(send(&mut conn, vec![one], together, alone), 1);
        assert_eq!(sent(&mut conn), [(0, "one".into())]);
        assert_eq!(one_rx.try_recv().unwrap().unwrap(), Some(3));
    }

    #[test]
    fn a_lock_timeout_is_not_sent_again_and_each_caller_gets_it() {
        let e = Error::DatabaseError(
            DatabaseErrorKind::Unknown,
            Box::new("canceling statement due to lock timeout".to_owned()),
        );
        assert!(!rolled_back(&e));
        let copy = copy_of(&e);
        assert!(crate::db::is_unavailable(&anyhow::Error::from(copy)));
        let closed = Error::DatabaseError(
            DatabaseErrorKind::ClosedConnection,
            Box::new("x".to_owned()),
        );
        assert!(!rolled_back(&closed));
        let deadlock = Error::DatabaseError(
            DatabaseErrorKind::Unknown,
            Box::new("deadlock detected".to_owned()),
        );
        assert!(rolled_back(&deadlock));
    }

    #[test]
    fn a_leader_is_started_for_at_most_in_flight_and_done_only_when_nobody_waits() {
        let groups = Groups::default();
        let group = groups.of::<String, usize>(together, alone);
        let mut started = 0;
        let mut receivers = Vec::new();
        for i in 0..5 {
            let (m, rx) = member(&"x".repeat(i + 1), WORKING);
            receivers.push(rx);
            started += usize::from(group.enqueue(m, None));
        }
        assert_eq!(started, IN_FLIGHT);
        let mut conn = conn();
        // One leader takes all that wait, then is done.
        group.lead(&mut conn, None);
        assert_eq!(group.lock().leading, IN_FLIGHT - 1);
        assert!(group.lock().waiting.is_empty());
        for (i, mut rx) in receivers.into_iter().enumerate() {
            assert_eq!(rx.try_recv().unwrap().unwrap(), Some(i + 1));
        }
        // The other finds nobody: done.
        group.lead(&mut conn, None);
        assert_eq!(group.lock().leading, 0);
        let (m, _rx) = member("y", WORKING);
        assert!(group.enqueue(m, None), "a request after that starts one");
    }
}
