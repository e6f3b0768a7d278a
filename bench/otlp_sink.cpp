// A collector for benchmarks (bench/tracing.sh): takes OTLP/HTTP exports on 127.0.0.1:PORT,
// reads each request's body and answers 200, on kept-alive connections, a thread per
// connection. It stands for a collector on another machine, and costs little of the core it
// shares with the load generator at the pipeline's ~200,000 spans/s. Usage: otlp_sink PORT
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <csignal>

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <thread>

namespace {

// The value of the Content-Length header in `head` (0 when there is none).
std::size_t content_length(std::string_view head) {
  std::size_t at = 0;
  while ((at = head.find('\n', at)) != std::string_view::npos) {
    ++at;
    constexpr std::string_view kName = "content-length:";
    if (head.size() - at < kName.size()) break;
    bool same = true;
    for (std::size_t i = 0; i < kName.size() && same; ++i) {
      same = static_cast<char>(std::tolower(static_cast<unsigned char>(head[at + i]))) == kName[i];
    }
    if (same) return std::strtoull(std::string(head.substr(at + kName.size(), 24)).c_str(), nullptr, 10);
  }
  return 0;
}

void serve(int fd) {
  static constexpr std::string_view kReply = "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
  std::string buf;
  char chunk[65536];
  while (true) {
    std::size_t end;
    while ((end = buf.find("\r\n\r\n")) == std::string::npos) {
      const ssize_t n = ::read(fd, chunk, sizeof chunk);
      if (n <= 0) return (void)::close(fd);
      buf.append(chunk, static_cast<std::size_t>(n));
    }
    const std::size_t length = content_length(std::string_view(buf).substr(0, end + 2));
    if (length > (std::size_t{64} << 20)) return (void)::close(fd);  // not an export: hang up
    const std::size_t total = end + 4 + length;
    while (buf.size() < total) {
      const ssize_t n = ::read(fd, chunk, sizeof chunk);
      if (n <= 0) return (void)::close(fd);
      buf.append(chunk, static_cast<std::size_t>(n));
    }
    buf.erase(0, total);
    if (::write(fd, kReply.data(), kReply.size()) != static_cast<ssize_t>(kReply.size())) return (void)::close(fd);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: otlp_sink PORT\n");
    return 2;
  }
  std::signal(SIGPIPE, SIG_IGN);  // a host that hung up costs its connection, not the sink
  const int s = ::socket(AF_INET, SOCK_STREAM, 0);
  const int one = 1;
  ::setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(std::atoi(argv[1])));
  if (::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(s, 64) != 0) {
    std::perror("otlp_sink");
    return 1;
  }
  while (true) {
    const int fd = ::accept(s, nullptr, nullptr);
    if (fd < 0) continue;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    std::thread(serve, fd).detach();
  }
}
