// The SQLite store's writes inside the writing transaction: one Batch (acks, retries, dead
// letters, enqueues, topic fan-out, state, stream appends and checkpoints, blobs and the events
// they raise) applied as a unit, and the blob files written before it.
#include <algorithm>
#include <limits>
#include <set>

#include "core/ids.h"
#include "store/sqlite/sqlite_store.h"

namespace nimbus::sqlite {

Status SqliteStore::write_blob_files(Batch& batch, std::vector<WrittenBlob>& written) {
  Status st = ok_status();
  for (const auto& d : batch.blob_deletes) {
    if (st = check_blob_address(d.container, d.name); !st) return st;
  }
  for (auto& p : batch.blob_puts) {
    if (st = check_blob_address(p.container, p.name); !st) break;
    if (p.data.size() > options_.max_blob_size) {
      st = Error{"blob " + p.container + "/" + p.name + " is " + std::to_string(p.data.size()) +
                     " bytes; this store takes at most " + std::to_string(options_.max_blob_size),
                 store_error::too_large};
      break;
    }
    auto file = blob_files_->write(p.container, p.data);
    if (!file) {
      st = file.error();
      break;
    }
    written.push_back({p.container, *file, sha256_hex(p.data), static_cast<int64_t>(p.data.size())});
    std::string().swap(p.data);
  }
  if (!st) {
    for (const auto& f : written) blob_files_->remove(f.container, f.file);
    written.clear();
  }
  return st;
}

Status SqliteStore::insert_message(const std::string& queue, const NewMessage& m, const std::string& id, int64_t now,
                                   std::vector<std::string>& woken) {
  auto& ins = stmt(
      "INSERT INTO messages(id, event_id, queue, due, enqueued, type, source, subject, metadata, payload) "
      "VALUES(?,?,?,?,?,?,?,?,?,?)");
  ins.reset()
      .text(id)
      .text(m.event_id.empty() ? id : m.event_id)
      .text(queue)
      .integer(saturating_after(now, m.delay_ms))
      .integer(now)
      .text(m.type)
      .text(m.source)
      .text(m.subject)
      .blob(encode_headers(m.metadata))
      .blob(m.payload);
  int rc = ins.step();
  if (rc == SQLITE_CONSTRAINT_UNIQUE || rc == SQLITE_CONSTRAINT_PRIMARYKEY) {
    return conflict("a message with id " + id + " already exists");
  }
  if (rc != SQLITE_DONE) return sql_error("enqueue");
  if (m.delay_ms <= 0) woken.push_back(queue);
  return ok_status();
}

std::vector<Subscription> SqliteStore::subscriptions(const std::string& topic) {
  std::vector<Subscription> out;
  auto& st = stmt("SELECT topic, name, type, source, subject_prefix FROM subscriptions WHERE topic=? ORDER BY name");
  st.reset().text(topic);
  while (st.step() == SQLITE_ROW) {
    out.push_back(Subscription{st.col_text(0), st.col_text(1), st.col_text(2), st.col_text(3), st.col_text(4)});
  }
  return out;
}

Status SqliteStore::apply(const Batch& b, BatchResult& result, std::vector<std::string>& woken,
                          const std::vector<WrittenBlob>& written, std::vector<WrittenBlob>& replaced) {
  const int64_t now = unix_ms(clock_);
  for (const auto& ref : b.acks) {
    auto& del = stmt("DELETE FROM messages WHERE id=? AND lease=?");
    del.reset().text(ref.id).text(ref.lease);
    if (del.step() != SQLITE_DONE) return sql_error("ack");
    if (sqlite3_changes(db_) != 1) return conflict("message " + ref.id + " is no longer leased by this delivery");
  }
  for (const auto& r : b.retries) {
    if (r.release) {
      auto& up = stmt("UPDATE messages SET lease=NULL, due=?, deliveries=max(deliveries-1, 0) WHERE id=? AND lease=?");
      up.reset().integer(r.due_ms).text(r.ref.id).text(r.ref.lease);
      if (up.step() != SQLITE_DONE) return sql_error("release");
      if (sqlite3_changes(db_) != 1) return conflict("message " + r.ref.id + " is no longer leased by this delivery");
      continue;
    }
    auto& up = stmt(
        "UPDATE messages SET lease=NULL, due=?, error=?, last_failed=?, "
        "first_failed=CASE first_failed WHEN 0 THEN ? ELSE first_failed END WHERE id=? AND lease=?");
    up.reset().integer(r.due_ms).text(r.error).integer(now).integer(now).text(r.ref.id).text(r.ref.lease);
    if (up.step() != SQLITE_DONE) return sql_error("retry");
    if (sqlite3_changes(db_) != 1) return conflict("message " + r.ref.id + " is no longer leased by this delivery");
    if (r.due_ms <= now) {
      auto& q = stmt("SELECT queue FROM messages WHERE id=?");
      q.reset().text(r.ref.id);
      if (q.step() == SQLITE_ROW) woken.push_back(q.col_text(0));
      q.reset();
    }
  }
  for (const auto& d : b.dead) {
    auto& up = stmt(
        "UPDATE messages SET queue=queue||'.dead', lease=NULL, due=?, error=?, last_failed=?, "
        "first_failed=CASE first_failed WHEN 0 THEN ? ELSE first_failed END WHERE id=? AND lease=?");
    up.reset().integer(now).text(d.error).integer(now).integer(now).text(d.ref.id).text(d.ref.lease);
    if (up.step() != SQLITE_DONE) return sql_error("dead-letter");
    if (sqlite3_changes(db_) != 1) return conflict("message " + d.ref.id + " is no longer leased by this delivery");
  }
  for (const auto& e : b.enqueues) {
    std::string id = e.message.id.empty() ? new_invocation_id() : e.message.id;
    if (auto st = insert_message(e.queue, e.message, id, now, woken); !st) return st;
    result.message_ids.push_back(id);
  }
  for (const auto& p : b.publishes) {
    const std::string event_id = publish_event_id(p.message);
    NewMessage copy = p.message;
    copy.event_id = event_id;
    for (const auto& s : subscriptions(p.topic)) {
      if (!subscription_matches(s, copy)) continue;
      // One copy per subscription; ids derive from the event id, so a publish is idempotent.
      std::string id = event_id + "/" + s.name;
      if (auto st = insert_message(p.topic + "/" + s.name, copy, id, now, woken); !st) return st;
    }
    result.message_ids.push_back(event_id);
  }
  for (const auto& p : b.puts) {
    if (p.if_match) {
      auto& cur = stmt("SELECT etag FROM state WHERE store=? AND key=? AND (expires=0 OR expires>?)");
      cur.reset().text(p.store).text(p.key).integer(now);
      bool exists = cur.step() == SQLITE_ROW;
      std::string etag = exists ? std::to_string(cur.col_int(0)) : std::string();
      cur.reset();
      if (p.if_match->empty() ? exists : etag != *p.if_match) {
        return conflict("state " + p.store + "/" + p.key + " has ETag '" + etag + "', not '" + *p.if_match + "'");
      }
    }
    auto& up = stmt(
        "INSERT INTO state(store, key, value, etag, expires) VALUES(?,?,?,1,?) ON CONFLICT(store, key) DO UPDATE SET "
        "value=excluded.value, etag=CASE WHEN state.expires<>0 AND state.expires<=? THEN 1 ELSE state.etag+1 END, "
        "expires=excluded.expires RETURNING etag");
    up.reset().text(p.store).text(p.key).blob(p.value).integer(p.ttl_ms > 0 ? saturating_after(now, p.ttl_ms) : 0).integer(now);
    if (up.step() != SQLITE_ROW) return sql_error("state put");
    result.etags.push_back(std::to_string(up.col_int(0)));
    while (up.step() == SQLITE_ROW) {
    }
  }
  for (const auto& d : b.deletes) {
    if (d.if_match) {
      auto& cur = stmt("SELECT etag FROM state WHERE store=? AND key=? AND (expires=0 OR expires>?)");
      cur.reset().text(d.store).text(d.key).integer(now);
      std::string etag = cur.step() == SQLITE_ROW ? std::to_string(cur.col_int(0)) : std::string();
      cur.reset();
      if (etag != *d.if_match) {
        return conflict("state " + d.store + "/" + d.key + " has ETag '" + etag + "', not '" + *d.if_match + "'");
      }
    }
    auto& del = stmt("DELETE FROM state WHERE store=? AND key=?");
    del.reset().text(d.store).text(d.key);
    if (del.step() != SQLITE_DONE) return sql_error("state delete");
  }
  // Offsets: one counter update per (stream, partition) in the batch, then the records.
  const AppendPlan plan = plan_appends(b);
  const auto& partitions = plan.partitions;
  const auto& ids = plan.ids;
  std::map<std::pair<std::string, int>, int64_t> next;
  for (const auto& [sp, n] : plan.count) {
    auto& up = stmt(
        "INSERT INTO stream_partitions(stream, partition, next_offset) VALUES(?1,?2,?3) ON CONFLICT(stream, partition) "
        "DO UPDATE SET next_offset=next_offset+?3 RETURNING next_offset - ?3");
    up.reset().text(sp.first).integer(sp.second).integer(n);
    if (up.step() != SQLITE_ROW) return sql_error("stream append");
    next[sp] = up.col_int(0);
    while (up.step() == SQLITE_ROW) {
    }
  }
  for (std::size_t i = 0; i < b.appends.size(); ++i) {
    const auto& a = b.appends[i];
    const int partition = partitions[i];
    const int64_t offset = next[{a.stream, partition}]++;
    auto& ins = stmt(
        "INSERT INTO stream_records(stream, partition, offset, key, id, type, source, subject, metadata, payload, time) "
        "VALUES(?,?,?,?,?,?,?,?,?,?,?)");
    ins.reset()
        .text(a.stream)
        .integer(partition)
        .integer(offset)
        .text(a.key)
        .text(a.record.event_id.empty() ? ids[i] : a.record.event_id)
        .text(a.record.type)
        .text(a.record.source)
        .text(a.record.subject)
        .blob(encode_headers(a.record.metadata))
        .blob(a.record.payload);
    ins.integer(now);
    if (ins.step() != SQLITE_DONE) return sql_error("stream append");
    result.appended.push_back({partition, offset});
    woken.push_back(stream_wake_name(a.stream, partition));
  }
  for (const auto& c : b.checkpoints) {
    if (c.if_at) {
      auto& cur = stmt("SELECT offset FROM stream_checkpoints WHERE grp=? AND stream=? AND partition=?");
      cur.reset().text(c.group).text(c.stream).integer(c.partition);
      const int64_t at = cur.step() == SQLITE_ROW ? cur.col_int(0) : 0;
      cur.reset();
      if (at != *c.if_at) {
        return conflict("checkpoint of group " + c.group + " on " + c.stream + "/" + std::to_string(c.partition) +
                        " is at " + std::to_string(at) + ", not " + std::to_string(*c.if_at));
      }
    }
    auto& up = stmt("INSERT OR REPLACE INTO stream_checkpoints(grp, stream, partition, offset, updated) VALUES(?,?,?,?,?)");
    up.reset().text(c.group).text(c.stream).integer(c.partition).integer(c.offset).integer(now);
    if (up.step() != SQLITE_DONE) return sql_error("stream checkpoint");
  }
  woken.insert(woken.end(), b.wakes.begin(), b.wakes.end());
  return apply_blobs(b, result, woken, written, replaced, now);
}

Expected<SqliteStore::BlobNow> SqliteStore::blob_for_write(const char* what, const std::string& container, const std::string& name,
                                              const std::optional<std::string>& if_match) {
  auto& cur = stmt("SELECT " + std::string(kBlobColumns) + ", deleted FROM blobs WHERE container=? AND name=?");
  cur.reset().text(container).text(name);
  int rc = cur.step();
  if (rc != SQLITE_ROW && rc != SQLITE_DONE) return sql_error("blob read");
  BlobNow now;
  now.info = blob_named(container, name);
  if (rc == SQLITE_ROW) {
    now.info = read_blob_info(cur, container);
    now.live = cur.col_int(9) == 0;
    now.file = cur.col_text(8);
  }
  cur.reset();
  if (!if_match) return now;
  const std::string etag = now.live ? now.info.etag : std::string();
  if (if_match->empty() ? !now.live : etag == *if_match) return now;
  return conflict("blob " + container + "/" + name + " has ETag '" + etag + "', not '" + *if_match + "'" +
                  (if_match->empty() ? std::string(" (it exists; this ") + what + " was create-only)" : ""));
}

Status SqliteStore::apply_blobs(const Batch& b, BatchResult& result, std::vector<std::string>& woken,
                                const std::vector<WrittenBlob>& written, std::vector<WrittenBlob>& replaced, int64_t now) {
  for (std::size_t i = 0; i < b.blob_puts.size(); ++i) {
    const auto& p = b.blob_puts[i];
    const WrittenBlob& w = written.at(i);
    auto cur = blob_for_write("put", p.container, p.name, p.if_match);
    if (!cur) return cur.error();
    const bool live = cur->live;
    BlobInfo info = std::move(cur->info);
    info.version += 1;
    info.etag = std::to_string(info.version);
    info.size = w.size;
    info.content_type = p.content_type.empty() ? "application/octet-stream" : p.content_type;
    info.sha256 = w.sha256;
    if (!live) info.created_ms = now;
    info.updated_ms = now;
    info.metadata = p.metadata;
    auto& up = stmt(
        "INSERT OR REPLACE INTO blobs(container, name, version, deleted, file, size, content_type, sha256, created, "
        "updated, metadata) VALUES(?,?,?,0,?,?,?,?,?,?,?)");
    up.reset()
        .text(info.container)
        .text(info.name)
        .integer(info.version)
        .text(w.file)
        .integer(info.size)
        .text(info.content_type)
        .text(info.sha256)
        .integer(info.created_ms)
        .integer(info.updated_ms)
        .blob(encode_headers(info.metadata));
    if (up.step() != SQLITE_DONE) return sql_error("blob put");
    if (live) replaced.push_back({p.container, cur->file, {}, 0});
    if (auto st = emit_blob_events(info, live ? kBlobUpdated : kBlobCreated, p.traceparent, p.tracestate, now, woken); !st) return st;
    result.blobs.push_back(std::move(info));
  }
  for (const auto& d : b.blob_deletes) {
    auto cur = blob_for_write("delete", d.container, d.name, d.if_match);
    if (!cur) return cur.error();
    const BlobInfo& info = cur->info;
    if (!cur->live) {
      result.blobs_deleted.push_back(0);
      continue;
    }
    auto& del = stmt("UPDATE blobs SET deleted=1, file='', updated=? WHERE container=? AND name=?");
    del.reset().integer(now).text(d.container).text(d.name);
    if (del.step() != SQLITE_DONE) return sql_error("blob delete");
    replaced.push_back({d.container, cur->file, {}, 0});
    if (auto st = emit_blob_events(info, kBlobDeleted, d.traceparent, d.tracestate, now, woken); !st) return st;
    result.blobs_deleted.push_back(info.version);
  }
  return ok_status();
}

Status SqliteStore::emit_blob_events(const BlobInfo& info, BlobEvent event, const std::string& traceparent,
                                  const std::string& tracestate, int64_t now,
                                     std::vector<std::string>& woken) {
  struct Sub {
    std::string queue, pattern;
    unsigned events;
  };
  std::vector<Sub> subs;
  auto& st = stmt("SELECT queue, pattern, events FROM blob_subscriptions WHERE container=? ORDER BY queue, position");
  st.reset().text(info.container);
  int rc;
  while ((rc = st.step()) == SQLITE_ROW) subs.push_back({st.col_text(0), st.col_text(1), static_cast<unsigned>(st.col_int(2))});
  if (rc != SQLITE_DONE) return sql_error("blob subscriptions");
  std::set<std::string> sent;
  for (const auto& sub : subs) {
    if (!(sub.events & event) || sent.count(sub.queue)) continue;
    auto it = patterns_.find(sub.pattern);
    if (it == patterns_.end()) {
      auto parsed = parse_blob_pattern(sub.pattern, nullptr);
      if (!parsed) continue;  // refused when it was set
      it = patterns_.emplace(sub.pattern, std::move(*parsed)).first;
    }
    auto captures = match_blob_pattern(it->second, info.name);
    if (!captures) continue;
    sent.insert(sub.queue);
    NewMessage m = blob_event_message(info, event, *captures, traceparent, tracestate);
    if (auto s = insert_message(sub.queue, m, blob_event_id(sub.queue, info, event), now, woken); !s) return s;
  }
  return ok_status();
}

}  // namespace nimbus::sqlite
