//! The Lua scripts: each step that reads and writes several keys runs as one script, so Redis
//! runs it atomically (no other client's command comes between).
//!
//! Keys, for a locked key `K` under prefix `P`: `P lock:K` holds the holder's random token, with
//! the lease as its expiry; `P wait:K` holds the ticket of the newest `lock` call waiting for
//! it, expiring with the wait timeout; `P fence` is one counter for every key, from which both
//! tickets and fencing tokens are drawn. Channels: `P release:K` carries a waiter's ticket (a
//! takeover request), `P released:K` says the key was freed.

use redis::Script;

/// Draws the next value of the counter in `KEYS[3]`: greater than every value before it, and at
/// least the server's time in microseconds, so the values keep growing even when a Redis that
/// lost its data (a restart without persistence) starts the counter again.
///
/// `string.format('%d')` because Lua 5.1 prints numbers past 14 digits with an exponent.
const NEXT_FENCE: &str = r"
local function next_fence()
  local fence = redis.call('INCR', KEYS[3])
  local now = redis.call('TIME')
  local floor = tonumber(now[1]) * 1000000 + tonumber(now[2])
  if fence < floor then
    fence = floor
    redis.call('SET', KEYS[3], string.format('%d', floor))
  end
  return fence
end
";

/// A `lock` attempt. KEYS: lock, wait, fence counter. ARGV: token, lease (ms), the caller's
/// ticket (empty on its first attempt: one is drawn), wait expiry (ms), release channel.
///
/// Taken: `{1, ticket, fence, newer}`, `newer` = 1 when a newer `lock` call waits (the new
/// holder is to let go at once). Held: `{0, ticket, pttl}`; the caller is recorded as the
/// newest waiter and asks the holder to let go, unless a newer call already waits.
const ACQUIRE: &str = r"
local first = ARGV[3] == ''
local ticket
if first then ticket = next_fence() else ticket = tonumber(ARGV[3]) end
local newest = tonumber(redis.call('GET', KEYS[2]) or '0')
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local fence = ticket
  if not first then fence = next_fence() end
  if newest == ticket then redis.call('DEL', KEYS[2]) end
  local newer = 0
  if newest > ticket then newer = 1 end
  return {1, ticket, fence, newer}
end
if newest <= ticket then
  local mine = string.format('%d', ticket)
  redis.call('SET', KEYS[2], mine, 'PX', ARGV[4])
  redis.call('PUBLISH', ARGV[5], mine)
end
return {0, ticket, redis.call('PTTL', KEYS[1])}
";

/// A `try_lock`. KEYS: lock, wait, fence counter. ARGV: token, lease (ms). The fence, or nil
/// when the key is held or awaited.
const TRY_ACQUIRE: &str = r"
if redis.call('EXISTS', KEYS[2]) == 1 then return false end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return next_fence() end
return false
";

/// Extends the lease if the token still holds the key. KEYS: lock. ARGV: token, lease (ms).
/// 1 when renewed, 0 when the key is someone else's or nobody's.
const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

/// Frees the key if the token holds it, and tells the waiters. KEYS: lock. ARGV: token,
/// released channel. 1 when freed, 0 when it was no longer held by the token.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[2], '')
  return 1
end
return 0
";

/// Removes the caller's waiter record if it is still the newest. KEYS: wait. ARGV: ticket.
const GIVE_UP: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
";

/// The scripts, loaded once per locker (`EVALSHA`, reloaded by the client after a Redis restart
/// flushed them).
pub(crate) struct Scripts {
    pub(crate) acquire: Script,
    pub(crate) try_acquire: Script,
    pub(crate) renew: Script,
    pub(crate) release: Script,
    pub(crate) give_up: Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Scripts {
            acquire: Script::new(&format!("{NEXT_FENCE}{ACQUIRE}")),
            try_acquire: Script::new(&format!("{NEXT_FENCE}{TRY_ACQUIRE}")),
            renew: Script::new(RENEW),
            release: Script::new(RELEASE),
            give_up: Script::new(GIVE_UP),
        }
    }
}
