//! The Redis store of the rate limits: GCRA in one Lua script (the same
//! computation as [`super::gcra::decide`], on Redis's own clock), so that
//! every instance shares one budget with one atomic round trip per request.
//!
//! An answer later than its timeout (`DZDESK_REDIS_TIMEOUT_MS`, default 50
//! ms) leaves that request to the process; an error or three late answers in
//! a row, and every request is decided in process. One warning is logged
//! when Redis goes away and one info line when it is back; meanwhile it is
//! retried at most once a second, so a dead Redis costs no request its
//! timeout.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, Ordering};
use std::sync::RwLock;
use std::time::Instant;

use redis::aio::MultiplexedConnection;

use super::gcra::{self, Decision};
use super::throttle::{Begin, Subject};
use std::time::Duration;

/// KEYS[1]: the budget's key. ARGV[1]: the emission interval (µs); ARGV[2]:
/// the limit. Returns {allowed, remaining, reset_at (µs), retry_after (µs)}.
const GCRA_LUA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local window = interval * limit
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
if new_tat - now > window then
  return {0, 0, tat, new_tat - window - now}
end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.floor((new_tat - now) / 1000) + 1)
return {1, math.floor((window - (new_tat - now)) / interval), new_tat, 0}
";

/// Brute-force throttling (`super::throttle`), the same transitions as
/// `Counter` (a ring of `STEPS + 1` step counts per key, fields s0..s15,
/// with st, the step it was brought up to; lu, locked until; lv, the
/// escalation level): KEYS are the subjects; per key, ARGV holds
/// max_failures, window, lock, max_lock, reset_on_success (4 + 1 numbers),
/// then ARGV[last] is the mode: 1 = begin (check every lock, then reserve a
/// failure on each), 2 = succeeded. Begin returns {1, (index, lock seconds)
/// of each key it locked...} or {0, key index, retry_after}. Seconds, on
/// Redis's clock.
const THROTTLE_LUA: &str = r"
local now = tonumber(redis.call('TIME')[1])
local mode = tonumber(ARGV[#ARGV])
local function arg(i, k) return tonumber(ARGV[(i - 1) * 5 + k]) end
local fields = {'st', 'lu', 'lv'}
for r = 0, 15 do fields[#fields + 1] = 's' .. r end
local function load(i)
  local v = redis.call('HMGET', KEYS[i], unpack(fields))
  local c = {st = tonumber(v[1] or '0'), lu = tonumber(v[2] or '0'), lv = tonumber(v[3] or '0'), s = {}, n = 0}
  for r = 0, 15 do c.s[r] = tonumber(v[4 + r] or '0') end
  local step = math.floor(now / math.max(math.floor(arg(i, 2) / 15), 1))
  if step > c.st then
    if step - c.st >= 16 then
      for r = 0, 15 do c.s[r] = 0 end
    else
      for x = c.st + 1, step do c.s[x % 16] = 0 end
    end
    c.st = step
  end
  for r = 0, 15 do c.n = c.n + c.s[r] end
  return c
end
local function save(i, c)
  local args = {'st', c.st, 'lu', c.lu, 'lv', c.lv}
  for r = 0, 15 do args[#args + 1] = 's' .. r; args[#args + 1] = c.s[r] end
  redis.call('HSET', KEYS[i], unpack(args))
  -- Kept while it counts: a window and a step after its last failure, or,
  -- once it has locked, a day past its lock's end (the escalation's memory,
  -- throttle::LEVEL_MEMORY_SECS); no longer, or a flood of typed emails
  -- would fill Redis.
  local ttl = arg(i, 2) + math.floor(arg(i, 2) / 15) + 1
  if c.lv > 0 then ttl = math.max(ttl, c.lu - now + 86400) end
  redis.call('EXPIRE', KEYS[i], ttl)
end
if mode == 2 then
  for i = 1, #KEYS do
    if arg(i, 5) == 1 then
      redis.call('DEL', KEYS[i])
    elseif redis.call('EXISTS', KEYS[i]) == 1 then
      local c = load(i)
      if c.n >= arg(i, 1) and c.lu > now then
        c.lu = 0
        c.lv = math.max(c.lv - 1, 0)
      end
      for back = 0, 15 do
        local r = (c.st - back) % 16
        if c.s[r] > 0 then c.s[r] = c.s[r] - 1; break end
      end
      save(i, c)
    end
  end
  return {1}
end
for i = 1, #KEYS do
  local lu = tonumber(redis.call('HGET', KEYS[i], 'lu') or '0')
  if lu > now then return {0, i, lu - now} end
end
local out = {1}
for i = 1, #KEYS do
  local maxf, lock, maxlock = arg(i, 1), arg(i, 3), arg(i, 4)
  local c = load(i)
  if c.n >= maxf then
    for r = 0, 15 do c.s[r] = 0 end
    c.n = 0
  end
  c.s[c.st % 16] = c.s[c.st % 16] + 1
  c.n = c.n + 1
  if c.n >= maxf then
    local d = lock * (2 ^ math.min(c.lv, 32))
    if d > maxlock then d = maxlock end
    if d < lock then d = lock end
    c.lu = now + d
    c.lv = c.lv + 1
    table.insert(out, i)
    table.insert(out, d)
  end
  save(i, c)
end
return out
";

/// Pause between attempts while Redis does not answer.
const RETRY_MICROS: i64 = 1_000_000;
/// Late answers in a row that mark Redis unavailable. One late answer (a
/// fork, a busy worker) decides only its own request in process: degrading
/// the whole instance on it would hand anyone who can slow one reply a
/// second of per-instance budgets.
const LATE_IN_A_ROW: u32 = 3;

pub struct RedisStore {
    client: redis::Client,
    conn: RwLock<Option<MultiplexedConnection>>,
    /// One connection attempt at a time: while Redis comes back, a burst of
    /// requests makes one attempt, not one each.
    connecting: tokio::sync::Mutex<()>,
    script: redis::Script,
    throttle: redis::Script,
    /// Key prefix (one key space per deployment, or per test).
    prefix: String,
    degraded: AtomicBool,
    /// Late answers since the last one in time.
    late: AtomicU32,
    /// While degraded: when Redis may be tried again (µs on a monotonic
    /// clock of ours).
    retry_at: AtomicI64,
    started: Instant,
    /// Slower than this is a failure (`DZDESK_REDIS_TIMEOUT_MS`).
    timeout: Duration,
}

impl RedisStore {
    /// `url`: `redis://host:port/db`. Connects lazily (a service whose Redis
    /// is down still starts, degraded).
    pub fn new(url: &str, prefix: &str, timeout: Duration) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| format!("not a Redis URL: {e}"))?;
        Ok(Self {
            client,
            conn: RwLock::new(None),
            connecting: tokio::sync::Mutex::new(()),
            script: redis::Script::new(GCRA_LUA),
            throttle: redis::Script::new(THROTTLE_LUA),
            prefix: prefix.to_owned(),
            degraded: AtomicBool::new(false),
            late: AtomicU32::new(0),
            retry_at: AtomicI64::new(0),
            started: Instant::now(),
            timeout,
        })
    }

    fn clock(&self) -> i64 {
        i64::try_from(self.started.elapsed().as_micros()).unwrap_or(i64::MAX)
    }

    pub fn degraded(&self) -> bool {
        self.degraded.load(Ordering::Acquire)
    }

    /// Runs a script on Redis within its timeout, or None: skipped
    /// while degraded and not yet due for a retry; a late answer leaves
    /// its request to the process; on an error, or [`LATE_IN_A_ROW`] late
    /// answers, the connection is dropped (a half-open one never errors)
    /// and the failure recorded. The caller checks the reply's shape.
    async fn invoke(&self, invocation: redis::ScriptInvocation<'_>) -> Option<Vec<i64>> {
        if self.degraded() && self.clock() < self.retry_at.load(Ordering::Acquire) {
            return None;
        }
        let attempt = async {
            let mut conn = self.connection().await?;
            let reply: Vec<i64> = invocation.invoke_async(&mut conn).await?;
            Ok::<_, redis::RedisError>(reply)
        };
        let why = match actix_web::rt::time::timeout(self.timeout, attempt).await {
            Ok(Ok(reply)) => {
                self.late.store(0, Ordering::Release);
                return Some(reply);
            }
            Ok(Err(e)) => format!("{e}"),
            Err(_) => {
                if self.late.fetch_add(1, Ordering::AcqRel) + 1 < LATE_IN_A_ROW {
                    return None;
                }
                format!(
                    "no answer within {} ms, {LATE_IN_A_ROW} times in a row",
                    self.timeout.as_millis()
                )
            }
        };
        self.late.store(0, Ordering::Release);
        self.drop_connection();
        self.failed(&why);
        None
    }

    /// The decision from Redis, or None when it cannot give one in time.
    pub async fn check(&self, key: &str, limit: u32) -> Option<Decision> {
        let limit = limit.max(1);
        let mut invocation = self.script.prepare_invoke();
        invocation
            .key(format!("{}{key}", self.prefix))
            .arg(gcra::interval(limit))
            .arg(limit);
        match self.invoke(invocation).await?.as_slice() {
            [allowed, remaining, reset_at, retry_after] => {
                self.recovered();
                Some(Decision {
                    allowed: *allowed == 1,
                    limit,
                    remaining: u32::try_from((*remaining).max(0)).unwrap_or(u32::MAX),
                    reset_at: *reset_at,
                    retry_after: *retry_after,
                })
            }
            _ => {
                self.failed("unexpected reply from the rate-limit script");
                None
            }
        }
    }

    /// [`super::throttle::Throttle::begin`] in Redis (`succeeded`: give
    /// back instead), or None when Redis cannot answer in time.
    pub async fn throttle(&self, subjects: &[Subject], succeeded: bool) -> Option<Begin> {
        let mut invocation = self.throttle.prepare_invoke();
        for s in subjects {
            invocation
                .key(format!("{}{}", self.prefix, s.key))
                .arg(s.policy.max_failures)
                .arg(s.policy.window_secs)
                .arg(s.policy.lock_secs)
                .arg(s.policy.max_lock_secs)
                .arg(i64::from(s.reset_on_success));
        }
        invocation.arg(if succeeded { 2 } else { 1 });
        let reply = self.invoke(invocation).await?;
        let index = |i: i64| usize::try_from(i - 1).ok().and_then(|i| subjects.get(i));
        let begin = match reply.as_slice() {
            [0, i, left, ..] => Begin::Locked {
                key: index(*i).map(|s| s.key.clone()).unwrap_or_default(),
                retry_after: *left,
            },
            [1, locked @ ..] => Begin::Allowed {
                shared: true,
                locked_now: locked
                    .chunks(2)
                    .filter_map(|pair| match pair {
                        [i, secs] => index(*i).map(|s| (s.key.clone(), *secs)),
                        _ => None,
                    })
                    .collect(),
            },
            _ => {
                self.failed("unexpected reply from the throttle script");
                return None;
            }
        };
        self.recovered();
        Some(begin)
    }

    fn drop_connection(&self) {
        if let Ok(mut c) = self.conn.write() {
            *c = None;
        }
    }

    fn current(&self) -> Option<MultiplexedConnection> {
        self.conn.read().ok().and_then(|c| c.clone())
    }

    async fn connection(&self) -> redis::RedisResult<MultiplexedConnection> {
        if let Some(c) = self.current() {
            return Ok(c);
        }
        let _one = self.connecting.lock().await;
        // Another request may have connected while this one waited.
        if let Some(c) = self.current() {
            return Ok(c);
        }
        let c = self.client.get_multiplexed_async_connection().await?;
        if let Ok(mut slot) = self.conn.write() {
            *slot = Some(c.clone());
        }
        Ok(c)
    }

    fn failed(&self, why: &str) {
        self.retry_at
            .store(self.clock() + RETRY_MICROS, Ordering::Release);
        if !self.degraded.swap(true, Ordering::AcqRel) {
            log::warn!(
                "rate limits: Redis unavailable ({why}); limiting in process until it answers"
            );
        }
    }

    fn recovered(&self) {
        if self.degraded.swap(false, Ordering::AcqRel) {
            log::info!("rate limits: Redis answers again; budgets are shared again");
        }
    }
}
