// The Redis store's commit: a Batch as the script's arguments (store.lua reads them in this
// order), blobs prepared from what the host read, and the blob reads.
#include <algorithm>
#include <map>
#include <set>

#include "core/blob_path.h"
#include "core/ids.h"
#include "core/text.h"
#include "store/backend.h"
#include "store/redis/redis_store.h"

namespace nimbus::rd {
namespace {

// A blob's metadata as the script returns it: v, del, sz, ct, sha, cr, up, md (empty: never seen).
struct Found {
  bool seen = false;
  bool live = false;
  BlobInfo info;
};

Found found_of(const Value& f, const std::string& container, const std::string& name) {
  Found out;
  if (f.items.empty() || f[0].kind == Value::nil) return out;
  out.seen = true;
  out.live = f[1].str() == "0";
  const std::string meta = f[7].str();
  const int64_t version = f[0].num();
  out.info = BlobInfo{.container = container,
                      .name = name,
                      .version = version,
                      .etag = std::to_string(version),
                      .size = f[2].num(),
                      .content_type = f[3].str(),
                      .sha256 = f[4].str(),
                      .created_ms = f[5].num(),
                      .updated_ms = f[6].num(),
                      .metadata = decode_headers(meta.data(), static_cast<int>(meta.size()))};
  return out;
}

// What a put or delete expects to find, as the script compares it: "VERSION:DELETED" (the
// deleted flag too: a blob deleted and not put again keeps its version), "" when never seen.
std::string expected(const Found& f) {
  return f.seen ? std::to_string(f.info.version) + (f.live ? ":0" : ":1") : std::string();
}

Error conflict(std::string message) { return Error{std::move(message), store_error::conflict}; }

Status check_etag(const char* what, const BlobInfo& info, bool live, const std::optional<std::string>& if_match) {
  if (!if_match) return ok_status();
  const std::string etag = live ? info.etag : std::string();
  if (if_match->empty() ? !live : etag == *if_match) return ok_status();
  return conflict("blob " + info.container + "/" + info.name + " has ETag '" + etag + "', not '" + *if_match + "'" +
                  (if_match->empty() ? std::string(" (it exists; this ") + what + " was create-only)" : ""));
}

// One blob operation as prepared: the version it expects to find ("" = none), what it writes,
// and the events it raises.
struct Event {
  std::string queue, id;
  NewMessage message;
};
struct Prepared {
  std::string expect;
  BlobInfo info;
  bool deletes = false;  // a delete of a live blob
  std::vector<Event> events;
};

struct State {
  Batch batch;
  BatchResult result;
  std::vector<std::string> enqueue_ids, publish_ids;
  AppendPlan plan;
  std::string blob_generation = "";
  std::vector<Prepared> puts, deletes;
};

void add_message(std::vector<std::string>& argv, const NewMessage& m) {
  argv.insert(argv.end(), {m.type, m.source, m.subject, encode_headers(m.metadata)});
}

}  // namespace

RedisStore::Op RedisStore::commit_op(Batch batch, CommitDone done) {
  auto s = std::make_shared<State>();
  s->batch = std::move(batch);
  const Batch& b = s->batch;
  Op op;
  op.name = "commit";
  // Ids are made once: a batch sent again (its blobs went stale) keeps them.
  for (const auto& e : b.enqueues) s->enqueue_ids.push_back(e.message.id.empty() ? new_invocation_id() : e.message.id);
  for (const auto& p : b.publishes) s->publish_ids.push_back(publish_event_id(p.message));
  s->plan = plan_appends(b);
  for (const auto& p : b.blob_puts) {
    if (auto st = check_blob_address(p.container, p.name); !st) op.refused = st;
    if (op.refused && p.data.size() > options_.max_blob_size) {
      op.refused = Error{"blob " + p.container + "/" + p.name + " is " + std::to_string(p.data.size()) +
                             " bytes; this store takes at most " + std::to_string(options_.max_blob_size),
                         store_error::too_large};
    }
  }
  for (const auto& d : b.blob_deletes) {
    if (auto st = check_blob_address(d.container, d.name); !st && op.refused) op.refused = st;
  }

  for (const auto& p : b.blob_puts) op.blob_keys.push_back(p.container + '\0' + p.name);
  for (const auto& d : b.blob_deletes) op.blob_keys.push_back(d.container + '\0' + d.name);
  if (!b.blob_puts.empty() || !b.blob_deletes.empty()) {
    op.prepare = [this, s](Connection& c, int64_t now) -> Status {
      const Batch& b = s->batch;
      std::vector<std::string> argv = command("blob_versions", now);
      argv.push_back(std::to_string(b.blob_puts.size() + b.blob_deletes.size()));
      for (const auto& p : b.blob_puts) argv.insert(argv.end(), {p.container, p.name});
      for (const auto& d : b.blob_deletes) argv.insert(argv.end(), {d.container, d.name});
      auto r = c.run(argv);
      if (!r && r.error().code == "redis" && r.error().message.find("NOSCRIPT") != std::string::npos) {
        if (auto st = load_script(c); !st) return st;
        r = c.run(argv);
      }
      if (!r) return Error{r.error().message, store_error::io};
      s->blob_generation = (*r)[0].str();
      const std::string subs_text = (*r)[1].str();
      const Headers subs_list = decode_headers(subs_text.data(), static_cast<int>(subs_text.size()));
      struct Sub {
        std::string queue, container;
        std::optional<BlobPattern> pattern;
        unsigned events;
        std::size_t position;
      };
      std::vector<Sub> subs;
      for (std::size_t i = 0; i + 1 < subs_list.size(); i += 2) {
        subs.push_back(Sub{subs_list[i].name, subs_list[i].value, parse_blob_pattern(subs_list[i + 1].name, nullptr),
                           static_cast<unsigned>(std::stoul(subs_list[i + 1].value)), i});
      }
      std::stable_sort(subs.begin(), subs.end(), [](const Sub& a, const Sub& b) { return a.queue < b.queue; });
      auto events_of = [&](const BlobInfo& info, BlobEvent event, const std::string& traceparent,
                           const std::string& tracestate) {
        std::vector<Event> out;
        std::set<std::string> sent;
        for (const auto& sub : subs) {
          if (sub.container != info.container || !(sub.events & event) || sent.count(sub.queue) || !sub.pattern) continue;
          auto captures = match_blob_pattern(*sub.pattern, info.name);
          if (!captures) continue;
          sent.insert(sub.queue);
          out.push_back(Event{sub.queue, blob_event_id(sub.queue, info, event),
                              blob_event_message(info, event, *captures, traceparent, tracestate)});
        }
        return out;
      };
      // What each name holds as the batch goes along (a batch may put one name twice).
      std::map<std::pair<std::string, std::string>, Found> now_at;
      std::size_t at = 2;
      auto current = [&](const std::string& container, const std::string& name) -> Found& {
        auto key = std::make_pair(container, name);
        auto it = now_at.find(key);
        if (it == now_at.end()) it = now_at.emplace(key, found_of((*r)[at], container, name)).first;
        ++at;
        return it->second;
      };
      s->puts.clear();
      s->deletes.clear();
      for (const auto& p : b.blob_puts) {
        Found& f = current(p.container, p.name);
        if (!f.seen) {
          f.info.container = p.container;
          f.info.name = p.name;
        }
        if (auto st = check_etag("put", f.info, f.live, p.if_match); !st) return st;
        Prepared prep;
        prep.expect = expected(f);
        BlobInfo info = f.info;
        info.version += 1;
        info.etag = std::to_string(info.version);
        info.size = static_cast<int64_t>(p.data.size());
        info.content_type = p.content_type.empty() ? "application/octet-stream" : p.content_type;
        info.sha256 = sha256_hex(p.data);
        if (!f.live) info.created_ms = now;
        info.updated_ms = now;
        info.metadata = p.metadata;
        prep.events = events_of(info, f.live ? kBlobUpdated : kBlobCreated, p.traceparent, p.tracestate);
        prep.info = info;
        f = Found{true, true, info};
        s->puts.push_back(std::move(prep));
      }
      for (const auto& d : b.blob_deletes) {
        Found& f = current(d.container, d.name);
        if (!f.seen) {
          f.info.container = d.container;
          f.info.name = d.name;
        }
        if (auto st = check_etag("delete", f.info, f.live, d.if_match); !st) return st;
        Prepared prep;
        prep.expect = expected(f);
        prep.info = f.info;
        prep.deletes = f.live;
        if (f.live) prep.events = events_of(f.info, kBlobDeleted, d.traceparent, d.tracestate);
        f.live = false;
        s->deletes.push_back(std::move(prep));
      }
      return ok_status();
    };
  }

  op.args = [s](int64_t now, std::vector<std::string>& argv) {
    const Batch& b = s->batch;
    auto count = [&](std::size_t n) { argv.push_back(std::to_string(n)); };
    count(b.acks.size());
    for (const auto& a : b.acks) argv.insert(argv.end(), {a.id, a.lease});
    count(b.retries.size());
    for (const auto& r : b.retries) {
      argv.insert(argv.end(), {r.ref.id, r.ref.lease, std::to_string(r.due_ms), r.error, r.release ? "1" : "0"});
    }
    count(b.dead.size());
    for (const auto& d : b.dead) argv.insert(argv.end(), {d.ref.id, d.ref.lease, d.error});
    count(b.enqueues.size());
    for (std::size_t i = 0; i < b.enqueues.size(); ++i) {
      const auto& e = b.enqueues[i];
      const std::string& id = s->enqueue_ids[i];
      argv.insert(argv.end(), {e.queue, id, e.message.event_id.empty() ? id : e.message.event_id});
      add_message(argv, e.message);
      argv.insert(argv.end(), {e.message.payload, std::to_string(saturating_after(now, e.message.delay_ms))});
    }
    count(b.publishes.size());
    for (std::size_t i = 0; i < b.publishes.size(); ++i) {
      const auto& p = b.publishes[i];
      argv.insert(argv.end(), {p.topic, s->publish_ids[i]});
      add_message(argv, p.message);
      argv.insert(argv.end(), {p.message.payload, std::to_string(saturating_after(now, p.message.delay_ms))});
    }
    count(b.puts.size());
    for (const auto& p : b.puts) {
      argv.insert(argv.end(), {p.store, p.key, p.value, p.if_match ? "1" : "0", p.if_match.value_or(""),
                               std::to_string(p.ttl_ms > 0 ? saturating_after(now, p.ttl_ms) : 0)});
    }
    count(b.deletes.size());
    for (const auto& d : b.deletes) argv.insert(argv.end(), {d.store, d.key, d.if_match ? "1" : "0", d.if_match.value_or("")});
    count(b.appends.size());
    for (std::size_t i = 0; i < b.appends.size(); ++i) {
      const auto& a = b.appends[i];
      argv.insert(argv.end(), {a.stream, std::to_string(s->plan.partitions[i]), a.key,
                               a.record.event_id.empty() ? s->plan.ids[i] : a.record.event_id});
      add_message(argv, a.record);
      argv.push_back(a.record.payload);
    }
    count(b.checkpoints.size());
    for (const auto& c : b.checkpoints) {
      argv.insert(argv.end(), {c.group, c.stream, std::to_string(c.partition), std::to_string(c.offset),
                               c.if_at ? "1" : "0", std::to_string(c.if_at.value_or(0))});
    }
    argv.push_back(s->blob_generation);
    auto events = [&](const Prepared& p) {
      count(p.events.size());
      for (const auto& e : p.events) {
        argv.insert(argv.end(), {e.queue, e.id});
        add_message(argv, e.message);
      }
    };
    count(s->puts.size());
    for (std::size_t i = 0; i < s->puts.size(); ++i) {
      const Prepared& p = s->puts[i];
      const BlobInfo& info = p.info;
      argv.insert(argv.end(), {info.container, info.name, p.expect, b.blob_puts[i].data, std::to_string(info.version),
                               std::to_string(info.size), info.content_type, info.sha256, std::to_string(info.created_ms),
                               std::to_string(info.updated_ms), encode_headers(info.metadata)});
      events(p);
    }
    count(s->deletes.size());
    for (const auto& p : s->deletes) {
      argv.insert(argv.end(), {p.info.container, p.info.name, p.expect});
      events(p);
    }
    count(b.wakes.size());
    argv.insert(argv.end(), b.wakes.begin(), b.wakes.end());
  };

  op.finish = [s](const Value& r, std::vector<std::string>& woken) -> Status {
    if (r[0].str() == "conflict") return conflict(r[1].str());
    if (r[0].str() != "ok") return Error{"Redis: the store script answered '" + r[0].str() + "'", store_error::io};
    BatchResult& result = s->result;
    result = BatchResult{};
    for (const auto& e : r[1].items) result.etags.push_back(e.str());
    result.message_ids = s->enqueue_ids;
    result.message_ids.insert(result.message_ids.end(), s->publish_ids.begin(), s->publish_ids.end());
    for (std::size_t i = 0; i < r[2].items.size() && i < s->plan.partitions.size(); ++i) {
      result.appended.push_back({s->plan.partitions[i], r[2][i].num()});
    }
    for (const auto& p : s->puts) result.blobs.push_back(p.info);
    for (const auto& p : s->deletes) result.blobs_deleted.push_back(p.deletes ? p.info.version : 0);
    for (const auto& n : r[3].items) woken.push_back(n.str());
    return ok_status();
  };
  op.done = [s, done = std::move(done)](Status st) {
    if (!st) return done(st.error());
    done(std::move(s->result));
  };
  const bool acks_only = !b.acks.empty() && b.retries.empty() && b.dead.empty() && b.enqueues.empty() &&
                         b.publishes.empty() && b.puts.empty() && b.deletes.empty() && b.appends.empty() &&
                         b.checkpoints.empty() && b.blob_puts.empty() && b.blob_deletes.empty() && b.wakes.empty();
  if (acks_only) op.acks_only = b.acks;
  return op;
}

// --- blob reads ----------------------------------------------------------------------------

Expected<std::optional<BlobInfo>> RedisStore::head_blob(const std::string& container, const std::string& name) {
  auto r = read("head_blob", {container, name});
  if (!r) return r.error();
  if (r->items.empty()) return std::optional<BlobInfo>();
  return std::optional<BlobInfo>(found_of(*r, container, name).info);
}

Expected<std::optional<Blob>> RedisStore::get_blob(const std::string& container, const std::string& name) {
  auto r = read("get_blob", {container, name});
  if (!r) return r.error();
  if (r->items.empty()) return std::optional<Blob>();
  Blob blob{found_of(*r, container, name).info, (*r)[8].str()};
  if (static_cast<int64_t>(blob.data.size()) != blob.info.size) {
    return Error{"blob " + container + "/" + name + " version " + std::to_string(blob.info.version) + " has " +
                     std::to_string(blob.data.size()) + " bytes in Redis, not " + std::to_string(blob.info.size),
                 store_error::io};
  }
  return std::optional<Blob>(std::move(blob));
}

Expected<BlobPage> RedisStore::list_blobs(const std::string& container, const std::string& prefix,
                                          const std::string& after, int limit) {
  const std::string from = after.empty() || after < prefix ? "[" + prefix : "(" + after;
  const int64_t want = limit < 0 ? int64_t{1} << 40 : int64_t{limit} + 1;
  auto r = read("list_blobs", {container, prefix, from, std::to_string(want)});
  if (!r) return r.error();
  BlobPage page;
  for (const auto& row : r->items) {
    Value fields;
    fields.kind = Value::array;
    fields.items.assign(row.items.begin() + 1, row.items.end());
    page.blobs.push_back(found_of(fields, container, row[0].str()).info);
  }
  if (limit >= 0 && page.blobs.size() > static_cast<std::size_t>(limit)) {
    page.blobs.resize(static_cast<std::size_t>(limit));
    page.next_after = page.blobs.empty() ? after : page.blobs.back().name;
  }
  return page;
}

}  // namespace nimbus::rd
