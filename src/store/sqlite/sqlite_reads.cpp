// The SQLite store's reads: queues (peek, stats, next due), state, streams and blobs, each on a
// reader connection of its own (WAL lets them run beside the writer).
#include "store/sqlite/sqlite_store.h"

namespace nimbus::sqlite {

Expected<std::optional<std::pair<BlobInfo, std::string>>> SqliteStore::blob_row(const std::string& container,
                                                                                 const std::string& name) {
  using Row = std::optional<std::pair<BlobInfo, std::string>>;
  return read<Row>([&](Reader& reader) -> Expected<Row> {
    sqlite3* db = reader.db;
    Stmt& st =
        reader.stmt("SELECT " + std::string(kBlobColumns) + " FROM blobs WHERE container=? AND name=? AND deleted=0");
    if (!st.ok()) return Error{st.error()};
    st.text(container).text(name);
    int rc = st.step();
    if (rc == SQLITE_DONE) return Row();
    if (rc != SQLITE_ROW) return read_error(db, "blob read");
    return Row(std::pair{read_blob_info(st, container), st.col_text(8)});
  });
}

Expected<std::optional<BlobInfo>> SqliteStore::head_blob(const std::string& container, const std::string& name) {
  auto found = blob_row(container, name);
  if (!found) return found.error();
  if (!*found) return std::optional<BlobInfo>();
  return std::optional<BlobInfo>(std::move((*found)->first));
}

Expected<std::optional<Blob>> SqliteStore::get_blob(const std::string& container, const std::string& name) {
  // A put that replaces the blob between reading its row and opening its file removes that
  // file: read the row again (a few times; each try sees a newer commit).
  for (int attempt = 0;; ++attempt) {
    auto found = blob_row(container, name);
    if (!found) return found.error();
    if (!*found) return std::optional<Blob>();
    auto data = blob_files_->read(container, (*found)->second);
    if (data) return std::optional<Blob>(Blob{std::move((*found)->first), std::move(*data)});
    if (data.error().code != "gone" || attempt >= 8) return Error{data.error().message, store_error::io};
  }
}

Expected<BlobPage> SqliteStore::list_blobs(const std::string& container, const std::string& prefix, const std::string& after,
                                           int limit) {
  return read<BlobPage>([&](Reader& reader) -> Expected<BlobPage> {
    sqlite3* db = reader.db;
    Stmt& st = reader.stmt("SELECT " + std::string(kBlobColumns) +
                           " FROM blobs WHERE container=? AND deleted=0 AND name>? AND substr(name, 1, ?)=? ORDER BY "
                           "name LIMIT ?");
    if (!st.ok()) return Error{st.error()};
    st.text(container).text(after).integer(static_cast<int64_t>(prefix.size())).text(prefix).integer(limit + 1);
    BlobPage page;
    int rc;
    while ((rc = st.step()) == SQLITE_ROW) page.blobs.push_back(read_blob_info(st, container));
    if (rc != SQLITE_DONE) return read_error(db, "blob list");
    if (limit >= 0 && page.blobs.size() > static_cast<std::size_t>(limit)) {
      page.blobs.resize(static_cast<std::size_t>(limit));
      page.next_after = page.blobs.empty() ? after : page.blobs.back().name;
    }
    return page;
  });
}

Expected<std::vector<StreamRecord>> SqliteStore::read_stream(const std::string& stream, int partition, int64_t from,
                                                             int max) {
  return read<std::vector<StreamRecord>>([&](Reader& reader) -> Expected<std::vector<StreamRecord>> {
    sqlite3* db = reader.db;
    Stmt& st = reader.stmt(
        "SELECT offset, key, id, type, source, subject, metadata, payload, time FROM stream_records "
        "WHERE stream=? AND partition=? AND offset>=? ORDER BY offset LIMIT ?");
    if (!st.ok()) return Error{st.error()};
    st.text(stream).integer(partition).integer(from).integer(max);
    std::vector<StreamRecord> out;
    int rc;
    while ((rc = st.step()) == SQLITE_ROW) {
      StreamRecord r;
      r.stream = stream;
      r.partition = partition;
      r.offset = st.col_int(0);
      r.key = st.col_text(1);
      r.id = st.col_text(2);
      r.type = st.col_text(3);
      r.source = st.col_text(4);
      r.subject = st.col_text(5);
      r.metadata = st.col_headers(6);
      r.payload = st.col_blob(7);
      r.time_ms = st.col_int(8);
      out.push_back(std::move(r));
    }
    if (rc != SQLITE_DONE) return read_error(db, "stream read");
    return out;
  });
}

Expected<std::vector<StreamPartitionInfo>> SqliteStore::stream_info(const std::string& stream) {
  return read<std::vector<StreamPartitionInfo>>([&](Reader& reader) -> Expected<std::vector<StreamPartitionInfo>> {
    sqlite3* db = reader.db;
    Stmt& st = reader.stmt(
        "SELECT p.partition, p.next_offset, (SELECT min(offset) FROM stream_records r WHERE r.stream=p.stream AND "
        "r.partition=p.partition) FROM stream_partitions p WHERE p.stream=? ORDER BY p.partition");
    if (!st.ok()) return Error{st.error()};
    st.text(stream);
    std::vector<StreamPartitionInfo> out;
    int rc;
    while ((rc = st.step()) == SQLITE_ROW) {
      StreamPartitionInfo info;
      info.stream = stream;
      info.partition = static_cast<int>(st.col_int(0));
      info.next_offset = st.col_int(1);
      info.first_offset = st.col_null(2) ? info.next_offset : st.col_int(2);
      // Retention only ever drops a partition's oldest records, so what is kept is one run of
      // offsets: no count(*) over the partition (this runs at every start).
      info.records = info.next_offset - info.first_offset;
      out.push_back(info);
    }
    if (rc != SQLITE_DONE) return read_error(db, "stream info");
    return out;
  });
}

Expected<std::vector<StreamCheckpoint>> SqliteStore::stream_checkpoints(const std::string& stream) {
  return read<std::vector<StreamCheckpoint>>([&](Reader& reader) -> Expected<std::vector<StreamCheckpoint>> {
    sqlite3* db = reader.db;
    Stmt& st = reader.stmt(
        "SELECT grp, stream, partition, offset, updated FROM stream_checkpoints WHERE ?1='' OR stream=?1 "
        "ORDER BY stream, grp, partition");
    if (!st.ok()) return Error{st.error()};
    st.text(stream);
    std::vector<StreamCheckpoint> out;
    int rc;
    while ((rc = st.step()) == SQLITE_ROW) {
      out.push_back(StreamCheckpoint{st.col_text(0), st.col_text(1), static_cast<int>(st.col_int(2)), st.col_int(3),
                                     st.col_int(4)});
    }
    if (rc != SQLITE_DONE) return read_error(db, "stream checkpoints");
    return out;
  });
}

Expected<int64_t> SqliteStore::stream_offset_at(const std::string& stream, int partition, int64_t time_ms) {
  return read<int64_t>([&](Reader& reader) -> Expected<int64_t> {
    sqlite3* db = reader.db;
    Stmt& st = reader.stmt(
        "SELECT coalesce((SELECT min(offset) FROM stream_records WHERE stream=?1 AND partition=?2 AND time>=?3), "
        "(SELECT next_offset FROM stream_partitions WHERE stream=?1 AND partition=?2), 0)");
    if (!st.ok()) return Error{st.error()};
    st.text(stream).integer(partition).integer(time_ms);
    if (st.step() != SQLITE_ROW) return read_error(db, "stream offset");
    return st.col_int(0);
  });
}

Expected<std::optional<StateEntry>> SqliteStore::get(const std::string& store, const std::string& key) {
  return read<std::optional<StateEntry>>([&](Reader& reader) -> Expected<std::optional<StateEntry>> {
    sqlite3* db = reader.db;
    Stmt& st =
        reader.stmt("SELECT value, etag, expires FROM state WHERE store=? AND key=? AND (expires=0 OR expires>?)");
    if (!st.ok()) return Error{st.error()};
    st.text(store).text(key).integer(unix_ms(clock_));
    int rc = st.step();
    if (rc == SQLITE_DONE) return std::optional<StateEntry>();
    if (rc != SQLITE_ROW) return Error{std::string("state read failed: ") + sqlite3_errmsg(db), store_error::io};
    return std::optional<StateEntry>(StateEntry{key, st.col_blob(0), std::to_string(st.col_int(1)), st.col_int(2)});
  });
}

Expected<std::vector<StateEntry>> SqliteStore::scan(const std::string& store, const std::string& prefix, int limit) {
  return read<std::vector<StateEntry>>([&](Reader& reader) -> Expected<std::vector<StateEntry>> {
    sqlite3* db = reader.db;
    // A range of the primary key (keys compare bytewise): [prefix, the next string after every
    // one that starts with it), so a scan reads only what it returns, however big the store.
    std::string end = prefix;
    while (!end.empty() && static_cast<unsigned char>(end.back()) == 0xFF) end.pop_back();
    if (!end.empty()) end.back() = static_cast<char>(static_cast<unsigned char>(end.back()) + 1);
    Stmt& st =
        reader.stmt(end.empty() ? "SELECT key, value, etag, expires FROM state WHERE store=? AND key>=? "
                                  "AND (expires=0 OR expires>?) ORDER BY key LIMIT ?"
                                : "SELECT key, value, etag, expires FROM state WHERE store=? AND key>=? AND key<? "
                                  "AND (expires=0 OR expires>?) ORDER BY key LIMIT ?");
    if (!st.ok()) return Error{st.error()};
    st.text(store).text(prefix);
    if (!end.empty()) st.text(end);
    st.integer(unix_ms(clock_)).integer(limit);
    std::vector<StateEntry> out;
    int rc;
    while ((rc = st.step()) == SQLITE_ROW) {
      out.push_back(StateEntry{st.col_text(0), st.col_blob(1), std::to_string(st.col_int(2)), st.col_int(3)});
    }
    if (rc != SQLITE_DONE) return Error{std::string("state scan failed: ") + sqlite3_errmsg(db), store_error::io};
    return out;
  });
}

Expected<std::vector<Message>> SqliteStore::peek(const std::string& queue, int limit) {
  return read<std::vector<Message>>([&](Reader& reader) -> Expected<std::vector<Message>> {
    sqlite3* db = reader.db;
    Stmt& st = reader.stmt("SELECT " + std::string(kMessageColumns) +
                           " FROM messages WHERE queue=? ORDER BY due, seq LIMIT ?");
    if (!st.ok()) return Error{st.error()};
    st.text(queue).integer(limit);
    std::vector<Message> out;
    int rc;
    while ((rc = st.step()) == SQLITE_ROW) out.push_back(read_message(st));
    if (rc != SQLITE_DONE) return Error{std::string("peek failed: ") + sqlite3_errmsg(db), store_error::io};
    return out;
  });
}

Expected<std::vector<QueueStats>> SqliteStore::stats() {
  return read<std::vector<QueueStats>>([&](Reader& reader) -> Expected<std::vector<QueueStats>> {
    sqlite3* db = reader.db;
    // A leased message whose lease has expired is receivable again: it counts as ready.
    Stmt& st = reader.stmt(
        "SELECT queue, sum(due<=?1), sum(lease IS NULL AND due>?1), sum(lease IS NOT NULL AND due>?1) "
        "FROM messages GROUP BY queue ORDER BY queue");
    if (!st.ok()) return Error{st.error()};
    st.integer(unix_ms(clock_));
    std::vector<QueueStats> out;
    int rc;
    while ((rc = st.step()) == SQLITE_ROW)
      out.push_back(QueueStats{st.col_text(0), st.col_int(1), st.col_int(2), st.col_int(3)});
    if (rc != SQLITE_DONE) return Error{std::string("stats failed: ") + sqlite3_errmsg(db), store_error::io};
    return out;
  });
}

Expected<int64_t> SqliteStore::next_due(const std::string& queue) {
  return read<int64_t>([&](Reader& reader) -> Expected<int64_t> {
    sqlite3* db = reader.db;
    Stmt& st = reader.stmt("SELECT min(due) FROM messages WHERE queue=? AND due>?");
    if (!st.ok()) return Error{st.error()};
    st.text(queue).integer(unix_ms(clock_));
    if (st.step() != SQLITE_ROW) return Error{std::string("read failed: ") + sqlite3_errmsg(db), store_error::io};
    return st.col_int(0);
  });
}

}  // namespace nimbus::sqlite
