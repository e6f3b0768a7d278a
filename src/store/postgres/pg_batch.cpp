// The PostgreSQL store's writes inside the writer's transaction: one Batch (acks, retries,
// dead letters, enqueues, topic fan-out, state, stream appends and checkpoints, blobs and the
// events they raise) applied as a unit. Every condition (a lease, an ETag, create-only, a
// checkpoint's offset) is in the WHERE clause of the statement it guards, so two hosts
// racing for the same row cannot both pass it.
#include <algorithm>
#include <limits>
#include <map>
#include <set>

#include "core/blob_path.h"
#include "core/ids.h"
#include "core/text.h"
#include "store/backend.h"
#include "store/postgres/pg_store.h"

namespace nimbus::pg {
namespace {

constexpr std::size_t kChunk = 1u << 20;  // blob bytes per row of blob_chunks

Error conflict(std::string message) { return Error{std::move(message), store_error::conflict}; }

// A function's error text as PostgreSQL text can hold it (UTF-8, no NUL): whatever a
// function said must not keep its message from its retry or its dead letter.
std::string printable(const std::string& text) {
  std::string out = replace_invalid_utf8(text);
  std::replace(out.begin(), out.end(), '\0', ' ');
  return out;
}

Error not_leased(const std::string& id) { return conflict("message " + id + " is no longer leased by this delivery"); }

// Statements that may be deferred (Connection::pipelining) check their rows when they come,
// before the COMMIT is sent; a failed check is the transaction's failure, and the writer then
// runs the group again a statement at a time, where each is named (pg_store.cpp, run_pass).
const std::string kAck = "DELETE FROM messages WHERE id=$1 AND lease=$2";
const std::string kInsertMessage =
    "INSERT INTO messages(id, event_id, queue, due, enqueued, type, source, subject, metadata, payload, lease, "
    "deliveries) VALUES($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12) ON CONFLICT (id) DO NOTHING";
const std::string kInsertMessages =
    "INSERT INTO messages(id, event_id, queue, due, enqueued, type, source, subject, metadata, payload, lease, "
    "deliveries) SELECT u.id, u.event_id, u.queue, u.due, $5, u.type, u.source, u.subject, decode(u.metadata, 'hex'), "
    "decode(u.payload, 'hex'), NULLIF(u.lease, ''), CASE WHEN u.lease = '' THEN 0 ELSE 1 END "
    "FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $6::text[], $7::text[], "
    "$8::text[], $9::text[], $10::text[], $11::text[]) AS u(id, event_id, queue, due, type, source, subject, metadata, "
    "payload, lease) ON CONFLICT (id) DO NOTHING RETURNING id";
const std::string kPut =
    "INSERT INTO state(store, key, value, etag, expires) VALUES($1,$2,$3,1,$4) ON CONFLICT(store, key) DO UPDATE SET "
    "value=excluded.value, etag=CASE WHEN state.expires<>0 AND state.expires<=$5 THEN 1 ELSE state.etag+1 END, "
    "expires=excluded.expires RETURNING etag";
// Create only: an entry that is there and alive stays as it is.
const std::string kPutCreate =
    "INSERT INTO state(store, key, value, etag, expires) VALUES($1,$2,$3,1,$4) ON CONFLICT(store, key) DO UPDATE SET "
    "value=excluded.value, etag=1, expires=excluded.expires WHERE state.expires<>0 AND state.expires<=$5 "
    "RETURNING etag";
const std::string kPutIfMatch =
    "UPDATE state SET value=$3, etag=etag+1, expires=$4 WHERE store=$1 AND key=$2 AND etag::text=$5 "
    "AND (expires=0 OR expires>$6) RETURNING etag";

// The ETag a state entry has now ("" when there is none).
Expected<std::string> state_etag(Connection& c, const std::string& store, const std::string& key, int64_t now) {
  auto r = c.run("SELECT etag FROM state WHERE store=$1 AND key=$2 AND (expires=0 OR expires>$3)",
                 {Param::of(store), Param::of(key), Param::of(now)});
  if (!r) return r.error();
  return r->size() > 0 ? std::to_string(r->integer(0, 0)) : std::string();
}

// The conflict of a state write whose ETag condition failed (or the error reading the ETag).
Error etag_conflict(Connection& c, const std::string& store, const std::string& key, int64_t now,
                    const std::string& wanted) {
  auto etag = state_etag(c, store, key, now);
  if (!etag) return etag.error();
  return conflict("state " + store + "/" + key + " has ETag '" + *etag + "', not '" + wanted + "'");
}

}  // namespace

Status PgStore::insert_message(Connection& c, const std::string& queue, const NewMessage& m, const std::string& id,
                               int64_t now, std::vector<std::string>& woken, const Claim* claim) {
  const bool claimed = claim && claim->to;
  // A claimed message is leased to its consumer here (its first delivery), due when that
  // lease ends; nobody else need hear of it.
  Params params{Param::of(id), Param::of(m.event_id.empty() ? id : m.event_id), Param::of(queue),
                Param::of(claimed ? saturating_after(now, claim->lease_ms) : saturating_after(now, m.delay_ms)),
                Param::of(now), Param::of(m.type), Param::of(m.source), Param::of(m.subject),
                Param::blob(encode_headers(m.metadata)), Param::blob(m.payload),
                claimed ? Param::of(claim->lease) : Param{}, Param::of(int64_t{claimed ? 1 : 0})};
  if (m.delay_ms <= 0 && !claimed) woken.push_back(queue);
  auto check = [id](const Rows& r) -> Status {
    if (r.affected() != 1) return conflict("a message with id " + id + " already exists");
    return ok_status();
  };
  return c.write(kInsertMessage, std::move(params), std::move(check));
}

Status PgStore::insert_messages(Connection& c, const std::vector<Batch::Enqueue>& enqueues,
                                const std::vector<std::string>& ids, int64_t now, std::vector<std::string>& woken,
                                const std::vector<Claim>& claims) {
  std::vector<std::string> event_ids, queues, types, sources, subjects, metadata, payloads, leases;
  std::vector<int64_t> dues;
  for (std::size_t i = 0; i < enqueues.size(); ++i) {
    const NewMessage& m = enqueues[i].message;
    const bool claimed = i < claims.size() && claims[i].to;
    event_ids.push_back(m.event_id.empty() ? ids[i] : m.event_id);
    queues.push_back(enqueues[i].queue);
    dues.push_back(claimed ? saturating_after(now, claims[i].lease_ms) : saturating_after(now, m.delay_ms));
    types.push_back(m.type);
    sources.push_back(m.source);
    subjects.push_back(m.subject);
    metadata.push_back(hex(encode_headers(m.metadata)));  // bytes travel as hex in a text array
    payloads.push_back(hex(m.payload));
    leases.push_back(claimed ? claims[i].lease : std::string());  // "": not leased
    if (m.delay_ms <= 0 && !claimed) woken.push_back(enqueues[i].queue);
  }
  // Rows are inserted in array order, so their sequence (the FIFO order) follows the batch.
  Params params{Param::of(text_array(ids)), Param::of(text_array(event_ids)), Param::of(text_array(queues)),
                Param::of(bigint_array(dues)), Param::of(now), Param::of(text_array(types)), Param::of(text_array(sources)),
                Param::of(text_array(subjects)), Param::of(text_array(metadata)), Param::of(text_array(payloads)),
                Param::of(text_array(leases))};
  auto check = [ids](const Rows& r) -> Status {
    if (r.size() == static_cast<int>(ids.size())) return ok_status();
    // Named: the first id that was not inserted (it existed, or came twice in this commit).
    std::multiset<std::string> inserted;
    for (int i = 0; i < r.size(); ++i) inserted.insert(r.text(i, 0));
    for (const auto& id : ids) {
      auto it = inserted.find(id);
      if (it == inserted.end()) return conflict("a message with id " + id + " already exists");
      inserted.erase(it);
    }
    return conflict("a message with one of this commit's ids already exists");
  };
  return c.write(kInsertMessages, std::move(params), std::move(check));
}

Status PgStore::apply(Connection& c, const Batch& b, BatchResult& result, std::vector<std::string>& woken,
                      const std::vector<Claim>& claims) {
  const int64_t now = unix_ms(clock_);
  for (const auto& ref : b.acks) {
    auto check = [id = ref.id](const Rows& r) { return r.affected() == 1 ? ok_status() : Status(not_leased(id)); };
    if (auto st = c.write(kAck, {Param::of(ref.id), Param::of(ref.lease)}, std::move(check)); !st) return st;
  }
  for (const auto& rt : b.retries) {
    if (rt.release) {
      auto r = c.run("UPDATE messages SET lease=NULL, due=$1, deliveries=greatest(deliveries-1, 0) WHERE id=$2 AND lease=$3",
                     {Param::of(rt.due_ms), Param::of(rt.ref.id), Param::of(rt.ref.lease)});
      if (!r) return r.error();
      if (r->affected() != 1) return not_leased(rt.ref.id);
      continue;
    }
    auto r = c.run(
        "UPDATE messages SET lease=NULL, due=$1, error=$2, last_failed=$3, "
        "first_failed=CASE first_failed WHEN 0 THEN $3 ELSE first_failed END WHERE id=$4 AND lease=$5 RETURNING queue",
        {Param::of(rt.due_ms), Param::of(printable(rt.error)), Param::of(now), Param::of(rt.ref.id),
         Param::of(rt.ref.lease)});
    if (!r) return r.error();
    if (r->size() != 1) return not_leased(rt.ref.id);
    if (rt.due_ms <= now) woken.push_back(r->text(0, 0));
  }
  for (const auto& d : b.dead) {
    auto r = c.run(
        "UPDATE messages SET queue=queue||'.dead', lease=NULL, due=$1, error=$2, last_failed=$1, "
        "first_failed=CASE first_failed WHEN 0 THEN $1 ELSE first_failed END WHERE id=$3 AND lease=$4",
        {Param::of(now), Param::of(printable(d.error)), Param::of(d.ref.id), Param::of(d.ref.lease)});
    if (!r) return r.error();
    if (r->affected() != 1) return not_leased(d.ref.id);
  }
  if (b.enqueues.size() > 1) {
    for (const auto& e : b.enqueues) result.message_ids.push_back(e.message.id.empty() ? new_invocation_id() : e.message.id);
    if (auto st = insert_messages(c, b.enqueues, result.message_ids, now, woken, claims); !st) return st;
  } else {
    for (std::size_t i = 0; i < b.enqueues.size(); ++i) {
      const auto& e = b.enqueues[i];
      std::string id = e.message.id.empty() ? new_invocation_id() : e.message.id;
      if (auto st = insert_message(c, e.queue, e.message, id, now, woken, i < claims.size() ? &claims[i] : nullptr); !st) {
        return st;
      }
      result.message_ids.push_back(id);
    }
  }
  for (const auto& p : b.publishes) {
    const std::string event_id = publish_event_id(p.message);
    NewMessage copy = p.message;
    copy.event_id = event_id;
    auto subs = c.run("SELECT topic, name, type, source, subject_prefix FROM subscriptions WHERE topic=$1 ORDER BY name",
                      {Param::of(p.topic)});
    if (!subs) return subs.error();
    for (int i = 0; i < subs->size(); ++i) {
      Subscription s{subs->text(i, 0), subs->text(i, 1), subs->text(i, 2), subs->text(i, 3), subs->text(i, 4)};
      if (!subscription_matches(s, copy)) continue;
      // One copy per subscription; ids derive from the event id, so a publish is idempotent.
      if (auto st = insert_message(c, p.topic + "/" + s.name, copy, event_id + "/" + s.name, now, woken); !st) return st;
    }
    result.message_ids.push_back(event_id);
  }
  if (auto st = apply_state(c, b, result, now); !st) return st;
  if (auto st = apply_streams(c, b, result, woken, now); !st) return st;
  woken.insert(woken.end(), b.wakes.begin(), b.wakes.end());
  return apply_blobs(c, b, result, woken, now);
}

Status PgStore::upsert_many(Connection& c, const Batch& b, std::size_t from, std::size_t to, BatchResult& result,
                            int64_t now) {
  std::vector<std::string> stores, keys, values;
  std::vector<int64_t> expires;
  for (std::size_t i = from; i < to; ++i) {
    const Batch::Put& p = b.puts[i];
    stores.push_back(p.store);
    keys.push_back(p.key);
    values.push_back(hex(p.value));  // bytes travel as hex in a text array
    expires.push_back(p.ttl_ms > 0 ? saturating_after(now, p.ttl_ms) : 0);
  }
  static const std::string sql =
      "INSERT INTO state(store, key, value, etag, expires) SELECT u.store, u.key, decode(u.value, 'hex'), 1, u.expires "
      "FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[]) AS u(store, key, value, expires) "
      "ON CONFLICT(store, key) DO UPDATE SET value=excluded.value, "
      "etag=CASE WHEN state.expires<>0 AND state.expires<=$5 THEN 1 ELSE state.etag+1 END, expires=excluded.expires "
      "RETURNING store, key, etag";
  Params params{Param::of(text_array(stores)), Param::of(text_array(keys)), Param::of(text_array(values)),
                Param::of(bigint_array(expires)), Param::of(now)};
  // Each put's ETag, in the batch's order. (An upsert returns every row it wrote.)
  auto take = [&b, &result, from, to](const Rows& r) -> Status {
    std::map<std::pair<std::string, std::string>, int64_t> etags;
    for (int i = 0; i < r.size(); ++i) etags[{r.text(i, 0), r.text(i, 1)}] = r.integer(i, 2);
    for (std::size_t i = from; i < to; ++i) {
      auto it = etags.find({b.puts[i].store, b.puts[i].key});
      if (it == etags.end()) {
        return Error{"PostgreSQL did not return the ETag of state " + b.puts[i].store + "/" + b.puts[i].key, store_error::io};
      }
      result.etags.push_back(std::to_string(it->second));
    }
    return ok_status();
  };
  return c.write(sql, std::move(params), std::move(take));
}

Status PgStore::apply_state(Connection& c, const Batch& b, BatchResult& result, int64_t now) {
  for (std::size_t i = 0; i < b.puts.size(); ++i) {
    const auto& p = b.puts[i];
    // A run of unconditional puts of distinct keys (an invocation history's records, a
    // step's page) is one statement: one round trip instead of one each.
    if (!p.if_match) {
      std::set<std::pair<std::string_view, std::string_view>> seen;
      std::size_t end = i;
      while (end < b.puts.size() && !b.puts[end].if_match && seen.insert({b.puts[end].store, b.puts[end].key}).second) ++end;
      if (end - i >= 2) {
        if (auto st = upsert_many(c, b, i, end, result, now); !st) return st;
        i = end - 1;
        continue;
      }
    }
    const int64_t expires = p.ttl_ms > 0 ? saturating_after(now, p.ttl_ms) : 0;
    const std::string& sql = !p.if_match ? kPut : p.if_match->empty() ? kPutCreate : kPutIfMatch;
    Params params{Param::of(p.store), Param::of(p.key), Param::blob(p.value), Param::of(expires)};
    if (p.if_match && !p.if_match->empty()) params.push_back(Param::of(*p.if_match));
    params.push_back(Param::of(now));
    if (c.pipelining()) {
      // Its condition failed: a conflict (named when the group runs again a statement at a time).
      c.defer(sql, std::move(params), [&result, &p](const Rows& r) -> Status {
        if (r.size() != 1) return conflict("state " + p.store + "/" + p.key + " does not have ETag '" + p.if_match.value_or("") + "'");
        result.etags.push_back(std::to_string(r.integer(0, 0)));
        return ok_status();
      });
      continue;
    }
    Expected<Rows> r = c.run(sql, params);
    if (!r) return r.error();
    if (r->size() != 1) {
      return etag_conflict(c, p.store, p.key, now, *p.if_match);
    }
    result.etags.push_back(std::to_string(r->integer(0, 0)));
  }
  for (const auto& d : b.deletes) {
    if (d.if_match && d.if_match->empty()) {
      // "Must not exist": deleting nothing, if nothing is there.
      auto etag = state_etag(c, d.store, d.key, now);
      if (!etag) return etag.error();
      if (!etag->empty()) return conflict("state " + d.store + "/" + d.key + " has ETag '" + *etag + "', not ''");
      continue;
    }
    if (d.if_match) {
      auto r = c.run("DELETE FROM state WHERE store=$1 AND key=$2 AND etag::text=$3 AND (expires=0 OR expires>$4)",
                     {Param::of(d.store), Param::of(d.key), Param::of(*d.if_match), Param::of(now)});
      if (!r) return r.error();
      if (r->affected() != 1) {
        return etag_conflict(c, d.store, d.key, now, *d.if_match);
      }
      continue;
    }
    auto r = c.run("DELETE FROM state WHERE store=$1 AND key=$2", {Param::of(d.store), Param::of(d.key)});
    if (!r) return r.error();
  }
  return ok_status();
}

Status PgStore::apply_streams(Connection& c, const Batch& b, BatchResult& result, std::vector<std::string>& woken,
                              int64_t now) {
  // Offsets: one counter update per (stream, partition) in the batch (its row lock orders
  // appenders on every host), then the records.
  const AppendPlan plan = plan_appends(b);
  const auto& partitions = plan.partitions;
  const auto& ids = plan.ids;
  std::map<std::pair<std::string, int>, int64_t> next;
  for (const auto& [sp, n] : plan.count) {
    auto r = c.run(
        "INSERT INTO stream_partitions(stream, part, next_offset) VALUES($1,$2,$3) ON CONFLICT(stream, part) "
        "DO UPDATE SET next_offset=stream_partitions.next_offset+$3 RETURNING next_offset - $3",
        {Param::of(sp.first), Param::of(int64_t{sp.second}), Param::of(n)});
    if (!r) return r.error();
    next[sp] = r->integer(0, 0);
  }
  for (std::size_t i = 0; i < b.appends.size(); ++i) {
    const auto& a = b.appends[i];
    const int partition = partitions[i];
    const int64_t offset = next[{a.stream, partition}]++;
    auto r = c.run(
        "INSERT INTO stream_records(stream, part, off, key, id, type, source, subject, metadata, payload, time) "
        "VALUES($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)",
        {Param::of(a.stream), Param::of(int64_t{partition}), Param::of(offset), Param::of(a.key),
         Param::of(a.record.event_id.empty() ? ids[i] : a.record.event_id), Param::of(a.record.type),
         Param::of(a.record.source), Param::of(a.record.subject), Param::blob(encode_headers(a.record.metadata)),
         Param::blob(a.record.payload), Param::of(now)});
    if (!r) return r.error();
    result.appended.push_back({partition, offset});
    woken.push_back(stream_wake_name(a.stream, partition));
  }
  for (const auto& cp : b.checkpoints) {
    const Params key{Param::of(cp.group), Param::of(cp.stream), Param::of(int64_t{cp.partition}), Param::of(cp.offset),
                     Param::of(now)};
    Expected<Rows> r = Error{""};
    if (!cp.if_at) {
      r = c.run(
          "INSERT INTO stream_checkpoints(grp, stream, part, off, updated) VALUES($1,$2,$3,$4,$5) "
          "ON CONFLICT(grp, stream, part) DO UPDATE SET off=excluded.off, updated=excluded.updated RETURNING 1",
          key);
    } else if (*cp.if_at == 0) {
      // At 0: no checkpoint yet, or one at 0.
      Params p = key;
      r = c.run(
          "INSERT INTO stream_checkpoints(grp, stream, part, off, updated) VALUES($1,$2,$3,$4,$5) "
          "ON CONFLICT(grp, stream, part) DO UPDATE SET off=excluded.off, updated=excluded.updated "
          "WHERE stream_checkpoints.off=0 RETURNING 1",
          p);
    } else {
      Params p = key;
      p.push_back(Param::of(*cp.if_at));
      r = c.run("UPDATE stream_checkpoints SET off=$4, updated=$5 WHERE grp=$1 AND stream=$2 AND part=$3 AND off=$6 "
                "RETURNING 1",
                p);
    }
    if (!r) return r.error();
    if (r->size() != 1) {
      auto at = c.run("SELECT off FROM stream_checkpoints WHERE grp=$1 AND stream=$2 AND part=$3",
                      {Param::of(cp.group), Param::of(cp.stream), Param::of(int64_t{cp.partition})});
      const int64_t was = at && at->size() > 0 ? at->integer(0, 0) : 0;
      return conflict("checkpoint of group " + cp.group + " on " + cp.stream + "/" + std::to_string(cp.partition) +
                      " is at " + std::to_string(was) + ", not " + std::to_string(*cp.if_at));
    }
  }
  return ok_status();
}

Status PgStore::apply_blobs(Connection& c, const Batch& b, BatchResult& result, std::vector<std::string>& woken,
                            int64_t now) {
  for (const auto& d : b.blob_deletes) {
    if (auto st = check_blob_address(d.container, d.name); !st) return st;
  }
  // The current row of a blob, locked for this transaction. A name never seen gets a deleted
  // row at version 0 first, so that there is always a row to lock: two hosts creating one
  // name queue up here instead of both seeing "none".
  auto lock_row = [&](const std::string& container, const std::string& name) -> Expected<Rows> {
    auto seed = c.run(
        "INSERT INTO blobs(container, name, version, deleted, size, content_type, sha256, created, updated, metadata) "
        "VALUES($1,$2,0,1,0,'','',0,0,NULL) ON CONFLICT DO NOTHING",
        {Param::of(container), Param::of(name)});
    if (!seed) return seed.error();
    return c.run(
        "SELECT name, version, size, content_type, sha256, created, updated, metadata, deleted FROM blobs "
        "WHERE container=$1 AND name=$2 FOR UPDATE",
        {Param::of(container), Param::of(name)});
  };
  auto info_of = [](const Rows& r, const std::string& container) {
    const std::string meta = r.text(0, 7);
    const int64_t version = r.integer(0, 1);
    return BlobInfo{.container = container,
                    .name = r.text(0, 0),
                    .version = version,
                    .etag = std::to_string(version),
                    .size = r.integer(0, 2),
                    .content_type = r.text(0, 3),
                    .sha256 = r.text(0, 4),
                    .created_ms = r.integer(0, 5),
                    .updated_ms = r.integer(0, 6),
                    .metadata = decode_headers(meta.data(), static_cast<int>(meta.size()))};
  };
  auto check = [](const char* what, const BlobInfo& info, bool live, const std::optional<std::string>& if_match) -> Status {
    if (!if_match) return ok_status();
    const std::string etag = live ? info.etag : std::string();
    if (if_match->empty() ? !live : etag == *if_match) return ok_status();
    return conflict("blob " + info.container + "/" + info.name + " has ETag '" + etag + "', not '" + *if_match + "'" +
                    (if_match->empty() ? std::string(" (it exists; this ") + what + " was create-only)" : ""));
  };
  for (const auto& p : b.blob_puts) {
    if (auto st = check_blob_address(p.container, p.name); !st) return st;
    if (p.data.size() > options_.max_blob_size) {
      return Error{"blob " + p.container + "/" + p.name + " is " + std::to_string(p.data.size()) +
                       " bytes; this store takes at most " + std::to_string(options_.max_blob_size),
                   store_error::too_large};
    }
    auto row = lock_row(p.container, p.name);
    if (!row) return row.error();
    BlobInfo info = info_of(*row, p.container);
    const bool live = row->integer(0, 8) == 0;
    if (auto st = check("put", info, live, p.if_match); !st) return st;
    const int64_t old_version = info.version;
    info.version += 1;
    info.etag = std::to_string(info.version);
    info.size = static_cast<int64_t>(p.data.size());
    info.content_type = p.content_type.empty() ? "application/octet-stream" : p.content_type;
    info.sha256 = sha256_hex(p.data);
    if (!live) info.created_ms = now;
    info.updated_ms = now;
    info.metadata = p.metadata;
    std::size_t at = 0;
    int64_t n = 0;
    do {  // an empty blob is one empty chunk
      auto r = c.run("INSERT INTO blob_chunks(container, name, version, n, data) VALUES($1,$2,$3,$4,$5)",
                     {Param::of(p.container), Param::of(p.name), Param::of(info.version), Param::of(n++),
                      Param::blob(std::string_view(p.data).substr(at, kChunk))});
      if (!r) return r.error();
      at += kChunk;
    } while (at < p.data.size());
    auto del = c.run("DELETE FROM blob_chunks WHERE container=$1 AND name=$2 AND version=$3",
                     {Param::of(p.container), Param::of(p.name), Param::of(old_version)});
    if (!del) return del.error();
    auto up = c.run(
        "UPDATE blobs SET version=$3, deleted=0, size=$4, content_type=$5, sha256=$6, created=$7, updated=$8, metadata=$9 "
        "WHERE container=$1 AND name=$2",
        {Param::of(p.container), Param::of(p.name), Param::of(info.version), Param::of(info.size),
         Param::of(info.content_type), Param::of(info.sha256), Param::of(info.created_ms), Param::of(info.updated_ms),
         Param::blob(encode_headers(info.metadata))});
    if (!up) return up.error();
    if (auto st = emit_blob_events(c, info, live ? kBlobUpdated : kBlobCreated, p.traceparent, p.tracestate, now, woken); !st) {
      return st;
    }
    result.blobs.push_back(std::move(info));
  }
  for (const auto& d : b.blob_deletes) {
    auto row = lock_row(d.container, d.name);
    if (!row) return row.error();
    BlobInfo info = info_of(*row, d.container);
    const bool live = row->integer(0, 8) == 0;
    if (auto st = check("delete", info, live, d.if_match); !st) return st;
    if (!live) {
      result.blobs_deleted.push_back(0);
      continue;
    }
    auto up = c.run("UPDATE blobs SET deleted=1, updated=$3 WHERE container=$1 AND name=$2",
                    {Param::of(d.container), Param::of(d.name), Param::of(now)});
    if (!up) return up.error();
    auto del = c.run("DELETE FROM blob_chunks WHERE container=$1 AND name=$2",
                     {Param::of(d.container), Param::of(d.name)});
    if (!del) return del.error();
    if (auto st = emit_blob_events(c, info, kBlobDeleted, d.traceparent, d.tracestate, now, woken); !st) return st;
    result.blobs_deleted.push_back(info.version);
  }
  return ok_status();
}

Status PgStore::emit_blob_events(Connection& c, const BlobInfo& info, BlobEvent event, const std::string& traceparent,
                                  const std::string& tracestate,
                                 int64_t now, std::vector<std::string>& woken) {
  auto subs = c.run("SELECT queue, pattern, events FROM blob_subscriptions WHERE container=$1 ORDER BY queue, position",
                    {Param::of(info.container)});
  if (!subs) return subs.error();
  std::set<std::string> sent;
  for (int i = 0; i < subs->size(); ++i) {
    const std::string queue = subs->text(i, 0);
    const auto events = static_cast<unsigned>(subs->integer(i, 2));
    if (!(events & event) || sent.count(queue)) continue;
    auto pattern = parse_blob_pattern(subs->text(i, 1), nullptr);
    if (!pattern) continue;  // refused when it was set
    auto captures = match_blob_pattern(*pattern, info.name);
    if (!captures) continue;
    sent.insert(queue);
    NewMessage m = blob_event_message(info, event, *captures, traceparent, tracestate);
    if (auto st = insert_message(c, queue, m, blob_event_id(queue, info, event), now, woken); !st) return st;
  }
  return ok_status();
}

void PgStore::commit(Batch batch, CommitDone done) {
  auto b = std::make_shared<Batch>(std::move(batch));
  auto result = std::make_shared<BatchResult>();
  // Nothing but acks (a consumer's completion with no outputs): acked with the group's others.
  const bool acks_only = !b->acks.empty() && b->retries.empty() && b->dead.empty() && b->enqueues.empty() &&
                         b->publishes.empty() && b->puts.empty() && b->deletes.empty() && b->appends.empty() &&
                         b->checkpoints.empty() && b->blob_puts.empty() && b->blob_deletes.empty() && b->wakes.empty();
  // Messages due now in queues a consumer here takes from are leased to it in this commit
  // (Store::offer_claims) and handed to it once the commit is in.
  auto claims = std::make_shared<std::vector<Claim>>(reserve_claims(*b));
  const bool claiming = std::any_of(claims->begin(), claims->end(), [](const Claim& c) { return c.to != nullptr; });
  submit(
      [this, b, result, claims](Connection& c, std::vector<std::string>& woken) {
        *result = BatchResult{};  // a group that runs again runs this again
        return apply(c, *b, *result, woken, *claims);
      },
      [this, done = std::move(done), result, b, claims = claiming ? claims : nullptr](Status st) {
        if (claims) settle_claims(*claims, *b, st ? result.get() : nullptr, unix_ms(clock_));
        if (!st) return done(st.error());
        done(std::move(*result));
      },
      acks_only ? b->acks : std::vector<LeaseRef>{}, /*lease_only=*/false,
      b->relaxed && options_.durability == Durability::process);
}

}  // namespace nimbus::pg
