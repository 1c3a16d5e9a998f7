//! The Lua scripts that keep multi-key transitions atomic.
//!
//! Stream entries carry the fields `j` (the stable job id), `p` (the JSON payload), `a` (attempts
//! already spent) and `m` (max attempts). Delayed jobs are JSON arrays `[j, p, a, m]` in a sorted
//! set scored by due time in ms. Dead entries add `e` (last error) and `t` (ms when it died).

use redis::Script;

/// Ends a failed attempt: acknowledges and deletes the entry, then either schedules the retry
/// (ZADD at `retry_at`) or, when attempts are spent or `retry_at` is `-1`, appends it to the dead
/// stream. One script so a crash cannot lose the job between the ack and the re-add.
///
/// KEYS: stream, delayed, dead. ARGV: group, entry id, attempts spent, retry_at ms or -1, error,
/// now ms, dead max len. Returns 0 if the entry was already gone, 1 retried, 2 dead.
pub(crate) const FAIL: &str = r#"
local e = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
if #e == 0 then return 0 end
local f = e[1][2]
local job, payload, m = '', '', 1
for i = 1, #f, 2 do
  if f[i] == 'j' then job = f[i + 1]
  elseif f[i] == 'p' then payload = f[i + 1]
  elseif f[i] == 'm' then m = tonumber(f[i + 1]) end
end
local a = tonumber(ARGV[3])
if ARGV[4] == '-1' or a >= m then
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[7], '*',
    'j', job, 'p', payload, 'a', a, 'm', m, 'e', ARGV[5], 't', ARGV[6])
  return 2
end
redis.call('ZADD', KEYS[2], ARGV[4], cjson.encode({job, payload, a, m}))
return 1
"#;

/// Moves due delayed jobs into the stream, a bounded batch per call (`ZRANGEBYSCORE … LIMIT`,
/// never the whole due set at once).
///
/// KEYS: delayed, stream. ARGV: now ms, batch. Returns how many were promoted.
pub(crate) const PROMOTE: &str = r#"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for i = 1, #due do
  local d = cjson.decode(due[i])
  redis.call('XADD', KEYS[2], '*', 'j', d[1], 'p', d[2], 'a', d[3], 'm', d[4])
  redis.call('ZREM', KEYS[1], due[i])
end
return #due
"#;

/// Takes over entries idle longer than min-idle (`XAUTOCLAIM`) and reports each one's delivery
/// count; entries whose abandoned deliveries already used up their attempts go to the dead stream
/// instead of running again (a job that kills its worker must not loop forever).
///
/// KEYS: stream, dead. ARGV: group, consumer, min idle ms, cursor, count, now ms, dead max len.
/// Returns {next cursor, {{id, fields, deliveries}, …}, dead count}.
pub(crate) const RECLAIM: &str = r#"
local r = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], 'COUNT', tonumber(ARGV[5]))
local out, dead = {}, 0
for _, e in ipairs(r[2]) do
  local id, f = e[1], e[2]
  if f then
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)
  local n = 1
  if p[1] then n = tonumber(p[1][4]) end
  local job, payload, a, m = '', '', 0, 1
  for i = 1, #f, 2 do
    if f[i] == 'j' then job = f[i + 1]
    elseif f[i] == 'p' then payload = f[i + 1]
    elseif f[i] == 'a' then a = tonumber(f[i + 1])
    elseif f[i] == 'm' then m = tonumber(f[i + 1]) end
  end
  if a + n - 1 >= m then
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[7], '*', 'j', job, 'p', payload,
      'a', a + n - 1, 'm', m, 'e', 'abandoned: the worker holding it stopped responding', 't', ARGV[6])
    redis.call('XACK', KEYS[1], ARGV[1], id)
    redis.call('XDEL', KEYS[1], id)
    dead = dead + 1
  else
    table.insert(out, {id, f, n})
  end
  end
end
return {r[1], out, dead}
"#;

/// Renews this consumer's claim on the entries it still holds (`XCLAIM … 0 … JUSTID` resets the
/// idle time without counting a delivery), skipping entries another consumer already owns so a
/// late renewal never steals a job back.
///
/// KEYS: stream. ARGV: group, consumer, ids…. Returns how many were renewed.
pub(crate) const RENEW: &str = r#"
local n = 0
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if p[1] and p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    n = n + 1
  end
end
return n
"#;

/// Gives entries that were fetched but never started back to the group (graceful shutdown): each
/// is re-added unchanged at the tail and the old entry acknowledged and deleted.
///
/// KEYS: stream. ARGV: group, ids…. Returns how many were released.
pub(crate) const RELEASE: &str = r#"
local n = 0
for i = 2, #ARGV do
  local e = redis.call('XRANGE', KEYS[1], ARGV[i], ARGV[i])
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[i])
  redis.call('XDEL', KEYS[1], ARGV[i])
  if #e > 0 then
    redis.call('XADD', KEYS[1], '*', unpack(e[1][2]))
    n = n + 1
  end
end
return n
"#;

/// What Redis still holds of a queue's messages, for the outbox sweep: the id time (ms) of the
/// oldest entry not yet delivered to the group (Redis's current time when there is none), and
/// the job ids of the entries delivered but not acknowledged (held by a consumer: in its buffer
/// or running), at most ARGV[2] of them.
///
/// KEYS: stream. ARGV: group, max held. Returns {since ms, {job id, …}}.
pub(crate) const HORIZON: &str = r#"
local t = redis.call('TIME')
local since = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local held = {}
if redis.call('EXISTS', KEYS[1]) == 0 then return {since, held} end
local last = nil
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local name, id = nil, nil
  for i = 1, #g, 2 do
    if g[i] == 'name' then name = g[i + 1] elseif g[i] == 'last-delivered-id' then id = g[i + 1] end
  end
  if name == ARGV[1] then last = id end
end
local first
if last then
  first = redis.call('XRANGE', KEYS[1], '(' .. last, '+', 'COUNT', 1)
else
  first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
end
if #first > 0 then
  local ms = tonumber(string.match(first[1][1], '^(%d+)-'))
  if ms < since then since = ms end
end
if last then
  for _, p in ipairs(redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', tonumber(ARGV[2]))) do
    local e = redis.call('XRANGE', KEYS[1], p[1], p[1])
    if #e > 0 then
      local f = e[1][2]
      for i = 1, #f, 2 do
        if f[i] == 'j' then table.insert(held, f[i + 1]) end
      end
    end
  end
end
return {since, held}
"#;

/// The compiled scripts (hashes computed once; loaded on first use).
#[derive(Debug)]
pub(crate) struct Scripts {
    pub fail: Script,
    pub promote: Script,
    pub reclaim: Script,
    pub renew: Script,
    pub release: Script,
    pub horizon: Script,
}

impl Scripts {
    pub fn new() -> Self {
        Self {
            fail: Script::new(FAIL),
            promote: Script::new(PROMOTE),
            reclaim: Script::new(RECLAIM),
            renew: Script::new(RENEW),
            release: Script::new(RELEASE),
            horizon: Script::new(HORIZON),
        }
    }
}
