#include "gateway/rate_sync.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <optional>
#include <tuple>

#include "core/thread_role.h"
#include "store/store.h"

namespace nimbus {

// One key's merge: what was read (ETag, "" when the store had none) and what goes back.
struct RateLimitSync::Plan {
  RateLimiter::Use use;
  std::string store_key;
  std::string etag;
  double tokens = 0;
  int64_t at_ms = 0;  // the bucket's time as written back
  int64_t ttl_ms = 0;
};

namespace {

constexpr int kAttempts = 5;       // reads and writes of one key that another host keeps beating
constexpr std::size_t kPerCommit = 500;

// "<tokens> <unix ms>"; nullopt for anything else (a bucket that does not parse starts full).
std::optional<std::pair<double, int64_t>> parse_bucket(const std::string& text) {
  auto space = text.find(' ');
  if (space == std::string::npos) return std::nullopt;
  double tokens = 0;
  int64_t at = 0;
  auto a = std::from_chars(text.data(), text.data() + space, tokens);
  auto b = std::from_chars(text.data() + space + 1, text.data() + text.size(), at);
  if (a.ec != std::errc() || a.ptr != text.data() + space || b.ec != std::errc() || b.ptr != text.data() + text.size() ||
      !std::isfinite(tokens)) {
    return std::nullopt;
  }
  return std::make_pair(tokens, at);
}

std::string format_bucket(double tokens, int64_t at_ms) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.6f %lld", tokens, static_cast<long long>(at_ms));
  return buf;
}

}  // namespace

std::string RateLimitSync::bucket_key(const std::string& shared_id, const std::string& key) {
  return shared_id + "#" + key;
}

void RateLimitSync::add(const std::shared_ptr<RateLimiter>& limiter) {
  {
    std::lock_guard lock(mu_);
    std::erase_if(limiters_, [](const std::weak_ptr<RateLimiter>& w) { return w.expired(); });
    limiters_.push_back(limiter);
  }
  // Runs on the loop that met the key: it only wakes the thread.
  limiter->on_new_key([weak = std::weak_ptr<RateLimiter>(limiter), self = weak_from_this()] {
    if (auto s = self.lock()) s->learn_soon(weak);
  });
}

void RateLimitSync::learn_soon(std::weak_ptr<RateLimiter> limiter) {
  {
    std::lock_guard lock(worker_mu_);
    if (stopping_ || !worker_.joinable()) return;  // a round merges it
    to_learn_.push_back(std::move(limiter));
  }
  worker_cv_.notify_one();
}

void RateLimitSync::start(Duration period) {
  std::lock_guard lock(worker_mu_);
  if (worker_.joinable() || stopping_) return;
  worker_ = std::thread([this, period] {
    name_this_thread("rate-sync");
    std::unique_lock lock(worker_mu_);
    auto next = std::chrono::steady_clock::now() + period;
    while (!stopping_) {
      worker_cv_.wait_until(lock, next, [&] { return stopping_ || !to_learn_.empty(); });
      if (stopping_) break;
      auto learn = std::move(to_learn_);
      to_learn_.clear();
      const bool due = std::chrono::steady_clock::now() >= next;
      lock.unlock();
      for (auto& w : learn) {
        if (auto l = w.lock()) merge(*l, l->collect(kPerRound, true));
      }
      if (due) {
        round();
        next = std::chrono::steady_clock::now() + period;
      }
      lock.lock();
    }
  });
}

void RateLimitSync::stop() {
  {
    std::lock_guard lock(worker_mu_);
    stopping_ = true;
  }
  worker_cv_.notify_all();
  if (worker_.joinable() && worker_.get_id() != std::this_thread::get_id()) worker_.join();
}

RateLimitSync::~RateLimitSync() {
  stop();
  if (worker_.joinable()) worker_.detach();  // only if the thread itself let go of the last reference
}

std::size_t RateLimitSync::limiters() const {
  std::lock_guard lock(mu_);
  return static_cast<std::size_t>(
      std::count_if(limiters_.begin(), limiters_.end(), [](const std::weak_ptr<RateLimiter>& w) { return !w.expired(); }));
}

void RateLimitSync::round() {
  std::vector<std::shared_ptr<RateLimiter>> live;
  {
    std::lock_guard lock(mu_);
    std::erase_if(limiters_, [](const std::weak_ptr<RateLimiter>& w) { return w.expired(); });
    for (auto& w : limiters_)
      if (auto l = w.lock()) live.push_back(std::move(l));
  }
  for (auto& l : live) merge(*l, l->collect(kPerRound));
}

void RateLimitSync::merge(RateLimiter& limiter, const std::vector<RateLimiter::Use>& uses) {
  std::vector<Plan> plans;
  for (std::size_t i = 0; i < uses.size(); ++i) {
    plans.push_back({uses[i], bucket_key(limiter.shared_id(), uses[i].key), {}, 0, 0, 0});
    if (plans.size() == kPerCommit || i + 1 == uses.size()) {
      if (!write(limiter, plans)) {
        for (std::size_t j = i + 1; j < uses.size(); ++j) limiter.merge_failed(uses[j]);
        return;
      }
      plans.clear();
    }
  }
}

// Reads each plan's bucket, works out the new one and writes them in one commit; on a
// conflict (another host wrote one of them since), key by key again. False when the store
// failed: what was not merged is kept for the next round.
bool RateLimitSync::write(RateLimiter& limiter, std::vector<Plan>& plans) {
  const RateLimitSpec& spec = limiter.spec();
  auto fail = [&](const std::string& why, std::size_t from) {
    for (std::size_t j = from; j < plans.size(); ++j) limiter.merge_failed(plans[j].use);
    failures_.fetch_add(1);
    std::lock_guard lock(mu_);
    last_failure_ = why;
    return false;
  };
  const TimePoint at = clock_.now();
  auto read = [&](Plan& p) -> Status {
    auto got = store_.get(kRateLimitsStore, p.store_key);
    if (!got) return got.error();
    const int64_t now_ms = unix_ms(clock_);  // after the read: the time the bucket is refilled to
    double tokens = spec.burst;
    int64_t was = now_ms;
    p.etag.clear();
    if (*got) {
      p.etag = (*got)->etag;
      if (auto b = parse_bucket((*got)->value)) std::tie(tokens, was) = *b;
    }
    tokens = std::min(spec.burst, tokens + static_cast<double>(std::max<int64_t>(0, now_ms - was)) * 1e-3 * spec.rate);
    // The bucket's time never goes back (a host whose clock is behind must not make another
    // refill the same span again).
    p.at_ms = std::max(was, now_ms);
    // A debt of at most one burst: a client refused for a while is not refused for ever.
    p.tokens = std::max(-spec.burst, tokens - p.use.used);
    p.ttl_ms = static_cast<int64_t>(std::ceil((spec.burst - p.tokens) / spec.rate * 1000)) + 60000;
    return ok_status();
  };
  auto put = [&](const Plan& p) {
    Batch::Put put;
    put.store = kRateLimitsStore;
    put.key = p.store_key;
    put.value = format_bucket(p.tokens, p.at_ms);
    put.if_match = p.etag;
    put.ttl_ms = std::max<int64_t>(1, p.ttl_ms);
    return put;
  };
  Batch batch;
  for (auto& p : plans) {
    if (auto st = read(p); !st) return fail(st.error().message, 0);
    // Nothing let through here (only refused): the store's count is learnt, nothing written.
    if (p.use.used > 0) batch.puts.push_back(put(p));
  }
  auto done = batch.puts.empty() ? Expected<BatchResult>(BatchResult{}) : store_.commit_sync(std::move(batch));
  if (done) {
    for (auto& p : plans) limiter.merged(p.use.key, p.tokens, at);
    merged_.fetch_add(static_cast<int64_t>(plans.size()));
    return true;
  }
  if (done.error().code != store_error::conflict) return fail(done.error().message, 0);
  // Another host wrote one of them: each alone, read again until it goes through.
  for (std::size_t i = 0; i < plans.size(); ++i) {
    Plan& p = plans[i];
    bool written = false;
    for (int attempt = 0; attempt < kAttempts && !written; ++attempt) {
      conflicts_.fetch_add(1);
      if (auto st = read(p); !st) return fail(st.error().message, i);
      if (p.use.used <= 0) {
        written = true;  // nothing to write: what was read is the count
        break;
      }
      Batch one;
      one.puts.push_back(put(p));
      auto r = store_.commit_sync(std::move(one));
      if (r) written = true;
      else if (r.error().code != store_error::conflict) return fail(r.error().message, i);
    }
    if (!written) {
      limiter.merge_failed(p.use);  // still beaten: the next round tries again
      continue;
    }
    limiter.merged(p.use.key, p.tokens, at);
    merged_.fetch_add(1);
  }
  return true;
}

RateLimitSync::Stats RateLimitSync::stats() const {
  Stats s;
  s.merged = merged_.load();
  s.conflicts = conflicts_.load();
  s.failures = failures_.load();
  std::lock_guard lock(mu_);
  s.last_failure = last_failure_;
  return s;
}

}  // namespace nimbus
