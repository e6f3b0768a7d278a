#pragma once
// OTLP/protobuf export bodies as OTLP/JSON, decoded by Google's protobuf (python3-protobuf, with
// the schema in tests/otlp/trace.proto compiled by protoc) through tests/otlp/to_json.py: what
// a collector would read, from a decoder that is not the host's. Also gunzip for gzipped exports.
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <mutex>
#include <string>

namespace nimbus::testing {

// The JSON, or "" with *problem set when the bytes are not an ExportTraceServiceRequest that
// protobuf would encode the same way. Decoded once per distinct body (tests poll).
inline std::string otlp_protobuf_to_json(const std::string& body, std::string* problem) {
  static std::mutex mu;
  static std::map<std::string, std::pair<std::string, std::string>> decoded;  // body -> (json, problem)
  std::lock_guard lock(mu);
  if (auto it = decoded.find(body); it != decoded.end()) {
    *problem = it->second.second;
    return it->second.first;
  }
  char path[] = "/tmp/nimbus-otlp-XXXXXX";
  const int fd = ::mkstemp(path);
  if (fd < 0) {
    *problem = "cannot make a temporary file";
    return "";
  }
  ::close(fd);
  std::ofstream(path, std::ios::binary) << body;
  const std::string command = std::string("/usr/bin/python3 ") + NIMBUS_SOURCE_DIR "/tests/otlp/to_json.py < " + path +
                              " 2>" + path + ".err";
  std::string out;
  FILE* p = ::popen(command.c_str(), "r");
  if (p != nullptr) {
    char buf[4096];
    std::size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  }
  const int status = p ? ::pclose(p) : -1;
  std::string err;
  {
    std::ifstream in(std::string(path) + ".err");
    err.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  std::remove(path);
  std::remove((std::string(path) + ".err").c_str());
  if (status != 0) {
    *problem = "tests/otlp/to_json.py: " + (err.empty() ? std::string("failed") : err);
    out.clear();
  } else {
    problem->clear();
  }
  decoded[body] = {out, *problem};
  return out;
}

// A gzip body inflated ("" when it is not gzip).
inline std::string gunzip(const std::string& in) {
  z_stream z{};
  if (inflateInit2(&z, 15 + 16) != Z_OK) return "";
  std::string out;
  char buf[65536];
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  z.avail_in = static_cast<uInt>(in.size());
  int rc = Z_OK;
  while (rc == Z_OK) {
    z.next_out = reinterpret_cast<Bytef*>(buf);
    z.avail_out = sizeof buf;
    rc = inflate(&z, Z_NO_FLUSH);
    out.append(buf, sizeof buf - z.avail_out);
  }
  inflateEnd(&z);
  return rc == Z_STREAM_END ? out : "";
}

}  // namespace nimbus::testing
