"""The server-side half of the Redis layout: Lua scripts the publisher and the feeds run.

This module owns the Lua source of every script, so that what the server
does is read in one place:

* :data:`WRITE`: one publish transaction (every stream entry, then the clock
  entry), atomically, as a single command: a script is as atomic as
  ``MULTI/EXEC`` and costs the client one command instead of one per entry.
* :data:`READ_ROUND`: one round of a feed: the next transactions from the
  clock and, in the same atomic step, exactly the entries of the streams
  they name within them (``XRANGE`` from the first transaction's start to
  the last one's end), plus every stream's count where the clock resumes
  after a hole. One command per round, whatever the number of streams.
* :data:`COUNTS_AT`: every stream's count at a transaction (``start="earliest"``).
* :data:`ENSURE_GROUP`, :data:`READ_GROUP`: consumer groups (creation;
  reading with group-wide loss detection).

Scripts name the streams they read from the prefix, families and shards
they are given, rather than receiving hundreds of keys: a prefix's streams
live on one Redis (a single instance; a script, like a transaction, spans
them).

It must not do I/O: it is text.
"""

from __future__ import annotations

from typing import Final

__all__ = ["COUNTS_AT", "ENSURE_GROUP", "READ_GROUP", "READ_ROUND", "WRITE"]

#: Helpers shared by the scripts.
#:
#: * ``field(f, name)``: a numeric field of an entry's flat field list (nil if absent);
#: * ``streams(prefix, families, shards)``: the (short name, key) of every stream of
#:   ``families`` ("trades,quotes") and ``shards`` ("*" or "3,17,42");
#: * ``count_at(key, id, epoch)``: a stream's event count at transaction ``id``: the
#:   count of its first entry at or after it, or all its events (0 for another epoch).
_PRELUDE: Final = """
local function field(f, name)
  for j = 1, #f, 2 do
    if f[j] == name then return tonumber(f[j + 1]) end
  end
  return nil
end
local LETTER = {trades = 't', quotes = 'q', books = 'b', bars = 'a', statuses = 's'}
local function streams(prefix, families, shards, total)
  local out = {{'c', prefix .. ':control'}}
  local list = {}
  if shards == '*' then
    for s = 0, total - 1 do list[#list + 1] = s end
  else
    for s in string.gmatch(shards, '%d+') do list[#list + 1] = tonumber(s) end
  end
  for family in string.gmatch(families, '[^,]+') do
    for _, s in ipairs(list) do
      local shard = string.format('%02d', s)
      out[#out + 1] = {LETTER[family] .. shard, prefix .. ':' .. family .. ':' .. shard}
    end
  end
  return out
end
local function epoch_of(id)
  return string.match(id, '^(%d+)-')
end
local function count_at(key, id, epoch)
  local after = redis.call('XRANGE', key, id, '+', 'COUNT', 1)
  if after[1] and epoch_of(after[1][1]) == epoch then
    return field(after[1][2], 'n') or 0
  end
  local before = redis.call('XREVRANGE', key, '(' .. id, '-', 'COUNT', 1)
  if before[1] and epoch_of(before[1][1]) == epoch then
    return (field(before[1][2], 'n') or 0) + (field(before[1][2], 'c') or 0)
  end
  return 0
end
"""

#: KEYS: the clock, then one stream per entry.
#: ARGV: [1] the clock entry's id, [2] its end (global index), [3] the stream names it
#: lists, [4] the entries inline ('' none), [5] the streams' trimming threshold ('' none,
#: approximate), [6] the clock's (exact), [7] '1' if this is a retry, then per entry:
#: id, n, c, x, d.
#: Refuses to write anything if a key is not a stream; a retry whose entries are
#: already stored (its reply was lost) writes nothing twice.
WRITE: Final = """
local retry = ARGV[7] == '1'
for i = 1, #KEYS do
  local kind = redis.call('TYPE', KEYS[i])['ok']
  if kind ~= 'stream' and kind ~= 'none' then
    return redis.error_reply('WRONGTYPE ' .. KEYS[i] .. ' is not a stream')
  end
end
local function add(key, threshold, approximate, id, fields)
  local args = {'XADD', key}
  if threshold ~= '' then
    args[#args + 1] = 'MINID'
    args[#args + 1] = approximate and '~' or '='
    args[#args + 1] = threshold
  end
  args[#args + 1] = id
  for _, value in ipairs(fields) do args[#args + 1] = value end
  local reply = redis.pcall(unpack(args))
  if type(reply) == 'table' and reply.err then
    if retry and string.find(reply.err, 'equal or smaller', 1, true) then return nil end
    if string.find(reply.err, 'equal or smaller', 1, true) then
      return redis.error_reply('DUPLICATE another writer is ahead of us on ' .. key)
    end
    return reply
  end
  return nil
end
for i = 2, #KEYS do
  local b = 8 + (i - 2) * 5
  local failed = add(KEYS[i], ARGV[5], true, ARGV[b],
    {'n', ARGV[b + 1], 'c', ARGV[b + 2], 'x', ARGV[b + 3], 'd', ARGV[b + 4]})
  if failed then return failed end
end
local clock = {'e', ARGV[2], 'k', ARGV[3]}
if ARGV[4] ~= '' then
  clock[5] = 'i'
  clock[6] = ARGV[4]
end
local failed = add(KEYS[1], ARGV[6], false, ARGV[1], clock)
if failed then return failed end
return 1
"""

#: KEYS: the clock. ARGV: [1] the clock cursor (exclusive), [2] most transactions,
#: [3] the global index the next transaction should start at ('' unknown), [4] '1'
#: to report every stream's count anyway, [5] prefix, [6] families, [7] shards,
#: [8] the shard count, [9] most events per round (whole transactions; at least one).
#: Returns {} when there is nothing new, else {clock entries, counts or false, data}:
#: counts = {name, count, ...} at the first transaction read (on a hole, or when
#: asked), data = {name, entries, ...} for the listed streams that have entries.
READ_ROUND: Final = (
    _PRELUDE
    + """
local clock = redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+', 'COUNT', tonumber(ARGV[2]))
if #clock == 0 then return {} end
local budget = tonumber(ARGV[9])
local events = 0
for i, entry in ipairs(clock) do
  local start = tonumber(string.match(entry[1], '-(%d+)$'))
  events = events + field(entry[2], 'e') - start
  if events > budget and i > 1 then
    for j = #clock, i, -1 do clock[j] = nil end
    break
  end
end
local first = clock[1][1]
local epoch, start = string.match(first, '^(%d+)-(%d+)$')
local stop = field(clock[#clock][2], 'e')
local hole = ARGV[3] ~= start or ARGV[4] == '1'
local all = streams(ARGV[5], ARGV[6], ARGV[7], tonumber(ARGV[8]))
local read = {}
local counts = false
if hole then
  counts = {}
  for _, stream in ipairs(all) do
    read[#read + 1] = stream
    counts[#counts + 1] = stream[1]
    counts[#counts + 1] = string.format('%d', count_at(stream[2], first, epoch))
  end
else
  local named = {}
  for _, entry in ipairs(clock) do
    local f = entry[2]
    for j = 1, #f, 2 do
      if f[j] == 'k' then
        for name in string.gmatch(f[j + 1], '%S+') do named[name] = true end
      end
    end
  end
  for _, stream in ipairs(all) do
    if named[stream[1]] then read[#read + 1] = stream end
  end
end
local to = epoch .. '-' .. string.format('%d', stop - 1)
local data = {}
for _, stream in ipairs(read) do
  local entries = redis.call('XRANGE', stream[2], first, to)
  if #entries > 0 then
    data[#data + 1] = stream[1]
    data[#data + 1] = entries
  end
end
return {clock, counts, data}
"""
)

#: KEYS: the clock. ARGV: [1] prefix, [2] families, [3] shards, [4] the shard count.
#: Returns {first transaction id, name, count, ...} at the oldest transaction the
#: clock names, or {false} if it is empty.
COUNTS_AT: Final = (
    _PRELUDE
    + """
local oldest = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
if not oldest[1] then return {false} end
local first = oldest[1][1]
local epoch = epoch_of(first)
local out = {first}
for _, stream in ipairs(streams(ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]))) do
  out[#out + 1] = stream[1]
  out[#out + 1] = string.format('%d', count_at(stream[2], first, epoch))
end
return out
"""
)

#: KEYS: the streams, then the group's hash. ARGV: [1] group, [2] '$' or '0'.
#: Creates the group on every stream (if missing) and, for a group that starts at
#: the end, remembers each stream's event count so a loss is detected from the start.
ENSURE_GROUP: Final = (
    _PRELUDE
    + """
local n = #KEYS - 1
local hash = KEYS[n + 1]
for i = 1, n do
  local r = redis.pcall('XGROUP', 'CREATE', KEYS[i], ARGV[1], ARGV[2], 'MKSTREAM')
  if type(r) == 'table' and r.err then
    if not string.find(r.err, 'BUSYGROUP') then return r end
  elseif ARGV[2] == '$' then
    local last = redis.call('XREVRANGE', KEYS[i], '+', '-', 'COUNT', 1)
    if last[1] then
      local en, ec = field(last[1][2], 'n'), field(last[1][2], 'c')
      local epoch = epoch_of(last[1][1])
      if en and ec and epoch then
        redis.call('HSET', hash, KEYS[i], epoch .. ':' .. string.format('%d', en + ec))
      end
    end
  end
end
return 1
"""
)

#: KEYS: the streams, the group's hash, the clock. ARGV: [1] group, [2] consumer,
#: [3] count. Reads new entries for this member and, in the same atomic step, checks
#: each stream's entries against the group's running count (kept in the hash): a
#: jump is a loss the group has not seen, whichever member reads it. Returns
#: {streams or false, gaps, last clock id (when nothing was read)}.
READ_GROUP: Final = (
    _PRELUDE
    + """
local n = #KEYS - 2
local hash = KEYS[n + 1]
local clock = KEYS[n + 2]
local args = {'XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[3], 'STREAMS'}
for i = 1, n do args[#args + 1] = KEYS[i] end
for i = 1, n do args[#args + 1] = '>' end
local reply = redis.call(unpack(args))
local gaps = {}
if not reply then
  local last = redis.call('XREVRANGE', clock, '+', '-', 'COUNT', 1)
  local id = '0-0'
  if last[1] then id = last[1][1] end
  return {false, gaps, id}
end
for _, stream in ipairs(reply) do
  local key = stream[1]
  local state = redis.call('HGET', hash, key)
  local epoch, expected
  if state then
    local e, x = string.match(state, '^(%d+):(%d+)$')
    epoch = e
    expected = tonumber(x)
  end
  for _, entry in ipairs(stream[2]) do
    local en, ec = field(entry[2], 'n'), field(entry[2], 'c')
    local e = epoch_of(entry[1])
    if en and ec and e then
      if e ~= epoch then
        epoch = e
        expected = nil
      end
      if expected and en > expected then
        gaps[#gaps + 1] = {key, entry[1], string.format('%d', expected), string.format('%d', en)}
      end
      if (not expected) or en + ec > expected then expected = en + ec end
    end
  end
  if epoch and expected then
    redis.call('HSET', hash, key, epoch .. ':' .. string.format('%d', expected))
  end
end
return {reply, gaps, false}
"""
)
