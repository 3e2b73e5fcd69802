//! The Lua scripts: every multi-key step of the Redis backend, atomic on the server.
//!
//! `META` holds helpers shared by the broker's scripts and is prepended to each of them.

pub(super) const CLAIM_LAYOUT: &str = r#"
-- ARGV: prefix, layout, the older layout it upgrades in place. Returns nil when the prefix is
-- (now) ours, else the layout found.
local key = ARGV[1] .. ':layout'
local found = redis.call('GET', key)
if found then
  if found == ARGV[2] then return nil end
  if found == ARGV[3] then
    redis.call('SET', key, ARGV[2])
    return nil
  end
  return found
end
if redis.call('EXISTS', ARGV[1] .. ':seq') == 1 then return '1' end
redis.call('SET', key, ARGV[2])
return nil
"#;

/// Shared by the broker's scripts. A task's value in `P:tasks` is
/// `"{next delivery} {score} {queue length} {queue}{envelope}"`: the metadata the scripts
/// need in front of the envelope (MessagePack) they pass on untouched. A reserved task's lease
/// member in `P:leases` is `{id}:{token}`, its fencing token drawn from `P:fseq`; when the lease
/// runs out, the token moves to `P:fence` (id → token) until someone takes the task again, so a
/// late ack from that delivery is still recognised. Times come from the server's clock (`TIME`),
/// never a client's.
pub(super) const META: &str = r#"
-- The server's clock, in ms: every host's leases, ETAs and deadlines are read against it.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- The next delivery (a number), score (text) and queue of a task value; nil for a value that
-- is not one (written by something else, or by a newer layout).
local function parse(v)
  local a = string.find(v, ' ', 1, true)
  if not a then return nil end
  local b = string.find(v, ' ', a + 1, true)
  if not b then return nil end
  local c = string.find(v, ' ', b + 1, true)
  if not c then return nil end
  local d, qlen = tonumber(string.sub(v, 1, a - 1)), tonumber(string.sub(v, b + 1, c - 1))
  if not d or not qlen or #v < c + qlen then return nil end
  return d, string.sub(v, a + 1, b - 1), string.sub(v, c + 1, c + qlen)
end
-- Sets aside a task whose value does not parse, out of every queue, for the next reserve to
-- hand to its client (which dead-letters it): one bad value never stops a script.
local function quarantine(p, id, v)
  redis.call('HDEL', p .. ':tasks', id)
  redis.call('HDEL', p .. ':fence', id)
  redis.call('HSET', p .. ':corrupt', id, v)
end
-- A task's next delivery, score, queue and whole value; nil when it is not (or no longer) here,
-- or when its value does not parse (then it is set aside).
local function meta_of(p, id)
  local v = redis.call('HGET', p .. ':tasks', id)
  if not v then return nil end
  local d, score, q = parse(v)
  if not d then
    quarantine(p, id, v)
    return nil
  end
  return d, score, q, v
end
-- Makes `id` ready in queue `q` (waking a waiting reserve) or schedules it at `due`.
local function place(p, id, q, score, due)
  if due then
    redis.call('ZADD', p .. ':s:' .. q, due, id)
  else
    redis.call('ZADD', p .. ':q:' .. q, score, id)
    redis.call('RPUSH', p .. ':w:' .. q, '1')
    redis.call('LTRIM', p .. ':w:' .. q, 0, 63)
  end
end
-- Queues `id` for worker `w` until `until_ms` (`Envelope::affinity`): it waits in its scheduled
-- set, due then (when every worker may take it), and in the worker's own set, which that
-- worker's reserve takes from first. The worker's set is only a hint, expiring a minute after
-- its newest steal time (a worker that is gone leaves nothing behind); the scheduled set is the
-- truth, so an entry whose task was promoted, taken or put back is skipped.
local function place_affine(p, id, q, w, until_ms)
  redis.call('ZADD', p .. ':s:' .. q, until_ms, id)
  local key = p .. ':a:' .. q .. ':' .. w
  redis.call('ZADD', key, until_ms, id)
  redis.call('PEXPIREAT', key, until_ms + 60000)
  -- That worker's own wake-up tokens: a reserve of it waiting on its queues wakes.
  local wake = p .. ':w:' .. q .. ':' .. w
  redis.call('RPUSH', wake, '1')
  redis.call('LTRIM', wake, 0, 63)
  redis.call('PEXPIREAT', wake, until_ms + 60000)
end
-- The task goes back to its queue (or its scheduled set at `due`), its next delivery number
-- moved by `step`: +1 when this delivery counts (a nack, an expired lease), 0 for a deferral,
-- -1 for a deferral of a delivery whose lease had run out (its expiry counted it already).
-- `requeued`: it may already wait in its queue (an expired lease put it back).
local function requeue(p, id, due, step, requeued)
  local d, score, q, v = meta_of(p, id)
  if not d then return false end
  if step ~= 0 then
    -- (string.find returns where the space starts and ends: keep only the start)
    local rest = string.find(v, ' ', 1, true)
    redis.call('HSET', p .. ':tasks', id, math.max(d + step, 1) .. string.sub(v, rest))
  end
  if requeued then redis.call('ZREM', p .. ':q:' .. q, id) end
  place(p, id, q, score, due)
  return true
end
-- Forgets the fencing tokens of expired leases of `ids` (nothing to do, and one O(1) check,
-- while no lease has run out).
local function unfence(p, ids)
  if #ids > 0 and redis.call('HLEN', p .. ':fence') > 0 then
    redis.call('HDEL', p .. ':fence', unpack(ids))
  end
end
local function forget(p, ids)
  if #ids > 0 then
    redis.call('HDEL', p .. ':tasks', unpack(ids))
    unfence(p, ids)
  end
end
-- Takes tasks an expired lease put back in their queue out of it again (before `forget`).
local function unqueue(p, ids)
  for _, id in ipairs(ids) do
    local d, score, q = meta_of(p, id)
    if q then
      redis.call('ZREM', p .. ':q:' .. q, id)
      redis.call('ZREM', p .. ':s:' .. q, id)
    end
  end
end
-- Whether `id` waits in its queue or scheduled set (not leased); `q` its queue.
local function waiting(p, id, q)
  return redis.call('ZSCORE', p .. ':q:' .. q, id) or redis.call('ZSCORE', p .. ':s:' .. q, id)
end
-- Whether `token` names the last delivery of `id` although its lease ran out and is gone from
-- `P:leases`: the expiry kept the token in `P:fence`, and nobody has taken the task since.
local function expired_holder(p, id, token)
  if redis.call('HGET', p .. ':fence', id) ~= token then return false end
  local d, score, q = meta_of(p, id)
  return q and waiting(p, id, q) and true or false
end
-- Whether a task value's envelope (named MessagePack) has workflow frames: its `flow` field is
-- written only when not empty. A false positive (the word in a task's arguments or queue) only
-- means the task is delivered and dropped by the worker instead of here.
local function carries_flow(v)
  return v and string.find(v, '\164flow', 1, true) ~= nil
end
-- Whether a record of `attempts` (final or not) may replace the stored JSON record `old`
-- (`ResultRecord::supersedes`): not from an older attempt, not unfinished over finished. A
-- stored record that does not decode is replaced.
local FINAL = {SUCCESS = true, FAILURE = true, REVOKED = true}
local function supersedes(old, attempts, final)
  if not old then return true end
  local ok, rec = pcall(cjson.decode, old)
  if not ok or type(rec) ~= 'table' then return true end
  return attempts >= (tonumber(rec.attempts) or 0) and (final or not FINAL[rec.state])
end
-- Whether the stored JSON record `old` is already in `state` at `attempts` (a store repeated
-- after a lost reply): such a store is not counted again.
local function same_record(old, state, attempts)
  if not old then return false end
  local ok, rec = pcall(cjson.decode, old)
  return ok and type(rec) == 'table' and rec.state == state and tonumber(rec.attempts) == attempts
end
local function is_revoked(p, id, now)
  local until_ = redis.call('ZSCORE', p .. ':revoked', id)
  return until_ and tonumber(until_) > now
end
"#;

pub(super) const RESERVE: &str = r#"
-- ARGV: prefix, lease ms, max, worker ('' for none), queues... Returns the values, ms until the next scheduled task
-- or lease falls due ('' for none), their ids, what was set aside, and the token before the
-- first of the delivered tasks' fencing tokens (theirs follow in order).
local p = ARGV[1]
local now = now_ms()
local until_ = now + tonumber(ARGV[2])
local max = tonumber(ARGV[3])
local leases = p .. ':leases'
local next_due = false
local function earliest(key)
  local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  if first[2] then
    local s = tonumber(first[2])
    if not next_due or s < next_due then next_due = s end
  end
end
-- Leases that ran out: the task goes back to its queue, as the next delivery.
local expired = redis.call('ZRANGEBYSCORE', leases, '-inf', now, 'LIMIT', 0, 1000)
for _, m in ipairs(expired) do
  redis.call('ZREM', leases, m)
  local colon = string.find(m, ':', 1, true)
  local id = string.sub(m, 1, colon - 1)
  -- The fencing token is kept: a late ack from this delivery is accepted until someone takes
  -- the task.
  redis.call('HSET', p .. ':fence', id, string.sub(m, colon + 1))
  requeue(p, id, false, 1, false)
end
earliest(leases)
-- Scheduled tasks (ETA, retry delay) that are due join their queue.
local worker = ARGV[4]
for i = 5, #ARGV do
  local key = p .. ':s:' .. ARGV[i]
  local due = redis.call('ZRANGEBYSCORE', key, '-inf', now, 'LIMIT', 0, 1000)
  if #due > 0 then
    redis.call('ZREM', key, unpack(due))
    -- A scheduled set holds its own queue's tasks: one read and one ZADD for all of them.
    local values = redis.call('HMGET', p .. ':tasks', unpack(due))
    local ready = {}
    for j, id in ipairs(due) do
      if values[j] then
        local _, score = parse(values[j])
        if score then
          ready[#ready + 1] = score
          ready[#ready + 1] = id
        else
          quarantine(p, id, values[j])
        end
      end
    end
    if #ready > 0 then redis.call('ZADD', p .. ':q:' .. ARGV[i], unpack(ready)) end
  end
  earliest(key)
end
-- Paused queues deliver nothing (one O(1) check while none is paused).
local qs = {unpack(ARGV, 5)}
if redis.call('SCARD', p .. ':paused') > 0 then
  local open = {}
  local paused = redis.call('SMISMEMBER', p .. ':paused', unpack(qs))
  for i, q in ipairs(qs) do
    if paused[i] == 0 then open[#open + 1] = q end
  end
  qs = open
end
-- The tasks queued for this worker first, oldest first: each still waiting in its scheduled
-- set at the score its entry names is taken out of it; any other entry is stale and dropped.
local ids = {}
if worker ~= '' then
  for _, q in ipairs(qs) do
    local key = p .. ':a:' .. q .. ':' .. worker
    while #ids < max do
      local batch = redis.call('ZRANGE', key, 0, max - #ids - 1, 'WITHSCORES')
      if #batch == 0 then break end
      for j = 1, #batch, 2 do
        local id = batch[j]
        redis.call('ZREM', key, id)
        local s = redis.call('ZSCORE', p .. ':s:' .. q, id)
        if s and tonumber(s) == tonumber(batch[j + 1]) then
          redis.call('ZREM', p .. ':s:' .. q, id)
          ids[#ids + 1] = id
        end
      end
    end
  end
end
-- Then the best ids of the shared queues.
local room = max - #ids
if room <= 0 then
elseif #qs == 1 then
  local key = p .. ':q:' .. qs[1]
  local got = redis.call('ZRANGE', key, 0, room - 1)
  if #got > 0 then redis.call('ZREMRANGEBYRANK', key, 0, #got - 1) end
  for _, id in ipairs(got) do ids[#ids + 1] = id end
elseif #qs > 1 then
  while #ids < max do
    local best_q, best_id, best_s = nil, nil, nil
    for _, q in ipairs(qs) do
      local top = redis.call('ZRANGE', p .. ':q:' .. q, 0, 0, 'WITHSCORES')
      if top[1] then
        local s = tonumber(top[2])
        if not best_s or s < best_s then best_q, best_id, best_s = q, top[1], s end
      end
    end
    if not best_q then break end
    redis.call('ZREM', p .. ':q:' .. best_q, best_id)
    ids[#ids + 1] = best_id
  end
end
local out, out_ids, first = {}, {}, 0
if #ids > 0 then
  local values = redis.call('HMGET', p .. ':tasks', unpack(ids))
  local revoked = redis.call('ZMSCORE', p .. ':revoked', unpack(ids))
  local dropped = {}
  for j, id in ipairs(ids) do
    local v = values[j]
    if revoked[j] and tonumber(revoked[j]) > now and not carries_flow(v) then
      -- Revoked before it was sent: never delivered (a workflow step is, to be dropped by a
      -- worker, which then fails the rest of its workflow).
      dropped[#dropped + 1] = id
    elseif v then
      -- The lease needs the delivery at the value's front; the client checks the rest (and
      -- dead-letters what it cannot decode). A value without one is set aside.
      local sp = string.find(v, ' ', 1, true)
      local d = sp and tonumber(string.sub(v, 1, sp - 1))
      if d then
        out[#out + 1] = v
        out_ids[#out_ids + 1] = id
      else
        quarantine(p, id, v)
      end
    end
  end
  forget(p, dropped)
  if #out > 0 then
    -- Fresh fencing tokens, one per delivery, never drawn before on this prefix.
    first = redis.call('INCRBY', p .. ':fseq', #out) - #out
    local held = {}
    for j, id in ipairs(out_ids) do
      held[#held + 1] = until_
      held[#held + 1] = id .. ':' .. (first + j)
    end
    redis.call('ZADD', leases, unpack(held))
    -- Taken again: a late ack from an expired delivery of these no longer counts.
    unfence(p, out_ids)
  end
end
-- What was set aside, by this call or any other, for the client to dead-letter (a few at a time).
local corrupt = redis.call('HRANDFIELD', p .. ':corrupt', 16, 'WITHVALUES')
local wait = ''
if next_due then wait = tostring(math.max(next_due - now, 0)) end
return {out, wait, out_ids, corrupt, first}
"#;

/// Completes deliveries: `ack_leases(p, members)` with `id:token` lease members. The fencing
/// token is the check that this delivery is still the task's last one; a stale ack removes
/// nothing, a late one (its lease ran out, nobody took the task since) is accepted. Variadic
/// commands, not one per task: Redis spends far more per command than per element. Returns how
/// many tasks were completed.
pub(super) const ACK_FN: &str = r#"
-- Which of `members` are their task's last delivery: true for a lease held, 'late' for one
-- that ran out with nobody taking the task since, false for a stale one.
local function current_deliveries(p, members)
  local out = {}
  if #members == 0 then return out end
  local held = redis.call('ZMSCORE', p .. ':leases', unpack(members))
  for j = 1, #members do
    local m = members[j]
    local colon = string.find(m, ':', 1, true)
    if held[j] then
      out[j] = true
    else
      out[j] = expired_holder(p, string.sub(m, 1, colon - 1), string.sub(m, colon + 1)) and 'late'
    end
  end
  return out
end
local function ack_leases(p, members, current)
  if #members == 0 then return 0 end
  current = current or current_deliveries(p, members)
  local gone, done, requeued = {}, {}, {}
  for j = 1, #members do
    local m = members[j]
    local id = string.sub(m, 1, string.find(m, ':', 1, true) - 1)
    if current[j] == true then
      gone[#gone + 1] = m
      done[#done + 1] = id
    elseif current[j] then
      done[#done + 1] = id
      requeued[#requeued + 1] = id
    end
  end
  if #gone > 0 then redis.call('ZREM', p .. ':leases', unpack(gone)) end
  unqueue(p, requeued)
  forget(p, done)
  return #done
end
"#;

pub(super) const ACK: &str = r#"
-- ARGV: prefix, then `id:token` lease members.
return ack_leases(ARGV[1], {unpack(ARGV, 2)})
"#;

pub(super) const NACK: &str = r#"
-- ARGV: prefix, id, token, delay ms (0: ready now), attempted (1: a nack; 0: a deferral, after
-- which the next delivery keeps this one's number: it was not an attempt). The delivery ends:
-- its token is forgotten, so the same call repeated (after a lost reply) does nothing.
local p, id = ARGV[1], ARGV[2]
local expired = false
if redis.call('ZREM', p .. ':leases', id .. ':' .. ARGV[3]) == 0 then
  if not expired_holder(p, id, ARGV[3]) then return 0 end
  expired = true
  redis.call('HDEL', p .. ':fence', id)
end
local delay = tonumber(ARGV[4])
local step = 0
if ARGV[5] == '1' then
  redis.call('HINCRBY', p .. ':cnt', 'retried', 1)
  if not expired then step = 1 end
elseif expired then
  step = -1
end
requeue(p, id, delay > 0 and now_ms() + delay or false, step, expired)
return 1
"#;

pub(super) const EXTEND: &str = r#"
-- ARGV: prefix, lease ms, then id, token pairs; returns the indexes (0-based pairs) lost
local p = ARGV[1]
local now = now_ms()
local until_ = now + tonumber(ARGV[2])
local leases = p .. ':leases'
local lost = {}
for i = 3, #ARGV, 2 do
  local m = ARGV[i] .. ':' .. ARGV[i + 1]
  if redis.call('ZSCORE', leases, m) and not is_revoked(p, ARGV[i], now) then
    redis.call('ZADD', leases, 'XX', until_, m)
  else
    lost[#lost + 1] = (i - 3) / 2
  end
end
return lost
"#;

pub(super) const REVOKE: &str = r#"
-- ARGV: prefix, id, remember ms, the id's hash of results with a time to live and of kept
-- results, then its REVOKED record's JSON in two parts around its attempts count (which only
-- this script knows). Returns 0 not found, 1 pending (removed, or a workflow step left to be
-- dropped by a worker; recorded REVOKED in the same step either way), 2 running.
local p, id = ARGV[1], ARGV[2]
local now = now_ms()
redis.call('ZREMRANGEBYSCORE', p .. ':revoked', '-inf', now)
redis.call('ZADD', p .. ':revoked', now + tonumber(ARGV[3]), id)
local d, score, q, v = meta_of(p, id)
if not d then return 0 end
-- Neither in its queue nor in its scheduled set: a worker holds it.
if not waiting(p, id, q) then return 2 end
local r, rk = ARGV[4], ARGV[5]
local attempts = math.max(d - 1, 0)
local old = redis.call('HGET', r, id) or redis.call('HGET', rk, id)
if supersedes(old, attempts, true) then
  if not same_record(old, 'REVOKED', attempts) then
    redis.call('HINCRBY', p .. ':cnt', 'revoked', 1)
  end
  redis.call('HSET', rk, id, ARGV[6] .. attempts .. ARGV[7])
  redis.call('HDEL', r, id)
end
-- A workflow step stays, to be delivered and dropped by a worker, which then fails the rest
-- of its workflow.
if carries_flow(v) then return 1 end
redis.call('ZREM', p .. ':q:' .. q, id)
redis.call('ZREM', p .. ':s:' .. q, id)
forget(p, {id})
return 1
"#;

pub(super) const PURGE: &str = r#"
-- ARGV: prefix, queue
local p, q = ARGV[1], ARGV[2]
local n = 0
for _, key in ipairs({p .. ':q:' .. q, p .. ':s:' .. q}) do
  while true do
    local ids = redis.call('ZRANGE', key, 0, 999)
    if #ids == 0 then break end
    redis.call('ZREMRANGEBYRANK', key, 0, #ids - 1)
    forget(p, ids)
    n = n + #ids
  end
end
return n
"#;

pub(super) const DELETE_TASKS: &str = r#"
-- ARGV: prefix, then per task: id, its bucket's hash of results with a time to live, its
-- bucket's hash of kept results. A task that waits leaves its queue or scheduled set; its
-- record and its task-index entries (`{id} {queue}`, found by a lex range on the id) go. A
-- task a worker holds is left alone. Returns the ids deleted.
local p = ARGV[1]
local gone = {}
for i = 2, #ARGV, 3 do
  local id, r, rk = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local d, score, q = meta_of(p, id)
  if not d or waiting(p, id, q) then
    local found = false
    if d then
      redis.call('ZREM', p .. ':q:' .. q, id)
      redis.call('ZREM', p .. ':s:' .. q, id)
      forget(p, {id})
      found = true
    end
    if redis.call('HDEL', r, id) + redis.call('HDEL', rk, id) > 0 then found = true end
    local ix = redis.call('ZRANGEBYLEX', p .. ':ix', '[' .. id, '(' .. id .. '!')
    if #ix > 0 then redis.call('ZREM', p .. ':ix', unpack(ix)) end
    if found then gone[#gone + 1] = id end
  end
end
return gone
"#;

pub(super) const STATS: &str = r#"
-- ARGV: prefix; returns {queue, ready, scheduled, reserved} per known queue
local p = ARGV[1]
local reserved = {}
for _, m in ipairs(redis.call('ZRANGE', p .. ':leases', 0, -1)) do
  local d, score, q = meta_of(p, string.sub(m, 1, string.find(m, ':', 1, true) - 1))
  if q then reserved[q] = (reserved[q] or 0) + 1 end
end
local out = {}
for _, q in ipairs(redis.call('SMEMBERS', p .. ':queues')) do
  out[#out + 1] = {q, redis.call('ZCARD', p .. ':q:' .. q), redis.call('ZCARD', p .. ':s:' .. q), reserved[q] or 0}
end
return out
"#;

/// Sends a task once: `send_once(p, until_, now, index, id, queue, score, eta, value, aw, au)`
/// adds it unless its id is in `P:once` (remembered there until `until_`); true when it did.
/// `aw` and `au` are its affinity's worker and steal time in ms (`''` and 0: none).
pub(super) const SEND_ONCE_FN: &str = r#"
local function send_once(p, until_, now, index, id, q, score, eta, value, aw, au)
  if redis.call('ZADD', p .. ':once', 'NX', until_, id) ~= 1 then return false end
  redis.call('HSET', p .. ':tasks', id, value)
  if index then redis.call('ZADD', p .. ':ix', 0, id .. ' ' .. q) end
  redis.call('SADD', p .. ':queues', q)
  if eta <= now and aw ~= '' and au > now then
    place_affine(p, id, q, aw, au)
  else
    place(p, id, q, score, eta > now and eta or false)
  end
  return true
end
"#;

pub(super) const ENQUEUE_ONCE: &str = r#"
-- ARGV: prefix, remember ms, '1' to add the tasks to the task index, then per task: id,
-- queue, score, ETA ms (0: none), value, affinity's worker ('': none), its steal time ms.
-- Ids sent once are remembered in `once` (score: until when).
local p = ARGV[1]
local now = now_ms()
local until_ = now + tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', p .. ':once', '-inf', now)
local sent = 0
local index = ARGV[3] == '1'
for i = 4, #ARGV, 7 do
  if send_once(p, until_, now, index, ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3]), ARGV[i + 4], ARGV[i + 5], tonumber(ARGV[i + 6])) then
    sent = sent + 1
  end
end
if sent > 0 then redis.call('HINCRBY', p .. ':cnt', 'sent', sent) end
return sent
"#;

/// A scope's rise and its sends in one step (see `crate::scope`): a member is counted in the
/// scope's `all` hash (`p`: pending) and put in its `open` hash before it is sent once.
pub(super) const ENQUEUE_IN_SCOPE: &str = r#"
-- ARGV: prefix, remember ms, '1' to add the tasks to the task index, the scope's `all` hash,
-- its `open` hash, '1' to repair (resend a member still pending), then per task: its member
-- key, id, queue, score, ETA ms (0: none), value, affinity's worker ('': none), its steal time
-- ms. Returns per task 1 when it was sent (counted
-- here, or repaired), else 0.
local p = ARGV[1]
local now = now_ms()
local until_ = now + tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', p .. ':once', '-inf', now)
local index = ARGV[3] == '1'
local all, open, repair = ARGV[4], ARGV[5], ARGV[6] == '1'
local out, sent = {}, 0
for i = 7, #ARGV, 8 do
  local m = ARGV[i]
  local counted = redis.call('HSETNX', all, m, 'p') == 1
  if counted or (repair and redis.call('HGET', all, m) == 'p') then
    redis.call('HSET', open, m, '')
    if send_once(p, until_, now, index, ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], tonumber(ARGV[i + 4]), ARGV[i + 5], ARGV[i + 6], tonumber(ARGV[i + 7])) then
      sent = sent + 1
    end
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
if sent > 0 then redis.call('HINCRBY', p .. ':cnt', 'sent', sent) end
return out
"#;

/// Stores result records: `store_records(p, args, i, latest)` reads buckets of records from `args[i]`
/// to the end: per bucket of task ids, its hash of results with a time to live, its hash of
/// kept results, the longest time to live in ms of the records going to the first (0: none), how
/// many records follow, then per record: id, flags, JSON body. Flags: where it goes ('r': the
/// first hash, 'k': the second, '-': neither, it has expired), '1' if final else '0', the state's
/// letter for the counts in `P:cnt` ('S' SUCCESS, 'F' FAILURE, 'R' REVOKED, '-' not counted),
/// then its attempts. A record counts once: a blind write (its delivery's last) or one whose
/// stored record differs in state or attempt. A record replaces the stored one only where it supersedes it
/// (`ResultRecord::supersedes`: not from an older attempt, not unfinished over finished); a stale
/// run's record is dropped. Each hash is read with one HMGET and written with one HSET and one
/// HDEL. An id in `latest` (a set, or nil) is written without reading: its record comes from
/// the task's last delivery, so nothing stored can be newer, and it is deleted blindly from the
/// other hash. Wakes the ids someone waits for among the final records stored (see `results`):
/// an id nobody waits for costs one element of one ZMSCORE. Returns how many records were
/// stored.
pub(super) const STORE_FN: &str = r#"
local COUNTED = {S = 'succeeded', F = 'failed', R = 'revoked'}
local STATE_OF = {S = 'SUCCESS', F = 'FAILURE', R = 'REVOKED'}
local function store_records(p, args, i, latest)
  latest = latest or {}
  local finals, stored, counts = {}, 0, {}
  while i <= #args do
    local r, rk, ttl, n = args[i], args[i + 1], tonumber(args[i + 2]), tonumber(args[i + 3])
    local first = i + 4
    -- Only records that may be stale are checked against the stored ones.
    local ids, checked = {}, {}
    for j = 1, n do
      local id = args[first + (j - 1) * 3]
      ids[j] = id
      if not latest[id] then checked[#checked + 1] = id end
    end
    local in_r, in_rk = {}, {}
    if #checked > 0 then
      local a = redis.call('HMGET', r, unpack(checked))
      local b = redis.call('HMGET', rk, unpack(checked))
      for j = 1, #checked do
        in_r[checked[j]] = a[j]
        in_rk[checked[j]] = b[j]
      end
    end
    local set_r, set_rk, del_r, del_rk = {}, {}, {}, {}
    for j = 1, n do
      local at = first + (j - 1) * 3
      local id, flags = ids[j], args[at + 1]
      local final = string.byte(flags, 2) == 49
      local blind = latest[id]
      local attempts = tonumber(string.sub(flags, 4))
      local old = in_r[id] or in_rk[id]
      if blind or supersedes(old, attempts, final) then
        stored = stored + 1
        local counted = COUNTED[string.sub(flags, 3, 3)]
        if counted and (blind or not same_record(old, STATE_OF[string.sub(flags, 3, 3)], attempts)) then
          counts[counted] = (counts[counted] or 0) + 1
        end
        if final then finals[#finals + 1] = id end
        -- A record lives in one of the two hashes; it leaves the other where it was there.
        local where = string.byte(flags, 1)
        if where == 114 then -- 'r'
          set_r[#set_r + 1] = id
          set_r[#set_r + 1] = args[at + 2]
          if blind or in_rk[id] then del_rk[#del_rk + 1] = id end
        elseif where == 107 then -- 'k'
          set_rk[#set_rk + 1] = id
          set_rk[#set_rk + 1] = args[at + 2]
          if blind or in_r[id] then del_r[#del_r + 1] = id end
        else
          if blind or in_r[id] then del_r[#del_r + 1] = id end
          if blind or in_rk[id] then del_rk[#del_rk + 1] = id end
        end
      end
    end
    if #set_r > 0 then
      redis.call('HSET', r, unpack(set_r))
      -- NX sets an expiry on a new hash; GT only ever lengthens it.
      redis.call('PEXPIRE', r, ttl, 'NX')
      redis.call('PEXPIRE', r, ttl, 'GT')
    end
    if #del_r > 0 then redis.call('HDEL', r, unpack(del_r)) end
    if #set_rk > 0 then redis.call('HSET', rk, unpack(set_rk)) end
    if #del_rk > 0 then redis.call('HDEL', rk, unpack(del_rk)) end
    i = first + n * 3
  end
  for name, n in pairs(counts) do redis.call('HINCRBY', p .. ':cnt', name, n) end
  if #finals > 0 then
    local waited = redis.call('ZMSCORE', p .. ':waiting', unpack(finals))
    for j = 1, #finals do
      if waited[j] then
        local n = p .. ':n:' .. finals[j]
        redis.call('RPUSH', n, '1')
        redis.call('EXPIRE', n, 60)
      end
    end
  end
  return stored
end
"#;

pub(super) const STORE_RESULTS: &str = r#"
-- ARGV: prefix, then the buckets of records `store_records` reads.
return store_records(ARGV[1], ARGV, 2)
"#;

pub(super) const STORE_AND_ACK: &str = r#"
-- ARGV: prefix, how many lease members follow, the `id:token` members, how many events follow
-- (0: none), their batch (MessagePack; empty when none), the scope falls (below), then the
-- buckets of records `store_records` reads. The records and the completions are one atomic step. A record
-- whose task this batch holds the last delivery of is the newest there can be, so it is written
-- without reading what is stored (the common case: a finished batch costs no reads).
local p, k = ARGV[1], tonumber(ARGV[2])
local members = k > 0 and {unpack(ARGV, 3, 2 + k)} or {}
local current = current_deliveries(p, members)
local latest = {}
for j = 1, k do
  if current[j] then
    local m = members[j]
    latest[string.sub(m, 1, string.find(m, ':', 1, true) - 1)] = true
  end
end
local events = tonumber(ARGV[3 + k])
if events > 0 then publish_events(p, events, ARGV[4 + k]) end
-- Then how many scope falls follow, and per fall: the scope's `all` hash, its `open` hash,
-- the member key, its final state ('d' or 'f'). A member falls once: only from pending.
local falls = tonumber(ARGV[5 + k])
local at = 6 + k
store_records(p, ARGV, at + falls * 4, latest)
for j = 0, falls - 1 do
  local all, open, m, state = ARGV[at + j * 4], ARGV[at + j * 4 + 1], ARGV[at + j * 4 + 2], ARGV[at + j * 4 + 3]
  if redis.call('HGET', all, m) == 'p' then redis.call('HSET', all, m, state) end
  redis.call('HDEL', open, m)
end
return ack_leases(p, members, current)
"#;

pub(super) const JOIN: &str = r#"
-- ARGV: ttl ms, then (key, index, size, value) per entry. Returns per entry {} until all `size`
-- members of its join are in, then every (index, value) pair.
local out = {}
for i = 2, #ARGV, 4 do
  local key = ARGV[i]
  redis.call('HSET', key, ARGV[i + 1], ARGV[i + 3])
  redis.call('PEXPIRE', key, ARGV[1])
  if redis.call('HLEN', key) < tonumber(ARGV[i + 2]) then
    out[#out + 1] = {}
  else
    out[#out + 1] = redis.call('HGETALL', key)
  end
end
return out
"#;

pub(super) const FORGET_UNSHARED: &str = r#"
-- ARGV: the sender's mark, n (ids), the number of buckets, then the ids grouped by time bucket:
-- per bucket its result hash, its kept result hash, its count k and its k ids; then the n ids'
-- holders dicts, then their joins and blobs (join, blob per id), both in the ids' order. An id whose holders dict
-- names a holder is marked and returned; the others are forgotten with their dict (see
-- ResultStore::forget_unshared).
-- A client's released ids almost never have a holders dict, so one EXISTS over all the dicts
-- decides, and then a few variadic commands on ranges of ARGV forget them all (five commands
-- an id cost Redis 0.4 s a 100,000-task client.map); only when some dict exists is each id
-- looked at on its own.
local mark, n, nb = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
if n == 0 then return {} end
local buckets, at = {}, 4
for b = 1, nb do
  local k = tonumber(ARGV[at + 2])
  buckets[b] = {at, k}
  at = at + 3 + k
end
local dicts, others = at, at + n
if redis.call('EXISTS', unpack(ARGV, dicts, dicts + n - 1)) == 0 then
  for _, b in ipairs(buckets) do
    local s, k = b[1], b[2]
    redis.call('HDEL', ARGV[s], unpack(ARGV, s + 3, s + 2 + k))
    redis.call('HDEL', ARGV[s + 1], unpack(ARGV, s + 3, s + 2 + k))
  end
  redis.call('UNLINK', unpack(ARGV, others, others + 2 * n - 1))
  return {}
end
local kept, i = {}, 0
for _, b in ipairs(buckets) do
  local s, k = b[1], b[2]
  for j = 0, k - 1 do
    local id, holders = ARGV[s + 3 + j], ARGV[dicts + i]
    if redis.call('HLEN', holders) - redis.call('HEXISTS', holders, mark) > 0 then
      redis.call('HSET', holders, mark, '1')
      kept[#kept + 1] = id
    else
      redis.call('HDEL', ARGV[s], id)
      redis.call('HDEL', ARGV[s + 1], id)
      redis.call('UNLINK', holders, ARGV[others + 2 * i], ARGV[others + 2 * i + 1])
    end
    i = i + 1
  end
end
return kept
"#;

pub(super) const UNSHARE: &str = r#"
-- ARGV: holder token, the sender's mark, id, holders dict, result hash, kept result hash, join,
-- blob. Removes the holder; with no holder left the dict goes, and the record too if the
-- sender's mark was there. Returns 1 if it forgot.
local holders = ARGV[4]
redis.call('HDEL', holders, ARGV[1])
local marked = redis.call('HEXISTS', holders, ARGV[2])
if redis.call('HLEN', holders) - marked > 0 then return 0 end
redis.call('UNLINK', holders)
if marked == 0 then return 0 end
redis.call('HDEL', ARGV[5], ARGV[3])
redis.call('HDEL', ARGV[6], ARGV[3])
redis.call('UNLINK', ARGV[7], ARGV[8])
return 1
"#;

pub(super) const LOCK: &str = r#"
-- ARGV: key, holder, ttl ms. Taken when free or ours (renewed); a lapsed lock has expired.
local h = redis.call('GET', ARGV[1])
if h and h ~= ARGV[2] then return 0 end
redis.call('SET', ARGV[1], ARGV[2], 'PX', ARGV[3])
return 1
"#;

pub(super) const UNLOCK: &str = r#"
-- ARGV: key, holder
if redis.call('GET', ARGV[1]) == ARGV[2] then redis.call('DEL', ARGV[1]) end
return 0
"#;

pub(super) const ACQUIRE: &str = r#"
-- ARGV: key, interval µs, n, horizon µs. The generic cell rate algorithm (see `gcra` in
-- lib.rs): books up to n slots within the horizon; returns {offsets, wait for the next}. The
-- slots are on the server's clock, so a host whose clock runs ahead takes no more than its share.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval, n, horizon = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local tat = tonumber(redis.call('GET', ARGV[1]) or now)
if tat < now then tat = now end
local slots = {}
while #slots < n and tat <= now + horizon do
  slots[#slots + 1] = tat - now
  tat = tat + interval
end
redis.call('SET', ARGV[1], string.format('%d', tat), 'PX', math.floor((tat - now) / 1000) + 3600000)
local next = tat - now - horizon
if next < 0 then next = 0 end
return {slots, next}
"#;

pub(super) const DEAD_LETTER: &str = r#"
-- ARGV: prefix, id, token, record, keep
local p, id = ARGV[1], ARGV[2]
-- A stale lease: the task lives on elsewhere, so it is not dead.
if redis.call('ZREM', p .. ':leases', id .. ':' .. ARGV[3]) == 0 then
  if not expired_holder(p, id, ARGV[3]) then return 0 end
  unqueue(p, {id})
end
forget(p, {id})
redis.call('LPUSH', p .. ':dead', ARGV[4])
redis.call('LTRIM', p .. ':dead', 0, tonumber(ARGV[5]) - 1)
return 1
"#;

/// Appends a batch of `n` events as one entry of the stream `P:events`, its id `0-{last seq}`
/// (seqs from `P:eseq`), and trims entries of seqs older than the newest [`EVENTS_KEPT`]
/// (`MINID ~`: Redis trims whole nodes, so about that many are kept).
///
/// [`EVENTS_KEPT`]: crate::ops::EVENTS_KEPT
pub(super) const EVENTS_FN: &str = r#"
local function publish_events(p, n, body)
  local last = redis.call('INCRBY', p .. ':eseq', n)
  local keep = 100000 -- EVENTS_KEPT (a test keeps them equal)
  redis.call('XADD', p .. ':events', 'MINID', '~', '0-' .. math.max(last - keep, 0), '0-' .. last,
    'first', last - n + 1, 'b', body)
  return last
end
"#;

pub(super) const PUBLISH: &str = r#"
-- ARGV: prefix, how many events, their batch (MessagePack). Returns the last seq.
return publish_events(ARGV[1], tonumber(ARGV[2]), ARGV[3])
"#;
