#include "triggers/http/async_jobs.h"

#include <algorithm>
#include <boost/json.hpp>

#include "store/store.h"
#include "triggers/http/http_spec.h"
#include "triggers/kind.h"

namespace nimbus {

std::string job_record(const std::string& id, const std::string& function, const char* status, int attempts,
                       int64_t updated_ms, const HttpReply* reply, const std::string& error) {
  boost::json::object o{{"id", id}, {"function", function}, {"status", status}, {"attempts", attempts},
                        {"updated_ms", updated_ms}};
  if (reply) {
    boost::json::object result{{"status", reply->status}};
    if (const std::string* ct = find_header(reply->headers, "content-type")) result["content_type"] = *ct;
    const bool text = std::all_of(reply->body.begin(), reply->body.end(), [](char c) { return c != '\0'; });
    if (text) result["body"] = reply->body;
    result["body_size"] = reply->body.size();
    o["result"] = std::move(result);
  }
  if (!error.empty()) o["error"] = error;
  return boost::json::serialize(o);
}

namespace {

class AsyncJobHooks final : public FeedHooks {
 public:
  explicit AsyncJobHooks(std::string function) : function_(std::move(function)) {}

  Status prepare(Store& store, const Message& m, Invocation& inv, std::shared_ptr<const Headers>&,
                 int64_t now_ms) const override {
    // The queued request, as the function would have seen it synchronously.
    HttpRequest& http = inv.http.emplace();
    for (auto& h : inv.metadata) {
      if (h.name == "http.method") http.method = std::move(h.value);
      else if (h.name == "http.path") http.path = std::move(h.value);
      else if (h.name == "http.query") http.query = std::move(h.value);
      else if (h.name.rfind("param.", 0) == 0) http.params.push_back({h.name.substr(6), std::move(h.value)});
      else if (h.name.rfind("header.", 0) == 0) http.headers.push_back({h.name.substr(7), std::move(h.value)});
    }
    inv.metadata.clear();  // the job id the caller holds is the message id
    Batch running;
    running.puts.push_back({kJobStore, m.id, job_record(m.id, function_, "running", m.deliveries, now_ms),
                            std::nullopt, kJobTtlMs});
    store.commit(std::move(running), [](Expected<BatchResult>) {});
    return ok_status();
  }

  void complete(Batch& batch, const std::string& id, int attempt, Outcome outcome, bool last, const Result& r,
                const std::string& error_type, int64_t now_ms) const override {
    if (outcome == Outcome::success) {
      batch.puts.push_back({kJobStore, id, job_record(id, function_, "succeeded", attempt, now_ms, r.http ? &*r.http : nullptr),
                            std::nullopt, kJobTtlMs});
      return;
    }
    batch.puts.push_back({kJobStore, id,
                          job_record(id, function_, last ? "failed" : "pending", attempt, now_ms, nullptr,
                                     error_type.empty() ? std::string(to_string(outcome)) : error_type),
                          std::nullopt, kJobTtlMs});
  }

 private:
  std::string function_;
};

}  // namespace

std::shared_ptr<const FeedHooks> async_job_hooks(std::string function) {
  return std::make_shared<const AsyncJobHooks>(std::move(function));
}

}  // namespace nimbus
