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
//! only if its caller still waits and its deadline has not passed (else
//! 503, nothing done). A group that waited past `lock_timeout`, or was
//! cancelled, is not (each would wait as long again): each caller gets
//! that error, a 503, and nothing was done. Nor is a group whose outcome
//! is unknown (the connection failed): each caller gets that error, as a
//! single statement's caller would, and the leader gives the connection
//! back (r2d2 drops a broken one) and takes another while callers wait.
//! A row that the group read back but that does not load (a role this
//! build does not know) is its own caller's error, not the group's.
//!
//! What a group shares: a row one of its requests needs that another
//! transaction holds locked makes the whole group wait, up to
//! `lock_timeout`, and then each of its callers gets 503 (nothing done; a
//! retry succeeds). Our own transactions hold a token's row for one
//! statement at most (a concurrent rotation of the same token); only a long
//! transaction from outside the service (an operator's) holds one longer.
//!
//! Bounds: [`MAX_WAITING`] requests queue at most; beyond, a request is
//! answered 503 at once (the database is too slow for the load: a stalled
//! commit keeps both leaders, and callers time out faster than they are
//! taken). Those whose callers gave up are dropped from a full queue first.
//! Leaders are at most [`IN_FLIGHT`] and always leave a connection of the
//! pool to the rest of the service (none with a pool of one: then each
//! request is its own statement on its own connection).

use std::any::{Any, TypeId};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use diesel::result::{DatabaseErrorKind, Error};
use diesel::QueryResult;
use tokio::sync::oneshot;

use super::{AnyConnection, PoolObserver};

/// Requests of one group at most; the rest wait for the next.
pub const MAX_GROUP: usize = 64;
/// Requests queued at most, per kind of request.
pub const MAX_WAITING: usize = 4096;
/// Leaders of one kind of request at once, each on a connection of its
/// own: while one waits for its commit, the next group is sent.
pub const IN_FLIGHT: usize = 2;

/// The statement of a group: one answer per request, in their order (None:
/// it matched nothing; an error: what it read back for that request did
/// not load). Err: the statement failed.
pub type Together<R, T> = fn(&mut AnyConnection, &[&R]) -> QueryResult<Vec<QueryResult<Option<T>>>>;
/// The statement of one request.
pub type Alone<R, T> = fn(&mut AnyConnection, &R) -> QueryResult<Option<T>>;

/// What a caller is answered: its statement's outcome, or (Err) that it
/// was not sent, for a reason of the database's (a 503).
pub(super) type Answer<T> = Result<QueryResult<Option<T>>, super::RunError>;

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
    /// When its caller's deadline passes ([`super::Database::together`]),
    /// and that deadline.
    pub deadline: Instant,
    pub timeout: Duration,
}

impl<R, T> Member<R, T> {
    fn answer(self, done: QueryResult<Option<T>>) {
        // A caller that went away has no use for it.
        let _ = self.answer.send(Ok(done));
    }

    /// Its caller gave up (503) or went away: nothing is to be done for it.
    fn gone(&self) -> bool {
        self.answer.is_closed() || self.commitment.load(Ordering::Acquire) == super::ABANDONED
    }

    /// Whether it may be sent: its caller still waits, and from now on
    /// waits for the outcome ([`super::commit_alone`]'s rule). Else it is
    /// answered (it was not sent: 503) and dropped.
    fn send_now(self) -> Option<Self> {
        if self.answer.is_closed() {
            super::abandon(&self.commitment);
            return None;
        }
        match super::begin_commit_of(Some(&self.commitment)) {
            Some(_) => Some(self),
            None => {
                let timeout = self.timeout;
                let _ = self.answer.send(Err(super::RunError::TimedOut(timeout)));
                None
            }
        }
    }
}

impl<R, T> Group<R, T> {
    fn lock(&self) -> MutexGuard<'_, Queue<R, T>> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `member`: Ok(true) when its caller is to start a leader
    /// (fewer than `leaders` run), counted as running from now. Err: the
    /// queue is full ([`MAX_WAITING`]).
    pub(super) fn enqueue(
        &self,
        member: Member<R, T>,
        leaders: usize,
        observer: Option<&PoolObserver>,
    ) -> Result<bool, Member<R, T>> {
        let mut queue = self.lock();
        if queue.waiting.len() >= MAX_WAITING {
            // Every caller waits as long: those that gave up are in front
            // (one that went away may be further in; taken, it is skipped).
            let mut dropped = 0;
            while queue.waiting.front().is_some_and(Member::gone) {
                queue.waiting.pop_front();
                dropped += 1;
            }
            if let Some(o) = observer {
                o.group_waiting.sub(dropped);
            }
            if queue.waiting.len() >= MAX_WAITING {
                return Err(member);
            }
        }
        queue.waiting.push_back(member);
        if let Some(o) = observer {
            o.group_waiting.inc();
        }
        let start = queue.leading < leaders;
        queue.leading += usize::from(start);
        Ok(start)
    }

    /// Whether a leader without a connection is done: nobody waits (but
    /// callers that gave up, dropped). Decided under the queue's lock, so
    /// a request that comes after it starts a leader of its own.
    pub(super) fn done_if_idle(&self, observer: Option<&PoolObserver>) -> bool {
        let mut queue = self.lock();
        queue.prune(observer);
        let idle = queue.waiting.is_empty();
        if idle {
            queue.lead_ends();
        }
        idle
    }

    /// The next group, or None when nobody waits: then this leader is done
    /// (decided under the queue's lock, as [`Group::done_if_idle`]).
    fn next(&self, observer: Option<&PoolObserver>) -> Option<Vec<Member<R, T>>> {
        let mut queue = self.lock();
        if queue.waiting.is_empty() {
            queue.lead_ends();
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

    /// A leader's work on its connection: groups until nobody waits (true:
    /// done, no longer leading), or until the connection failed (false:
    /// still leading, it needs another). Blocking.
    pub(super) fn lead(&self, conn: &mut AnyConnection, observer: Option<&PoolObserver>) -> bool {
        while let Some(members) = self.next(observer) {
            if send(conn, members, self.together, self.alone, observer) {
                return false;
            }
        }
        true
    }
}

impl<R, T> Queue<R, T> {
    /// A leader is done. Never below zero: a miscount (a bug) would leave
    /// one leader too many, not none ever again.
    fn lead_ends(&mut self) {
        match self.leading.checked_sub(1) {
            Some(leading) => self.leading = leading,
            None => log::error!("a group's leader ended that was not counted"),
        }
    }

    /// Drops the requests whose callers gave up or went away.
    fn prune(&mut self, observer: Option<&PoolObserver>) {
        let before = self.waiting.len();
        self.waiting.retain(|member| !member.gone());
        if let Some(o) = observer {
            o.group_waiting.sub((before - self.waiting.len()) as i64);
        }
    }
}

/// A leader, from before its blocking task starts to its end: dropped while
/// still leading (a panic, a task never run), it is done all the same, and
/// a later request starts another, which takes the callers still waiting.
/// Those in the group it was sending see their answer dropped (an error).
pub(super) struct Leading<R, T>(pub Option<Arc<Group<R, T>>>);

impl<R, T> Drop for Leading<R, T> {
    fn drop(&mut self) {
        if let Some(group) = self.0.take() {
            group.lock().lead_ends();
        }
    }
}

/// Sends `members` as one statement (`alone`, for one) and answers each;
/// whether the connection failed (the outcome unknown). The group's size
/// (those whose callers still waited) is counted before anyone is answered.
fn send<R, T>(
    conn: &mut AnyConnection,
    members: Vec<Member<R, T>>,
    together: Together<R, T>,
    alone: Alone<R, T>,
    observer: Option<&PoolObserver>,
) -> bool {
    // [`super::commit_alone`]'s rule, per request: sent only if its caller
    // still waits; from then on it waits for the outcome.
    let live: Vec<Member<R, T>> = members.into_iter().filter_map(Member::send_now).collect();
    if let (Some(o), false) = (observer, live.is_empty()) {
        o.group_size.observe(live.len() as f64);
    }
    let outcome = match live.as_slice() {
        [] => return false,
        [one] => alone(conn, &one.request).map(|done| vec![Ok(done)]),
        many => {
            let requests: Vec<&R> = many.iter().map(|m| &m.request).collect();
            together(conn, &requests)
        }
    };
    match outcome {
        Ok(rows) if rows.len() == live.len() => {
            for (member, row) in live.into_iter().zip(rows) {
                member.answer(row);
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
            // that still wait, within their deadline, are sent alone.
            for member in &live {
                super::end_commit_unused_of(Some(&member.commitment));
            }
            let mut members = live.into_iter();
            while let Some(member) = members.next() {
                if Instant::now() >= member.deadline {
                    super::abandon(&member.commitment);
                }
                let Some(member) = member.send_now() else {
                    continue;
                };
                let done = alone(conn, &member.request);
                if let Err(e) = &done {
                    if connection_failed(e) {
                        // The rest are not sent on a dead connection: 503,
                        // nothing done for them.
                        for rest in members.by_ref() {
                            rest.answer(Err(copy_of(e)));
                        }
                        member.answer(done);
                        return true;
                    }
                }
                member.answer(done);
            }
        }
        Err(e) => {
            let failed = connection_failed(&e);
            for member in live {
                member.answer(Err(copy_of(&e)));
            }
            return failed;
        }
    }
    false
}

/// The connection failed under the statement: its outcome is unknown.
fn connection_failed(e: &Error) -> bool {
    matches!(
        e,
        Error::DatabaseError(
            DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
            _,
        )
    )
}

/// Whether the database refused the statement and it rolled back (it was
/// autocommitted): an error it reported, but not a connection that failed
/// (the outcome unknown) nor a wait it gave up on or a cancel
/// (`lock_timeout`, `statement_timeout`, an operator's cancel: sending each
/// request again would wait as long again, each).
fn rolled_back(e: &Error) -> bool {
    match e {
        Error::DatabaseError(_, info) if info.message().starts_with("canceling statement") => false,
        Error::DatabaseError(..) => !connection_failed(e) && !super::cause_is_unavailable(e),
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
    use std::time::{Duration, Instant};

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

    fn together(
        conn: &mut AnyConnection,
        group: &[&String],
    ) -> QueryResult<Vec<QueryResult<Option<usize>>>> {
        record(conn, group)?;
        Ok(group.iter().map(|r| Ok(Some(r.len()))).collect())
    }

    fn alone(conn: &mut AnyConnection, request: &String) -> QueryResult<Option<usize>> {
        if request.as_str() == "dead" {
            // The connection failed under it.
            return Err(Error::DatabaseError(
                DatabaseErrorKind::ClosedConnection,
                Box::new("server closed the connection unexpectedly".to_owned()),
            ));
        }
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
            deadline: Instant::now() + TIMEOUT,
            timeout: TIMEOUT,
        };
        (member, answered)
    }

    const TIMEOUT: Duration = Duration::from_secs(60);

    /// The answer a caller got: its statement's outcome.
    fn outcome(rx: &mut Waiting) -> QueryResult<Option<usize>> {
        rx.try_recv().expect("answered").expect("sent")
    }

    #[test]
    fn requests_still_waited_for_are_sent_in_one_statement_and_the_others_not_at_all() {
        let mut conn = conn();
        let (a, mut a_rx) = member("a", WORKING);
        let (gone, mut gone_rx) = member("gone", ABANDONED);
        let (ccc, mut ccc_rx) = member("ccc", WORKING);
        let a_commitment = a.commitment.clone();
        assert!(!send(&mut conn, vec![a, gone, ccc], together, alone, None));
        assert_eq!(sent(&mut conn), [(0, "a".into()), (0, "ccc".into())]);
        assert_eq!(outcome(&mut a_rx).unwrap(), Some(1));
        assert_eq!(outcome(&mut ccc_rx).unwrap(), Some(3));
        // Left out: told so (its caller answered 503 already).
        assert!(matches!(
            gone_rx.try_recv().unwrap(),
            Err(crate::db::RunError::TimedOut(_))
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
        assert!(!send(
            &mut conn,
            vec![a, refused, bb],
            together,
            alone,
            None
        ));
        // The group's statement left nothing; then each alone, the refused
        // one failing on its own.
        assert_eq!(sent(&mut conn), [(0, "a".into()), (1, "bb".into())]);
        assert_eq!(outcome(&mut a_rx).unwrap(), Some(1));
        assert_eq!(outcome(&mut bb_rx).unwrap(), Some(2));
        assert!(matches!(
            outcome(&mut refused_rx),
            Err(Error::DatabaseError(..))
        ));
    }

    #[test]
    fn a_refused_group_is_not_sent_again_for_callers_past_their_deadline_or_gone() {
        let mut conn = conn();
        let (mut late, mut late_rx) = member("late", WORKING);
        late.deadline = Instant::now();
        let (gone, gone_rx) = member("gone", WORKING);
        let gone_commitment = gone.commitment.clone();
        let (refused, _refused_rx) = member("refused", WORKING);
        let (on_time, mut on_time_rx) = member("on_time", WORKING);
        drop(gone_rx);
        // Its caller went away before the group was taken: left out.
        let members = vec![late, gone, refused, on_time];
        assert!(!send(&mut conn, members, together, alone, None));
        assert_eq!(gone_commitment.load(Ordering::Acquire), ABANDONED);
        assert_eq!(sent(&mut conn), [(0, "on_time".into())]);
        // 503: nothing was done for it.
        assert!(matches!(
            late_rx.try_recv().unwrap(),
            Err(crate::db::RunError::TimedOut(_))
        ));
        assert_eq!(outcome(&mut on_time_rx).unwrap(), Some(7));
    }

    #[test]
    fn a_connection_that_fails_while_a_refused_group_is_sent_again_ends_the_retries() {
        let mut conn = conn();
        let (a, mut a_rx) = member("a", WORKING);
        let (refused, _refused_rx) = member("refused", WORKING);
        let (dead, mut dead_rx) = member("dead", WORKING);
        let (after, mut after_rx) = member("after", WORKING);
        // True: the leader takes another connection.
        assert!(send(
            &mut conn,
            vec![a, refused, dead, after],
            together,
            alone,
            None
        ));
        assert_eq!(sent(&mut conn), [(0, "a".into())]);
        assert_eq!(outcome(&mut a_rx).unwrap(), Some(1));
        let unavailable = |e: Error| crate::db::is_unavailable(&anyhow::Error::from(e));
        assert!(unavailable(outcome(&mut dead_rx).unwrap_err()));
        // Not sent on the dead connection: 503, nothing done.
        assert!(unavailable(outcome(&mut after_rx).unwrap_err()));
    }

    #[test]
    fn a_request_alone_is_sent_as_its_own_statement() {
        let mut conn = conn();
        let (one, mut one_rx) = member("one", WORKING);
        assert!(!send(&mut conn, vec![one], together, alone, None));
        assert_eq!(sent(&mut conn), [(0, "one".into())]);
        assert_eq!(outcome(&mut one_rx).unwrap(), Some(3));
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
        assert!(!rolled_back(&closed) && connection_failed(&closed));
        let cancelled = Error::DatabaseError(
            DatabaseErrorKind::Unknown,
            Box::new("canceling statement due to statement timeout".to_owned()),
        );
        assert!(!rolled_back(&cancelled));
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
            started += usize::from(group.enqueue(m, IN_FLIGHT, None).ok().unwrap());
        }
        assert_eq!(started, IN_FLIGHT);
        let mut conn = conn();
        // One leader takes all that wait, then is done.
        assert!(group.lead(&mut conn, None));
        assert_eq!(group.lock().leading, IN_FLIGHT - 1);
        assert!(group.lock().waiting.is_empty());
        for (i, mut rx) in receivers.into_iter().enumerate() {
            assert_eq!(outcome(&mut rx).unwrap(), Some(i + 1));
        }
        // The other finds nobody: done.
        assert!(group.lead(&mut conn, None));
        assert_eq!(group.lock().leading, 0);
        let (m, _rx) = member("y", WORKING);
        assert_eq!(
            group.enqueue(m, IN_FLIGHT, None).ok(),
            Some(true),
            "a request after that starts one"
        );
    }

    #[test]
    fn a_full_queue_drops_callers_that_gave_up_and_else_refuses() {
        let groups = Groups::default();
        let group = groups.of::<String, usize>(together, alone);
        let mut receivers = Vec::new();
        for _ in 0..MAX_WAITING {
            let (m, rx) = member("x", WORKING);
            receivers.push(rx);
            assert!(group.enqueue(m, 0, None).is_ok());
        }
        let (m, _rx) = member("one too many", WORKING);
        assert!(group.enqueue(m, 0, None).is_err(), "full");
        // In front, two callers give up and one goes away: room for three.
        // One gone further in is not looked for (it is skipped when taken).
        drop(receivers.remove(100));
        {
            let queue = group.lock();
            queue.waiting[0]
                .commitment
                .store(ABANDONED, Ordering::Release);
            queue.waiting[1]
                .commitment
                .store(ABANDONED, Ordering::Release);
        }
        drop(receivers.remove(2));
        for _ in 0..3 {
            let (m, rx) = member("y", WORKING);
            receivers.push(rx);
            assert!(group.enqueue(m, 0, None).is_ok());
        }
        let (m, _rx) = member("z", WORKING);
        assert!(group.enqueue(m, 0, None).is_err(), "full again");
        assert_eq!(group.lock().waiting.len(), MAX_WAITING);
        // Nobody leads (0 leaders allowed): a leader without a connection
        // is not done while callers wait.
        assert!(!group.done_if_idle(None));
    }
}
