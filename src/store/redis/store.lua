-- Nimbus's Redis store: every operation is one call of this script (EVALSHA), so each one is
-- atomic: Redis runs a script to its end before it runs anything else. Redis has no rollback,
-- so a commit first checks every condition it has (leases, ETags, checkpoints, blob versions)
-- against what is stored plus what the commit itself has done so far, and writes only when all
-- pass. The C++ side (redis_store.cpp) builds the arguments; times come from the host's clock
-- (ARGV[3]), never the server's.
--
-- ARGV[1] the operation, ARGV[2] the key prefix, ARGV[3] now (unix ms), ARGV[4] the writer's
-- origin (a commit's wake-up names it, so its own host skips what it already knows); the
-- operation's arguments follow, read in order by nx().
--
-- Keys (P = the prefix; names inside keys are length-prefixed, so no name can fake another):
--   P:seq                    message sequence (FIFO order among messages due at one time)
--   P:queues                 set of queue names
--   P:q:<queue>              zset: every message of the queue, score = due (leased: lease expiry)
--   P:ql:<queue>             zset: the leased ones, score = lease expiry
--   P:m:<id>                 hash: a message
--   P:subs:<topic>           zset of subscription names; P:sub:<topic>:<name> hash ty src pre
--   P:s:<store>:<key>        hash: a state entry (v value, e etag, x expires); P:si:<store> zset index
--   P:streams, P:xp:<stream> streams with appends, and their partitions
--   P:x:<stream>:<part>      a Redis stream: entry id 0-(offset+1)
--   P:xn:<stream>            hash part -> next offset; P:xt:<stream> hash part -> last append time
--   P:cps, P:cp:<stream>     streams with checkpoints; hash <group>:<part> -> "offset:updated"
--   P:b:<container>:<name>   hash: a blob's metadata (kept across deletes: versions never go back)
--   P:bd:<container>:<name>  its bytes; P:bn:<container> zset index of live names
--   P:bsubs, P:bgen          the blob subscriptions (encoded by the host) and their generation
--   channel P:changes        wake-ups: origin, then the names a commit made receivable

local P = ARGV[2]
local now = ARGV[3]
local nownum = tonumber(now)
local origin = ARGV[4]
local at = 4
local function nx()
  at = at + 1
  return ARGV[at]
end
local function nn() return tonumber(nx()) end

local function key(kind, ...)
  local k = P .. ':' .. kind
  for _, part in ipairs({...}) do k = k .. ':' .. #part .. ':' .. part end
  return k
end
local function field(a, b) return #a .. ':' .. a .. ':' .. b end
local function unfield(f)
  local colon = string.find(f, ':', 1, true)
  local n = tonumber(string.sub(f, 1, colon - 1))
  return string.sub(f, colon + 1, colon + n), string.sub(f, colon + n + 2)
end

local MSG = {'id', 'eid', 'q', 'ty', 'src', 'sub', 'md', 'pl', 'dl', 'enq', 'due', 'ls', 'err', 'ff', 'lf'}
local function message(id) return redis.call('HMGET', key('m', id), unpack(MSG)) end

local woken = {}
local function wake(name) woken[name] = true end
local function publish_wakes()
  local payload = #origin .. ':' .. origin
  local any = false
  for name in pairs(woken) do
    payload = payload .. #name .. ':' .. name
    any = true
  end
  if any then redis.call('PUBLISH', P .. ':changes', payload) end
  local names = {}
  for name in pairs(woken) do names[#names + 1] = name end
  return names
end

local function insert_message(q, id, eid, ty, src, sub, md, pl, due)
  local seq = redis.call('INCR', P .. ':seq')
  local z = string.format('%016x', seq) .. id
  redis.call('HSET', key('m', id), 'q', q, 'z', z, 'id', id, 'eid', eid, 'ty', ty, 'src', src, 'sub', sub, 'md', md,
    'pl', pl, 'dl', '0', 'enq', now, 'due', due, 'ls', '', 'err', '', 'ff', '0', 'lf', '0')
  redis.call('ZADD', key('q', q), due, z)
  redis.call('SADD', P .. ':queues', q)
  if tonumber(due) <= nownum then wake(q) end
end

local function conflict(text) return {'conflict', text} end

local function remove_message(id)
  local mk = key('m', id)
  local f = redis.call('HMGET', mk, 'q', 'z')
  redis.call('DEL', mk)
  redis.call('ZREM', key('q', f[1]), f[2])
  redis.call('ZREM', key('ql', f[1]), f[2])
end

local function not_leased(id) return 'message ' .. id .. ' is no longer leased by this delivery' end

-- Many commits that only acknowledge (a consumer's usual completion), in one call: each is
-- checked and applied on its own, as a commit of its own would be. Returns 'ok' or the
-- conflict for each.
local function acks()
  local out = {}
  for o = 1, nn() do
    local refs = {}
    for _ = 1, nn() do refs[#refs + 1] = {id = nx(), lease = nx()} end
    local seen, stale = {}, nil
    for _, r in ipairs(refs) do
      if seen[r.id] or r.lease == '' or redis.call('HGET', key('m', r.id), 'ls') ~= r.lease then
        stale = r.id
        break
      end
      seen[r.id] = true
    end
    if stale then
      out[o] = not_leased(stale)
    else
      for _, r in ipairs(refs) do remove_message(r.id) end
      out[o] = 'ok'
    end
  end
  return out
end

-- --- commit ------------------------------------------------------------------------------------

local function subscription_matches(topic, name, ty, src, sub)
  local f = redis.call('HMGET', key('sub', topic, name), 'ty', 'src', 'pre')
  if f[1] and f[1] ~= '' and f[1] ~= ty then return false end
  if f[2] and f[2] ~= '' and f[2] ~= src then return false end
  if f[3] and f[3] ~= '' and string.sub(sub, 1, #f[3]) ~= f[3] then return false end
  return true
end

local function commit()
  -- Read the whole batch.
  local acks, retries, dead, enq, pubs, puts, dels, apps, cps, bputs, bdels = {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}
  for _ = 1, nn() do acks[#acks + 1] = {id = nx(), lease = nx()} end
  for _ = 1, nn() do
    retries[#retries + 1] = {id = nx(), lease = nx(), due = nx(), err = nx(), release = nx() == '1'}
  end
  for _ = 1, nn() do dead[#dead + 1] = {id = nx(), lease = nx(), err = nx()} end
  for _ = 1, nn() do
    enq[#enq + 1] = {q = nx(), id = nx(), eid = nx(), ty = nx(), src = nx(), sub = nx(), md = nx(), pl = nx(), due = nx()}
  end
  for _ = 1, nn() do
    pubs[#pubs + 1] = {topic = nx(), eid = nx(), ty = nx(), src = nx(), sub = nx(), md = nx(), pl = nx(), due = nx()}
  end
  for _ = 1, nn() do
    puts[#puts + 1] = {store = nx(), k = nx(), v = nx(), cond = nx() == '1', match = nx(), x = nx()}
  end
  for _ = 1, nn() do dels[#dels + 1] = {store = nx(), k = nx(), cond = nx() == '1', match = nx()} end
  for _ = 1, nn() do
    apps[#apps + 1] = {stream = nx(), part = nx(), k = nx(), id = nx(), ty = nx(), src = nx(), sub = nx(), md = nx(),
      pl = nx()}
  end
  for _ = 1, nn() do
    cps[#cps + 1] = {grp = nx(), stream = nx(), part = nx(), off = nx(), cond = nx() == '1', if_at = nx()}
  end
  local bgen = nx()
  local function events()
    local list = {}
    for _ = 1, nn() do
      list[#list + 1] = {q = nx(), id = nx(), ty = nx(), src = nx(), sub = nx(), md = nx()}
    end
    return list
  end
  for _ = 1, nn() do
    bputs[#bputs + 1] = {c = nx(), n = nx(), expect = nx(), data = nx(), v = nx(), sz = nx(), ct = nx(), sha = nx(),
      cr = nx(), up = nx(), md = nx(), events = events()}
  end
  for _ = 1, nn() do bdels[#bdels + 1] = {c = nx(), n = nx(), expect = nx(), events = events()} end
  local wakes = {}
  for _ = 1, nn() do wakes[#wakes + 1] = nx() end

  -- Check every condition, as the batch would see them in order.
  local leased = {}
  local function check_lease(id, lease)
    if leased[id] or redis.call('HGET', key('m', id), 'ls') ~= lease or lease == '' then return not_leased(id) end
    leased[id] = true
  end
  local acked = {}  -- removed by this batch first, so their ids may be used again by it
  for _, a in ipairs(acks) do
    local e = check_lease(a.id, a.lease)
    if e then return conflict(e) end
    acked[a.id] = true
  end
  for _, r in ipairs(retries) do
    local e = check_lease(r.id, r.lease)
    if e then return conflict(e) end
  end
  for _, d in ipairs(dead) do
    local e = check_lease(d.id, d.lease)
    if e then return conflict(e) end
  end
  local new_ids = {}
  local function check_new(id)
    if new_ids[id] or (not acked[id] and redis.call('EXISTS', key('m', id)) == 1) then
      return 'a message with id ' .. id .. ' already exists'
    end
    new_ids[id] = true
  end
  for _, m in ipairs(enq) do
    local e = check_new(m.id)
    if e then return conflict(e) end
  end
  for _, p in ipairs(pubs) do
    p.copies = {}
    for _, name in ipairs(redis.call('ZRANGE', key('subs', p.topic), 0, -1)) do
      if subscription_matches(p.topic, name, p.ty, p.src, p.sub) then
        local e = check_new(p.eid .. '/' .. name)
        if e then return conflict(e) end
        p.copies[#p.copies + 1] = name
      end
    end
  end
  local state = {}  -- store:key -> {alive, etag}
  local function entry(store, k)
    local sk = field(store, k)
    if not state[sk] then
      local f = redis.call('HMGET', key('s', store, k), 'e', 'x')
      local alive = f[1] and (f[2] == '0' or tonumber(f[2]) > nownum)
      state[sk] = {alive = alive and true or false, etag = alive and f[1] or ''}
    end
    return state[sk]
  end
  local etags = {}
  for _, p in ipairs(puts) do
    local s = entry(p.store, p.k)
    if p.cond and ((p.match == '' and s.alive) or (p.match ~= '' and (not s.alive or s.etag ~= p.match))) then
      return conflict('state ' .. p.store .. '/' .. p.k .. " has ETag '" .. s.etag .. "', not '" .. p.match .. "'")
    end
    local etag = s.alive and tostring(tonumber(s.etag) + 1) or '1'
    s.alive, s.etag, p.etag = true, etag, etag
    etags[#etags + 1] = etag
  end
  for _, d in ipairs(dels) do
    local s = entry(d.store, d.k)
    if d.cond and ((d.match == '' and s.alive) or (d.match ~= '' and (not s.alive or s.etag ~= d.match))) then
      return conflict('state ' .. d.store .. '/' .. d.k .. " has ETag '" .. s.etag .. "', not '" .. d.match .. "'")
    end
    s.alive, s.etag = false, ''
  end
  local checkpoint = {}
  for _, c in ipairs(cps) do
    local ck = field(c.grp, c.stream) .. ':' .. c.part
    if checkpoint[ck] == nil then
      local v = redis.call('HGET', key('cp', c.stream), field(c.grp, c.part))
      checkpoint[ck] = v and string.match(v, '^[^:]*') or false
    end
    local was = checkpoint[ck]
    if c.cond then
      local ok = (c.if_at == '0' and (not was or was == '0')) or (was and was == c.if_at)
      if not ok then
        return conflict('checkpoint of group ' .. c.grp .. ' on ' .. c.stream .. '/' .. c.part .. ' is at ' ..
          (was or '0') .. ', not ' .. c.if_at)
      end
    end
    checkpoint[ck] = c.off
  end
  -- Blobs were prepared by the host from what it read; if anything moved since, it reads again.
  if #bputs + #bdels > 0 then
    if bgen ~= (redis.call('GET', P .. ':bgen') or '0') then return {'stale'} end
    -- Each name as "VERSION:DELETED" ('' never seen), as the host read it, and as the batch
    -- leaves it for its next operation on the same name.
    local version = {}
    local function check_version(b)
      local bk = field(b.c, b.n)
      if version[bk] == nil then
        local f = redis.call('HMGET', key('b', b.c, b.n), 'v', 'del')
        version[bk] = f[1] and (f[1] .. ':' .. (f[2] or '0')) or ''
      end
      return version[bk] == b.expect, bk
    end
    for _, b in ipairs(bputs) do
      local ok, bk = check_version(b)
      if not ok then return {'stale'} end
      version[bk] = b.v .. ':0'
    end
    for _, b in ipairs(bdels) do
      local ok, bk = check_version(b)
      if not ok then return {'stale'} end
      if b.expect ~= '' then version[bk] = string.match(b.expect, '^(%d+):') .. ':1' end
    end
    for _, list in ipairs({bputs, bdels}) do
      for _, b in ipairs(list) do
        for _, e in ipairs(b.events) do
          local err = check_new(e.id)
          if err then return conflict(err) end
        end
      end
    end
  end

  -- Every check passed: write.
  for _, a in ipairs(acks) do remove_message(a.id) end
  for _, r in ipairs(retries) do
    local mk = key('m', r.id)
    local f = redis.call('HMGET', mk, 'q', 'z', 'dl', 'ff')
    if r.release then
      local dl = tonumber(f[3]) - 1
      redis.call('HSET', mk, 'ls', '', 'due', r.due, 'dl', tostring(dl > 0 and dl or 0))
    else
      redis.call('HSET', mk, 'ls', '', 'due', r.due, 'err', r.err, 'lf', now, 'ff', f[4] == '0' and now or f[4])
    end
    redis.call('ZADD', key('q', f[1]), r.due, f[2])
    redis.call('ZREM', key('ql', f[1]), f[2])
    if tonumber(r.due) <= nownum then wake(f[1]) end
  end
  for _, d in ipairs(dead) do
    local mk = key('m', d.id)
    local f = redis.call('HMGET', mk, 'q', 'z', 'ff')
    local to = f[1] .. '.dead'
    redis.call('HSET', mk, 'q', to, 'ls', '', 'due', now, 'err', d.err, 'lf', now, 'ff', f[3] == '0' and now or f[3])
    redis.call('ZREM', key('q', f[1]), f[2])
    redis.call('ZREM', key('ql', f[1]), f[2])
    redis.call('ZADD', key('q', to), now, f[2])
    redis.call('SADD', P .. ':queues', to)
  end
  for _, m in ipairs(enq) do insert_message(m.q, m.id, m.eid, m.ty, m.src, m.sub, m.md, m.pl, m.due) end
  for _, p in ipairs(pubs) do
    for _, name in ipairs(p.copies) do
      insert_message(p.topic .. '/' .. name, p.eid .. '/' .. name, p.eid, p.ty, p.src, p.sub, p.md, p.pl, p.due)
    end
  end
  for _, p in ipairs(puts) do
    redis.call('HSET', key('s', p.store, p.k), 'v', p.v, 'e', p.etag, 'x', p.x)
    redis.call('ZADD', key('si', p.store), 0, p.k)
  end
  for _, d in ipairs(dels) do
    redis.call('DEL', key('s', d.store, d.k))
    redis.call('ZREM', key('si', d.store), d.k)
  end
  local appended = {}
  for _, a in ipairs(apps) do
    local off = redis.call('HINCRBY', key('xn', a.stream), a.part, 1) - 1
    -- Append times never go back within a partition (hosts' clocks may differ a little), so
    -- that retention by time and "the offset at a time" can search by offset.
    local last = tonumber(redis.call('HGET', key('xt', a.stream), a.part) or '0')
    local t = now
    if last > nownum then t = tostring(last) end
    redis.call('HSET', key('xt', a.stream), a.part, t)
    redis.call('XADD', key('x', a.stream, a.part), '0-' .. (off + 1), 'k', a.k, 'id', a.id, 'ty', a.ty, 'src', a.src,
      'sub', a.sub, 'md', a.md, 'pl', a.pl, 't', t)
    redis.call('SADD', P .. ':streams', a.stream)
    redis.call('SADD', key('xp', a.stream), a.part)
    appended[#appended + 1] = tostring(off)
    wake('stream ' .. a.stream .. ' ' .. a.part)
  end
  for _, c in ipairs(cps) do
    redis.call('HSET', key('cp', c.stream), field(c.grp, c.part), c.off .. ':' .. now)
    redis.call('SADD', P .. ':cps', c.stream)
  end
  local function blob_events(b)
    for _, e in ipairs(b.events) do insert_message(e.q, e.id, e.id, e.ty, e.src, e.sub, e.md, '', now) end
  end
  for _, b in ipairs(bputs) do
    redis.call('HSET', key('b', b.c, b.n), 'v', b.v, 'del', '0', 'sz', b.sz, 'ct', b.ct, 'sha', b.sha, 'cr', b.cr,
      'up', b.up, 'md', b.md)
    redis.call('SET', key('bd', b.c, b.n), b.data)
    redis.call('ZADD', key('bn', b.c), 0, b.n)
    blob_events(b)
  end
  for _, b in ipairs(bdels) do
    if b.expect ~= '' and redis.call('HGET', key('b', b.c, b.n), 'del') == '0' then
      redis.call('HSET', key('b', b.c, b.n), 'del', '1', 'up', now)
      redis.call('DEL', key('bd', b.c, b.n))
      redis.call('ZREM', key('bn', b.c), b.n)
      blob_events(b)
    end
  end
  for _, name in ipairs(wakes) do wake(name) end
  return {'ok', etags, appended, publish_wakes()}
end

-- --- queues --------------------------------------------------------------------------------------

local function receive()
  local q, max, lease, expires = nx(), nx(), nx(), nx()
  local out = {}
  local picked = redis.call('ZRANGEBYSCORE', key('q', q), '-inf', now, 'LIMIT', 0, max)
  for _, z in ipairs(picked) do
    local id = string.sub(z, 17)
    local mk = key('m', id)
    redis.call('HINCRBY', mk, 'dl', 1)
    redis.call('HSET', mk, 'ls', lease .. string.sub(z, 1, 16), 'due', expires)
    redis.call('ZADD', key('q', q), expires, z)
    redis.call('ZADD', key('ql', q), expires, z)
    out[#out + 1] = message(id)
  end
  return out
end

local function extend()
  local expires = nx()
  for _ = 1, nn() do
    local id, lease = nx(), nx()
    local mk = key('m', id)
    local f = redis.call('HMGET', mk, 'ls', 'q', 'z')
    if f[1] and f[1] ~= '' and f[1] == lease then
      redis.call('HSET', mk, 'due', expires)
      redis.call('ZADD', key('q', f[2]), expires, f[3])
      redis.call('ZADD', key('ql', f[2]), expires, f[3])
    end
  end
  return 'ok'
end

local function subscribe()
  local topic, name, ty, src, pre = nx(), nx(), nx(), nx(), nx()
  redis.call('ZADD', key('subs', topic), 0, name)
  redis.call('HSET', key('sub', topic, name), 'ty', ty, 'src', src, 'pre', pre)
  return 'ok'
end

local function purge()
  local q = nx()
  local members = redis.call('ZRANGE', key('q', q), 0, -1)
  for _, z in ipairs(members) do redis.call('DEL', key('m', string.sub(z, 17))) end
  redis.call('DEL', key('q', q), key('ql', q))
  return #members
end

local function replay_dead()
  local q = nx()
  local from = q .. '.dead'
  local members = redis.call('ZRANGE', key('q', from), 0, -1)
  for _, z in ipairs(members) do
    redis.call('HSET', key('m', string.sub(z, 17)), 'q', q, 'due', now, 'ls', '', 'dl', '0')
    redis.call('ZADD', key('q', q), now, z)
  end
  redis.call('DEL', key('q', from), key('ql', from))
  if #members > 0 then
    redis.call('SADD', P .. ':queues', q)
    wake(q)
  end
  publish_wakes()
  return #members
end

local function peek()
  local q, limit = nx(), nn()
  local out = {}
  if limit <= 0 then return out end
  for _, z in ipairs(redis.call('ZRANGE', key('q', q), 0, limit - 1)) do out[#out + 1] = message(string.sub(z, 17)) end
  return out
end

local function stats()
  local out = {}
  for _, q in ipairs(redis.call('SMEMBERS', P .. ':queues')) do
    local all = redis.call('ZCARD', key('q', q))
    if all > 0 then
      local ready = redis.call('ZCOUNT', key('q', q), '-inf', now)
      local in_flight = redis.call('ZCOUNT', key('ql', q), '(' .. now, '+inf')
      out[#out + 1] = {q, ready, all - ready - in_flight, in_flight}
    end
  end
  return out
end

local function next_due()
  local q = nx()
  local r = redis.call('ZRANGEBYSCORE', key('q', q), '(' .. now, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
  if #r == 0 then return '0' end
  return redis.call('HGET', key('m', string.sub(r[1], 17)), 'due')
end

-- --- state ---------------------------------------------------------------------------------------

local function get()
  local store, k = nx(), nx()
  local f = redis.call('HMGET', key('s', store, k), 'v', 'e', 'x')
  if not f[2] or (f[3] ~= '0' and tonumber(f[3]) <= nownum) then return {} end
  return f
end

local function scan()
  local store, prefix, limit = nx(), nx(), nn()
  local out = {}
  local from = '[' .. prefix
  while #out < limit do
    local keys = redis.call('ZRANGEBYLEX', key('si', store), from, '+', 'LIMIT', 0, 200)
    if #keys == 0 then return out end
    for _, k in ipairs(keys) do
      if string.sub(k, 1, #prefix) ~= prefix then return out end  -- sorted: past the prefix
      local f = redis.call('HMGET', key('s', store, k), 'v', 'e', 'x')
      if f[2] and (f[3] == '0' or tonumber(f[3]) > nownum) and #out < limit then out[#out + 1] = {k, f[1], f[2], f[3]} end
    end
    from = '(' .. keys[#keys]
  end
  return out
end

-- --- streams -------------------------------------------------------------------------------------

local function record_fields(entry)
  local f = {}
  for j = 1, #entry[2], 2 do f[entry[2][j]] = entry[2][j + 1] end
  local off = tonumber(string.match(entry[1], '%-(%d+)$')) - 1
  return {tostring(off), f.k, f.id, f.ty, f.src, f.sub, f.md, f.pl, f.t}
end

local function read_stream()
  local stream, part, from, max = nx(), nx(), nn(), nn()
  local out = {}
  -- Past the end is nothing (and a huge offset never reaches XRANGE as a number in E notation).
  if max <= 0 or from >= tonumber(redis.call('HGET', key('xn', stream), part) or '0') then return out end
  for _, e in ipairs(redis.call('XRANGE', key('x', stream, part), '0-' .. (from + 1), '+', 'COUNT', max)) do
    out[#out + 1] = record_fields(e)
  end
  return out
end

local function first_offset(stream, part, next_offset)
  local e = redis.call('XRANGE', key('x', stream, part), '-', '+', 'COUNT', 1)
  if #e == 0 then return next_offset end
  return tonumber(string.match(e[1][1], '%-(%d+)$')) - 1
end

local function stream_info()
  local stream = nx()
  local out = {}
  for _, part in ipairs(redis.call('SMEMBERS', key('xp', stream))) do
    local next_offset = tonumber(redis.call('HGET', key('xn', stream), part) or '0')
    out[#out + 1] = {part, tostring(first_offset(stream, part, next_offset)), tostring(next_offset)}
  end
  return out
end

local function checkpoints()
  local stream = nx()
  local streams = {stream}
  if stream == '' then streams = redis.call('SMEMBERS', P .. ':cps') end
  local out = {}
  for _, s in ipairs(streams) do
    local all = redis.call('HGETALL', key('cp', s))
    for j = 1, #all, 2 do
      local grp, part = unfield(all[j])
      local off, updated = string.match(all[j + 1], '^([^:]*):(.*)$')
      out[#out + 1] = {grp, s, part, off, updated}
    end
  end
  return out
end

-- The first offset of a partition appended at or after `t` (append times never go back within
-- a partition): a binary search over offsets.
local function offset_at(stream, part, t)
  local next_offset = tonumber(redis.call('HGET', key('xn', stream), part) or '0')
  local lo, hi = first_offset(stream, part, next_offset), next_offset
  local xk = key('x', stream, part)
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    local e = redis.call('XRANGE', xk, '0-' .. (mid + 1), '+', 'COUNT', 1)
    if #e == 0 then return hi end
    local r = record_fields(e[1])
    local off = tonumber(r[1])
    if tonumber(r[9]) >= t then hi = off else lo = off + 1 end
  end
  return lo
end

local function stream_offset_at()
  local stream, part, t = nx(), nx(), nn()
  return tostring(offset_at(stream, part, t))
end

local function trim_stream()
  local stream, before, keep_text = nx(), nn(), nx()
  local keep = tonumber(keep_text)
  local removed = 0
  for _, part in ipairs(redis.call('SMEMBERS', key('xp', stream))) do
    local xk = key('x', stream, part)
    if before > 0 then
      local off = offset_at(stream, part, before)
      removed = removed + redis.call('XTRIM', xk, 'MINID', '0-' .. (off + 1))
    end
    if keep > 0 then removed = removed + redis.call('XTRIM', xk, 'MAXLEN', keep_text) end
  end
  return removed
end

-- --- blobs ---------------------------------------------------------------------------------------

local BLOB = {'v', 'del', 'sz', 'ct', 'sha', 'cr', 'up', 'md'}

local function head_blob()
  local c, n = nx(), nx()
  local f = redis.call('HMGET', key('b', c, n), unpack(BLOB))
  if f[2] ~= '0' then return {} end
  return f
end

local function get_blob()
  local c, n = nx(), nx()
  local f = redis.call('HMGET', key('b', c, n), unpack(BLOB))
  if f[2] ~= '0' then return {} end
  f[#f + 1] = redis.call('GET', key('bd', c, n)) or ''
  return f
end

-- What a put or delete is prepared from: each name's metadata (empty when never seen) and the
-- subscriptions' generation, then the subscriptions themselves.
local function blob_versions()
  local out = {redis.call('GET', P .. ':bgen') or '0', redis.call('GET', P .. ':bsubs') or ''}
  for _ = 1, nn() do
    local c, n = nx(), nx()
    local f = redis.call('HMGET', key('b', c, n), unpack(BLOB))
    if not f[1] then f = {} end
    out[#out + 1] = f
  end
  return out
end

-- `from` is the host's ZRANGEBYLEX start: after the `after` name, or at the prefix.
local function list_blobs()
  local c, prefix, from, want = nx(), nx(), nx(), nn()
  local out = {}
  while #out < want do
    local names = redis.call('ZRANGEBYLEX', key('bn', c), from, '+', 'LIMIT', 0, 200)
    if #names == 0 then return out end
    for _, n in ipairs(names) do
      if string.sub(n, 1, #prefix) ~= prefix then return out end  -- sorted: past the prefix
      local f = redis.call('HMGET', key('b', c, n), unpack(BLOB))
      if f[2] == '0' and #out < want then
        table.insert(f, 1, n)
        out[#out + 1] = f
      end
    end
    from = '(' .. names[#names]
  end
  return out
end

local function set_blob_subscriptions()
  redis.call('SET', P .. ':bsubs', nx())
  redis.call('INCR', P .. ':bgen')
  return 'ok'
end

local ops = {
  commit = commit, acks = acks, receive = receive, extend = extend, subscribe = subscribe, purge = purge, replay_dead = replay_dead,
  trim_stream = trim_stream, set_blob_subscriptions = set_blob_subscriptions, peek = peek, stats = stats,
  next_due = next_due, get = get, scan = scan, read_stream = read_stream, stream_info = stream_info,
  checkpoints = checkpoints, stream_offset_at = stream_offset_at, head_blob = head_blob, get_blob = get_blob,
  list_blobs = list_blobs, blob_versions = blob_versions,
}
local op = ops[ARGV[1]]
if not op then return redis.error_reply('nimbus: unknown store operation ' .. tostring(ARGV[1])) end
return op()
