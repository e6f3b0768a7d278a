// The PostgreSQL store's stream and blob reads, on pooled connections. A blob's metadata and
// chunks are read in one REPEATABLE READ transaction, so they belong to one version.
#include "store/postgres/pg_store.h"

namespace nimbus::pg {
namespace {

constexpr const char* kBlobColumns = "name, version, size, content_type, sha256, created, updated, metadata";

BlobInfo blob_info(const Rows& r, int row, const std::string& container) {
  const std::string meta = r.text(row, 7);
  const int64_t version = r.integer(row, 1);
  return BlobInfo{.container = container,
                  .name = r.text(row, 0),
                  .version = version,
                  .etag = std::to_string(version),
                  .size = r.integer(row, 2),
                  .content_type = r.text(row, 3),
                  .sha256 = r.text(row, 4),
                  .created_ms = r.integer(row, 5),
                  .updated_ms = r.integer(row, 6),
                  .metadata = decode_headers(meta.data(), static_cast<int>(meta.size()))};
}

}  // namespace

Expected<std::vector<StreamRecord>> PgStore::read_stream(const std::string& stream, int partition, int64_t from, int max) {
  using R = std::vector<StreamRecord>;
  return read<R>([&](Connection& c) -> Expected<R> {
    auto r = c.run(
        "SELECT off, key, id, type, source, subject, metadata, payload, time FROM stream_records "
        "WHERE stream=$1 AND part=$2 AND off>=$3 ORDER BY off LIMIT $4",
        {Param::of(stream), Param::of(int64_t{partition}), Param::of(from), Param::of(int64_t{max})});
    if (!r) return r.error();
    R out;
    for (int i = 0; i < r->size(); ++i) {
      StreamRecord rec;
      rec.stream = stream;
      rec.partition = partition;
      rec.offset = r->integer(i, 0);
      rec.key = r->text(i, 1);
      rec.id = r->text(i, 2);
      rec.type = r->text(i, 3);
      rec.source = r->text(i, 4);
      rec.subject = r->text(i, 5);
      const std::string meta = r->text(i, 6);
      rec.metadata = decode_headers(meta.data(), static_cast<int>(meta.size()));
      rec.payload = r->text(i, 7);
      rec.time_ms = r->integer(i, 8);
      out.push_back(std::move(rec));
    }
    return out;
  });
}

Expected<std::vector<StreamPartitionInfo>> PgStore::stream_info(const std::string& stream) {
  using R = std::vector<StreamPartitionInfo>;
  return read<R>([&](Connection& c) -> Expected<R> {
    auto r = c.run(
        "SELECT p.part, p.next_offset, (SELECT min(off) FROM stream_records r WHERE r.stream=p.stream AND r.part=p.part) "
        "FROM stream_partitions p WHERE p.stream=$1 ORDER BY p.part",
        {Param::of(stream)});
    if (!r) return r.error();
    R out;
    for (int i = 0; i < r->size(); ++i) {
      StreamPartitionInfo info;
      info.stream = stream;
      info.partition = static_cast<int>(r->integer(i, 0));
      info.next_offset = r->integer(i, 1);
      info.first_offset = r->null(i, 2) ? info.next_offset : r->integer(i, 2);
      info.records = info.next_offset - info.first_offset;  // retention drops only the oldest
      out.push_back(info);
    }
    return out;
  });
}

Expected<std::vector<StreamCheckpoint>> PgStore::stream_checkpoints(const std::string& stream) {
  using R = std::vector<StreamCheckpoint>;
  return read<R>([&](Connection& c) -> Expected<R> {
    auto r = c.run(
        "SELECT grp, stream, part, off, updated FROM stream_checkpoints WHERE $1='' OR stream=$1 "
        "ORDER BY stream, grp, part",
        {Param::of(stream)});
    if (!r) return r.error();
    R out;
    for (int i = 0; i < r->size(); ++i) {
      out.push_back(StreamCheckpoint{r->text(i, 0), r->text(i, 1), static_cast<int>(r->integer(i, 2)), r->integer(i, 3),
                                     r->integer(i, 4)});
    }
    return out;
  });
}

Expected<int64_t> PgStore::stream_offset_at(const std::string& stream, int partition, int64_t time_ms) {
  return read<int64_t>([&](Connection& c) -> Expected<int64_t> {
    auto r = c.run(
        "SELECT coalesce((SELECT min(off) FROM stream_records WHERE stream=$1 AND part=$2 AND time>=$3), "
        "(SELECT next_offset FROM stream_partitions WHERE stream=$1 AND part=$2), 0)",
        {Param::of(stream), Param::of(int64_t{partition}), Param::of(time_ms)});
    if (!r) return r.error();
    return r->integer(0, 0);
  });
}

Expected<std::optional<BlobInfo>> PgStore::head_blob(const std::string& container, const std::string& name) {
  using R = std::optional<BlobInfo>;
  return read<R>([&](Connection& c) -> Expected<R> {
    auto r = c.run(std::string("SELECT ") + kBlobColumns + " FROM blobs WHERE container=$1 AND name=$2 AND deleted=0",
                   {Param::of(container), Param::of(name)});
    if (!r) return r.error();
    if (r->size() == 0) return R();
    return R(blob_info(*r, 0, container));
  });
}

Expected<std::optional<Blob>> PgStore::get_blob(const std::string& container, const std::string& name) {
  using R = std::optional<Blob>;
  return read<R>([&](Connection& c) -> Expected<R> {
    if (auto st = c.exec("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"); !st) return st.error();
    auto body = [&]() -> Expected<R> {
      auto r = c.run(std::string("SELECT ") + kBlobColumns + " FROM blobs WHERE container=$1 AND name=$2 AND deleted=0",
                     {Param::of(container), Param::of(name)});
      if (!r) return r.error();
      if (r->size() == 0) return R();
      Blob blob{blob_info(*r, 0, container), {}};
      auto chunks = c.run("SELECT data FROM blob_chunks WHERE container=$1 AND name=$2 AND version=$3 ORDER BY n",
                          {Param::of(container), Param::of(name), Param::of(blob.info.version)});
      if (!chunks) return chunks.error();
      blob.data.reserve(static_cast<std::size_t>(blob.info.size));
      for (int i = 0; i < chunks->size(); ++i) blob.data += chunks->text(i, 0);
      if (static_cast<int64_t>(blob.data.size()) != blob.info.size) {
        return Error{"blob " + container + "/" + name + " version " + std::to_string(blob.info.version) + " has " +
                         std::to_string(blob.data.size()) + " bytes in the database, not " + std::to_string(blob.info.size),
                     store_error::io};
      }
      return R(std::move(blob));
    };
    auto out = body();
    if (auto st = c.exec(out ? "COMMIT" : "ROLLBACK"); !st && out) return st.error();
    return out;
  });
}

Expected<BlobPage> PgStore::list_blobs(const std::string& container, const std::string& prefix, const std::string& after,
                                       int limit) {
  return read<BlobPage>([&](Connection& c) -> Expected<BlobPage> {
    auto r = c.run(std::string("SELECT ") + kBlobColumns +
                       " FROM blobs WHERE container=$1 AND deleted=0 AND name>$2 AND starts_with(name, $3) "
                       "ORDER BY name LIMIT $4",
                   {Param::of(container), Param::of(after), Param::of(prefix), Param::of(int64_t{limit} + 1)});
    if (!r) return r.error();
    BlobPage page;
    for (int i = 0; i < r->size(); ++i) page.blobs.push_back(blob_info(*r, i, container));
    if (limit >= 0 && page.blobs.size() > static_cast<std::size_t>(limit)) {
      page.blobs.resize(static_cast<std::size_t>(limit));
      page.next_after = page.blobs.empty() ? after : page.blobs.back().name;
    }
    return page;
  });
}

}  // namespace nimbus::pg
