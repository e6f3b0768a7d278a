#include "gateway/static_site.h"

#include <algorithm>
#include <charconv>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/blob_path.h"
#include "triggers/http/server.h"

namespace nimbus {

namespace fs = std::filesystem;

std::string_view content_type_for(std::string_view name) {
  static const std::map<std::string_view, std::string_view> kTypes = {
      {"html", "text/html; charset=utf-8"}, {"htm", "text/html; charset=utf-8"},
      {"css", "text/css; charset=utf-8"},   {"js", "text/javascript; charset=utf-8"},
      {"mjs", "text/javascript; charset=utf-8"}, {"json", "application/json"},
      {"map", "application/json"},          {"txt", "text/plain; charset=utf-8"},
      {"svg", "image/svg+xml"},             {"png", "image/png"},
      {"jpg", "image/jpeg"},                {"jpeg", "image/jpeg"},
      {"gif", "image/gif"},                 {"webp", "image/webp"},
      {"ico", "image/x-icon"},              {"woff", "font/woff"},
      {"woff2", "font/woff2"},              {"wasm", "application/wasm"},
      {"pdf", "application/pdf"},           {"xml", "application/xml"},
      {"webmanifest", "application/manifest+json"}};
  auto dot = name.rfind('.');
  auto slash = name.rfind('/');
  if (dot == std::string_view::npos || (slash != std::string_view::npos && dot < slash)) return "application/octet-stream";
  std::string ext(name.substr(dot + 1));
  for (auto& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  auto it = kTypes.find(ext);
  return it == kTypes.end() ? std::string_view("application/octet-stream") : it->second;
}

Expected<std::unique_ptr<StaticSite>> StaticSite::load(const StaticSpec& spec) {
  auto site = std::unique_ptr<StaticSite>(new StaticSite());
  site->spec_ = spec;
  std::error_code ec;
  if (!fs::is_directory(spec.dir, ec)) return Error{"static folder " + spec.dir + " is not a folder"};
  for (auto it = fs::recursive_directory_iterator(spec.dir, fs::directory_options::skip_permission_denied, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    // Only regular files that are what they seem: no symlinks (one could point out of the
    // folder), no dotfiles (.env, .git).
    const std::string leaf = it->path().filename().string();
    if (!leaf.empty() && leaf.front() == '.') {
      if (it->is_directory(ec)) it.disable_recursion_pending();
      continue;
    }
    if (it->is_symlink(ec) || !fs::is_regular_file(it->symlink_status(ec))) continue;
    const auto size = it->file_size(ec);
    if (ec) break;
    site->bytes_ += size;
    if (site->bytes_ > spec.max_total) {
      return Error{"static folder " + spec.dir + " holds over " + std::to_string(spec.max_total) +
                   " bytes, which would all be held in memory; serve it from an upstream, or leave large files out"};
    }
    std::ifstream in(it->path(), std::ios::binary);
    std::stringstream data;
    if (!(in && data << in.rdbuf()) && size > 0) return Error{"cannot read " + it->path().string()};
    File f;
    f.body = data.str();
    const std::string rel = "/" + fs::relative(it->path(), spec.dir, ec).generic_string();
    f.content_type = std::string(content_type_for(rel));
    f.etag = "\"" + sha256_hex(f.body).substr(0, 20) + "\"";
    site->files_.emplace(rel, std::move(f));
  }
  if (ec) return Error{"cannot read static folder " + spec.dir + ": " + ec.message()};
  return site;
}

const StaticSite::File* StaticSite::find(std::string_view path) const {
  auto it = files_.find(path);
  return it == files_.end() ? nullptr : &it->second;
}

HttpReply StaticSite::serve(std::string_view method, std::string_view rest, IncomingRequest& request) const {
  if (method != "GET" && method != "HEAD") {
    HttpReply r = json_error(405, "method_not_allowed", std::string(method) + " is not allowed on static files; allowed: GET, HEAD", "");
    r.headers.push_back({"allow", "GET, HEAD"});
    return r;
  }
  std::string path = "/" + std::string(rest);
  const File* file = nullptr;
  bool index = false;
  if (path.back() == '/') {
    file = find(path + spec_.index);
    index = true;
  } else {
    file = find(path);
    if (!file) {
      file = find(path + "/" + spec_.index);  // a folder without its slash
      index = file != nullptr;
    }
  }
  if (!file && spec_.spa) {
    // A client-side route (/orders/17): no extension in its last segment.
    auto last = path.substr(path.rfind('/') + 1);
    if (last.find('.') == std::string::npos) {
      file = find("/" + spec_.index);
      index = true;
    }
  }
  if (!file) return json_error(404, "not_found", "no file " + path, "");

  HttpReply r;
  r.status = 200;
  r.headers.push_back({"content-type", file->content_type});
  r.headers.push_back({"etag", file->etag});
  r.headers.push_back({"accept-ranges", "bytes"});
  r.headers.push_back({"cache-control", index ? std::string("no-cache")
                                              : "public, max-age=" + std::to_string(std::chrono::duration_cast<std::chrono::seconds>(spec_.max_age).count())});
  if (auto inm = request.header("if-none-match")) {
    std::string_view tags = *inm;
    bool match = tags == "*";
    while (!match && !tags.empty()) {
      auto comma = tags.find(',');
      std::string_view tag = tags.substr(0, comma);
      while (!tag.empty() && tag.front() == ' ') tag.remove_prefix(1);
      while (!tag.empty() && tag.back() == ' ') tag.remove_suffix(1);
      if (tag.rfind("W/", 0) == 0) tag.remove_prefix(2);
      match = tag == file->etag;
      if (comma == std::string_view::npos) break;
      tags.remove_prefix(comma + 1);
    }
    if (match) {
      r.status = 304;
      return r;
    }
  }
  const std::size_t size = file->body.size();
  auto range = request.header("range");
  auto if_range = request.header("if-range");
  if (size > 0 && range && (!if_range || *if_range == file->etag) && range->rfind("bytes=", 0) == 0 &&
      range->find(',') == std::string_view::npos) {
    // One range (RFC 9110 14.2): a-b, a-, -n. Several ranges get the whole file (allowed).
    std::string_view spec = range->substr(6);
    auto dash = spec.find('-');
    auto number = [](std::string_view s, std::size_t& out) {
      auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
      return ec == std::errc() && end == s.data() + s.size() && !s.empty();
    };
    std::size_t first = 0, last = size ? size - 1 : 0;
    bool ok = dash != std::string_view::npos;
    if (ok && dash == 0) {
      std::size_t n = 0;
      ok = number(spec.substr(1), n) && n > 0;
      if (ok) first = n >= size ? 0 : size - n;
    } else if (ok) {
      ok = number(spec.substr(0, dash), first);
      if (ok && dash + 1 < spec.size()) ok = number(spec.substr(dash + 1), last) && last >= first;
      if (ok) last = std::min(last, size ? size - 1 : 0);
    }
    if (!ok || first >= size) {
      HttpReply bad = json_error(416, "range_not_satisfiable", "the range '" + std::string(*range) + "' is not within " +
                                                                   std::to_string(size) + " bytes", "");
      bad.headers.push_back({"content-range", "bytes */" + std::to_string(size)});
      return bad;
    }
    r.status = 206;
    r.headers.push_back({"content-range", "bytes " + std::to_string(first) + "-" + std::to_string(last) + "/" + std::to_string(size)});
    r.body = file->body.substr(first, last - first + 1);
    return r;
  }
  r.body = file->body;  // HEAD too: the server sends the length and leaves the body out
  return r;
}

}  // namespace nimbus
