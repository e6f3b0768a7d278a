#pragma once
// File-drop triggers, for legacy systems that write files into a folder: every file whose name
// matches the trigger's pattern is one invocation (payload: its bytes; subject: its name).
// - A file is taken by renaming it into `<folder>/.processing/` (atomic, never over another
//   file), so hosts watching one folder never both take it; a file that a crash left there is
//   moved back on the next start and runs again (at least once). Hosts sharing a store (and a
//   folder, on one machine or a network share) each take into `.processing/<host id>/`; every
//   2 s they list the folders (a drop on another machine raises no inotify event here) and hand
//   back the files of a host that is gone (out of the registry, its folder untouched for 10 s).
// - On success the function's outputs are committed first, then the file moves to
//   `processed/`; after the last failed attempt of the function's retry policy it moves to
//   `failed/` with `<name>.reason.json` beside it. A name already taken there gets a time stamp.
// - Names starting with '.' or ending in .tmp or .part are never taken, so writers can write
//   under such a name and rename when done. Files present at start are taken too.
// The folder is watched with inotify on a thread of the trigger's own, which also starts every
// invocation and retry (never the store's writer thread or a pool's completion).
#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "core/app_spec.h"
#include "core/clock.h"
#include "core/expected.h"
#include "triggers/file/file_spec.h"
#include "triggers/trigger.h"

namespace nimbus {

class FunctionPools;
class Logger;
class Store;

class FileTrigger final : public Trigger {
 public:
  explicit FileTrigger(const TriggerContext& context);
  ~FileTrigger() override;
  FileTrigger(const FileTrigger&) = delete;
  FileTrigger& operator=(const FileTrigger&) = delete;

  // Makes each folder and its processed/, failed/ and .processing/ folders, moves leftovers of
  // a previous run back, starts watching, and takes the files already there. Errors name the
  // function and the folder.
  std::string_view kind() const override { return "file"; }
  Status start() override;
  // Takes no new file and starts no retry: a file waiting for its retry stays in .processing/
  // for the next start. Invocations in flight go on.
  void stop_taking_work() override;
  // Waits until `until` (steady clock) for the files in flight to be moved; false if some were not.
  bool wait_idle(TimePoint until);
  bool drain(Duration grace) override { return wait_idle(std::chrono::steady_clock::now() + grace); }

  class Watch;
  struct Shared;

 private:
  void run();
  void read_events(char* buf, std::size_t size);
  void look_around();  // hosts sharing a store: list the folders, hand back files of hosts gone

  const AppSpec& app_;
  std::shared_ptr<Shared> shared_;  // the host's parts and the thread's bell, shared with every watch
  int inotify_fd_ = -1;
  std::atomic<bool> stopping_{false};
  std::vector<std::shared_ptr<Watch>> watches_;
  std::thread thread_;
};

}  // namespace nimbus
