// Async HTTP job records: one shape, whoever writes them (the HTTP trigger the pending one, the
// queue trigger the rest), so a client reading /_nimbus/jobs/<id> sees the same fields always.
#include "triggers/http/async_jobs.h"

#include <gtest/gtest.h>

#include <boost/json.hpp>

namespace nimbus {
namespace {

namespace json = boost::json;

TEST(AsyncJobs, EveryRecordHasTheSameFieldsAndAResultOrAnErrorWhenThereIsOne) {
  const json::object pending = json::parse(job_record("j1", "report", "pending", 0, 1700000000000)).as_object();
  for (const char* key : {"id", "function", "status", "attempts", "updated_ms"}) {
    EXPECT_TRUE(pending.contains(key)) << key;
  }
  EXPECT_EQ(pending.size(), 5u);
  EXPECT_EQ(pending.at("status").as_string(), "pending");

  HttpReply reply;
  reply.status = 201;
  reply.headers = {{"content-type", "text/csv"}};
  reply.body = "a,b\n";
  const json::object done = json::parse(job_record("j1", "report", "succeeded", 1, 1700000000500, &reply)).as_object();
  const json::object& result = done.at("result").as_object();
  EXPECT_EQ(result.at("status").as_int64(), 201);
  EXPECT_EQ(result.at("content_type").as_string(), "text/csv");
  EXPECT_EQ(result.at("body").as_string(), "a,b\n");
  EXPECT_EQ(result.at("body_size").as_int64(), 4);

  reply.body = std::string("\0\1", 2);  // bytes: only their size
  const json::object binary = json::parse(job_record("j1", "report", "succeeded", 1, 1, &reply)).as_object();
  EXPECT_FALSE(binary.at("result").as_object().contains("body"));
  EXPECT_EQ(binary.at("result").as_object().at("body_size").as_int64(), 2);

  const json::object failed = json::parse(job_record("j1", "report", "failed", 3, 2, nullptr, "timeout")).as_object();
  EXPECT_EQ(failed.at("error").as_string(), "timeout");
  EXPECT_FALSE(failed.contains("result"));
}

}  // namespace
}  // namespace nimbus
