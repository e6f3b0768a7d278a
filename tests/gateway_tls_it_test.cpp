// End to end: TLS termination in the real host (gateway.tls). HTTPS on its own port with the
// certificate from the manifest's files, verified by a real OpenSSL client against that
// certificate; keep-alive, ALPN, old protocol versions refused, X-Forwarded-Proto for
// upstreams; a renewed certificate served without a restart (and a broken one refused while
// the old one stays); HTTP redirected to HTTPS when asked.
#include "it_common.h"

#include <sys/socket.h>
#include <unistd.h>

#include "test_upstream.h"
#include "tls_client.h"

namespace nimbus::testing {
namespace {

struct Certs {
  Certs() { make_certificate(cert(), key(), "nimbus-test-1"); }
  TempDir dir;
  std::filesystem::path cert() const { return dir.path() / "cert.pem"; }
  std::filesystem::path key() const { return dir.path() / "key.pem"; }
};

std::string tls_app(const Certs& certs, const std::string& tls_extra = "", const std::string& upstream = "") {
  std::string text = "name: tls\ngateway:\n  tls:\n    cert: " + certs.cert().string() + "\n    key: " + certs.key().string() +
                     "\n" + tls_extra;
  if (!upstream.empty()) {
    text += "  upstreams:\n    up: " + upstream + "\n  routes:\n    - {path: \"/up/{*rest}\", upstream: up}\n";
  }
  return text + "functions:\n  hello:\n    runtime: native\n    handler: " + fn("hello") +
         "\n    triggers:\n      - http: {route: /hello}\n"
         "  echo:\n    runtime: native\n    handler: " + fn("echo") + "\n    triggers:\n      - http: {route: /echo}\n";
}

TEST(GatewayTls, ServesHttpsWithTheManifestsCertificateOnKeptAliveConnections) {
  Certs certs;
  TestUpstream up("up");
  App app(tls_app(certs, "", "http://127.0.0.1:" + std::to_string(up.port())));
  ASSERT_TRUE(app.host->started()) << app.host->errors();
  ASSERT_GT(app.host->https_port(), 0) << app.host->output();
  EXPECT_TRUE(app.host->wait_for_output("nimbus-test-1")) << "the log names the certificate";

  TlsClient client(app.host->https_port(), {.ca_file = certs.cert().string(), .alpn = "h2,http/1.1"});
  ASSERT_TRUE(client.connected()) << client.error();
  EXPECT_EQ(client.peer_common_name(), "nimbus-test-1");
  EXPECT_EQ(client.alpn(), "http/1.1") << "HTTP/1.1 is what the listener speaks";
  EXPECT_EQ(client.version(), "TLSv1.3");
  for (int i = 0; i < 3; ++i) {  // three requests, one connection
    Response r = client.request("GET", "/hello");
    ASSERT_EQ(r.status, 200) << i;
    EXPECT_EQ(r.body, "Hello, World!");
  }
  // An upstream learns that the client came over TLS.
  Response r = client.request("GET", "/up/x", {{"X-Forwarded-Proto", "http"}});
  ASSERT_EQ(r.status, 200) << r.body;
  auto seen = up.seen();
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].headers["x-forwarded-proto"], "https") << "the client's own value never passes";
  EXPECT_NE(seen[0].headers["forwarded"].find("proto=https"), std::string::npos) << seen[0].headers["forwarded"];
  // A function is told the scheme too, and a client's own claim never reaches it.
  auto echoed = parse_object(client.request("GET", "/echo", {{"X-Forwarded-Proto", "http"}}).body);
  EXPECT_EQ(echoed["headers"].as_object()["x-forwarded-proto"].as_string(), "https");
  echoed = parse_object(request(app.port(), "GET", "/echo", {{"X-Forwarded-Proto", "https"}}).body);
  EXPECT_EQ(echoed["headers"].as_object()["x-forwarded-proto"].as_string(), "http");
  // A body past 64 KiB goes on to the upstream as it arrives, over TLS as over plain HTTP,
  // and the connection carries on.
  const std::string upload(3'000'000, 'u');
  r = client.request("POST", "/up/upload", {}, upload);
  ASSERT_EQ(r.status, 200) << r.body.substr(0, 300);
  EXPECT_EQ(parse_object(r.body)["body"].as_string().size(), upload.size());
  EXPECT_EQ(up.seen().back().headers["content-length"], "3000000");
  EXPECT_EQ(client.request("GET", "/hello").status, 200);
  // Plain HTTP goes on serving beside it (no redirect asked for), and says http.
  EXPECT_EQ(request(app.port(), "GET", "/hello").body, "Hello, World!");
  ASSERT_EQ(request(app.port(), "GET", "/up/y").status, 200);
  EXPECT_EQ(up.seen().back().headers["x-forwarded-proto"], "http");

  // A client that only speaks TLS 1.1 is refused; one that checks for another name fails.
  TlsClient old(app.host->https_port(), {.ca_file = certs.cert().string(), .max_version = TLS1_1_VERSION});
  EXPECT_FALSE(old.connected());
  TlsClient wrong_name(app.host->https_port(), {.ca_file = certs.cert().string(), .server_name = "example.com"});
  EXPECT_FALSE(wrong_name.connected()) << "the certificate is for localhost only";
  // Plain HTTP bytes on the TLS port: the connection ends, the host goes on.
  std::string raw = send_raw(app.host->https_port(), "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n", 5000);
  EXPECT_EQ(raw.find("Hello, World!"), std::string::npos);
  TlsClient after(app.host->https_port(), {.ca_file = certs.cert().string()});
  ASSERT_TRUE(after.connected()) << after.error();
  EXPECT_EQ(after.request("GET", "/hello").status, 200);
}

TEST(GatewayTls, HandshakesThatNeverFinishDoNotStopOthersAndTimeOut) {
  Certs certs;
  App app("name: tls\nhttp: {read_timeout: 1s}\n" + tls_app(certs).substr(std::string("name: tls\n").size()));
  ASSERT_TRUE(app.host->started()) << app.host->errors();
  // 300 connections that say nothing, and 300 that send half a ClientHello.
  std::vector<int> silent;
  for (int i = 0; i < 600; ++i) {
    int fd = connect_to(app.host->https_port());
    ASSERT_GE(fd, 0);
    if (i % 2) {
      const unsigned char partial[] = {0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03};
      ASSERT_EQ(::write(fd, partial, sizeof partial), static_cast<ssize_t>(sizeof partial));
    }
    silent.push_back(fd);
  }
  auto t0 = std::chrono::steady_clock::now();
  TlsClient client(app.host->https_port(), {.ca_file = certs.cert().string()});
  ASSERT_TRUE(client.connected()) << client.error();
  EXPECT_EQ(client.request("GET", "/hello").status, 200);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(2));
  // Each stalled handshake is closed after http.read_timeout.
  int closed = 0;
  for (int fd : silent) {
    timeval tv{5, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char buf[64];
    if (::read(fd, buf, sizeof buf) <= 0) ++closed;  // EOF or reset, not the 5 s timeout
    ::close(fd);
  }
  EXPECT_EQ(closed, 600);
}

TEST(GatewayTls, ARenewedCertificateIsServedWithoutARestartAndABrokenOneIsRefused) {
  Certs certs;
  App app(tls_app(certs));
  ASSERT_TRUE(app.host->started()) << app.host->errors();
  const int port = app.host->https_port();
  TlsClient before(port, {.ca_file = certs.cert().string()});
  ASSERT_TRUE(before.connected()) << before.error();
  ASSERT_EQ(before.peer_common_name(), "nimbus-test-1");

  // Renewal as certbot does it: new files moved over the old ones.
  TempDir next;
  make_certificate(next.path() / "cert.pem", next.path() / "key.pem", "nimbus-test-2");
  std::filesystem::copy_file(next.path() / "cert.pem", next.path() / "served.pem");
  std::filesystem::rename(next.path() / "key.pem", certs.key());
  std::filesystem::rename(next.path() / "cert.pem", certs.cert());
  std::string seen;
  EXPECT_TRUE(eventually([&] {
    TlsClient c(port, {.ca_file = certs.cert().string()});
    seen = c.connected() ? c.peer_common_name() : c.error();
    return seen == "nimbus-test-2";
  }))
      << "the new certificate was not served within 10 s: " << seen;
  EXPECT_TRUE(app.host->wait_for_output("TLS certificate reloaded"));
  // A connection made before the renewal goes on with the old one.
  EXPECT_EQ(before.request("GET", "/hello").status, 200);

  // A broken certificate: logged, refused by `nimbus reload`, and the last good one stays.
  { std::ofstream(certs.cert()) << "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"; }
  EXPECT_TRUE(app.host->wait_for_output("TLS certificate not reloaded")) << app.host->output();
  CommandResult reload = run_nimbus({"reload", "--dir", app.dir.path().string()}, app.dir.path());
  EXPECT_NE(reload.exit_code, 0);
  EXPECT_NE((reload.out + reload.err).find("gateway.tls"), std::string::npos) << reload.out << reload.err;
  TlsClient still(port, {.ca_file = (next.path() / "served.pem").string()});
  ASSERT_TRUE(still.connected()) << still.error();
  EXPECT_EQ(still.peer_common_name(), "nimbus-test-2");
  EXPECT_EQ(still.request("GET", "/hello").status, 200);
}

TEST(GatewayTls, RedirectsPlainHttpToHttpsWhenAskedButAnswersHealthChecks) {
  Certs certs;
  App app(tls_app(certs, "    redirect_http: true\n"));
  ASSERT_TRUE(app.host->started()) << app.host->errors();
  const std::string https = "https://localhost:" + std::to_string(app.host->https_port());
  Response r = request(app.port(), "GET", "/hello?x=1", {{"Host", "localhost:" + std::to_string(app.port())}});
  EXPECT_EQ(r.status, 308);
  EXPECT_EQ(r.header("location"), https + "/hello?x=1");
  r = request(app.port(), "POST", "/hello", {{"Host", "localhost"}}, "body");
  EXPECT_EQ(r.status, 308);
  EXPECT_EQ(r.header("location"), https + "/hello");
  // A Host that is not a host name does not end up in the Location.
  r = request(app.port(), "GET", "/x", {{"Host", "evil.example/@x"}});
  EXPECT_EQ(r.header("location"), "https://localhost:" + std::to_string(app.host->https_port()) + "/x");
  EXPECT_EQ(request(app.port(), "GET", "/healthz").status, 200);
  EXPECT_EQ(request(app.port(), "GET", "/readyz").status, 200);
  TlsClient client(app.host->https_port(), {.ca_file = certs.cert().string()});
  ASSERT_TRUE(client.connected()) << client.error();
  EXPECT_EQ(client.request("GET", "/hello").body, "Hello, World!");
}

TEST(GatewayTls, AKeyThatIsNotTheCertificatesStopsTheStartWithTheReason) {
  Certs certs;
  Certs other;
  std::filesystem::copy_file(other.key(), certs.key(), std::filesystem::copy_options::overwrite_existing);
  App app(tls_app(certs));
  EXPECT_FALSE(app.host->started());
  EXPECT_NE(app.host->wait_exit(), 0);
  EXPECT_NE(app.host->errors().find("gateway.tls"), std::string::npos) << app.host->errors();
  EXPECT_NE(app.host->errors().find("does not belong to the certificate"), std::string::npos) << app.host->errors();
}

}  // namespace
}  // namespace nimbus::testing

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core/buffers_to_string.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/beast/websocket/ssl.hpp>

namespace nimbus::testing {
namespace {

TEST(GatewayTls, WebSocketsPassThroughOverTls) {
  namespace asio = boost::asio;
  namespace beast = boost::beast;
  namespace websocket = beast::websocket;
  Certs certs;
  TestUpstream up("up");
  App app(tls_app(certs, "", "http://127.0.0.1:" + std::to_string(up.port())));
  ASSERT_TRUE(app.host->started()) << app.host->errors();

  asio::io_context ioc;
  asio::ssl::context ctx(asio::ssl::context::tls_client);
  ctx.load_verify_file(certs.cert().string());
  ctx.set_verify_mode(asio::ssl::verify_peer);
  websocket::stream<asio::ssl::stream<asio::ip::tcp::socket>> ws(ioc, ctx);
  beast::get_lowest_layer(ws).connect({asio::ip::address_v4::loopback(), static_cast<unsigned short>(app.host->https_port())});
  beast::get_lowest_layer(ws).set_option(asio::ip::tcp::no_delay(true));
  timeval tv{10, 0};
  ::setsockopt(beast::get_lowest_layer(ws).native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  SSL_set_tlsext_host_name(ws.next_layer().native_handle(), "localhost");
  ws.next_layer().set_verify_callback(asio::ssl::host_name_verification("localhost"));
  ws.next_layer().handshake(asio::ssl::stream_base::client);
  ws.handshake("localhost", "/up/socket");
  beast::flat_buffer b;
  ws.read(b);
  EXPECT_EQ(beast::buffers_to_string(b.data()), "hello from up");
  for (int i = 0; i < 50; ++i) {
    b.clear();
    const std::string m = "over tls " + std::to_string(i) + std::string(static_cast<std::size_t>(i) * 500, 'z');
    ws.write(asio::buffer(m));
    ws.read(b);
    ASSERT_EQ(beast::buffers_to_string(b.data()), "echo:" + m) << i;
  }
  ws.close(websocket::close_code::normal);
  ASSERT_FALSE(up.seen().empty());
  EXPECT_EQ(up.seen().back().headers["x-forwarded-proto"], "https");
}

}  // namespace
}  // namespace nimbus::testing

#include "jwt_signer.h"

namespace nimbus::testing {
namespace {

TEST(GatewayTls, AJwksUrlOverHttpsIsVerifiedAgainstItsCaAndItsKeysCheckTokens) {
  // The identity provider: another host serving its JWKS as a static file over TLS.
  Certs certs;
  TempDir keys;
  TestKey key = TestKey::rsa("idp-1");
  keys.write("jwks.json", jwks({&key}));
  const std::string hello = "functions:\n  hello:\n    runtime: native\n    handler: " + fn("hello") +
                            "\n    triggers:\n      - http: {route: /hello}\n";
  App idp("name: idp\ngateway:\n  tls: {cert: " + certs.cert().string() + ", key: " + certs.key().string() +
          "}\n  routes:\n    - {path: \"/{*rest}\", methods: [GET], static: {dir: " + keys.path().string() + "}}\n" + hello);
  ASSERT_TRUE(idp.host->started()) << idp.host->errors();
  const std::string url = "https://localhost:" + std::to_string(idp.host->https_port()) + "/jwks.json";

  App api("name: api\ngateway:\n  jwt: {jwks_url: \"" + url + "\", jwks_ca: " + certs.cert().string() +
          "}\n  routes:\n    - {path: /secure, function: hello, auth: jwt}\n" + hello);
  ASSERT_TRUE(api.host->started()) << api.host->errors();
  const int64_t now = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  Response ok = request(api.port(), "GET", "/secure", {{"Authorization", "Bearer " + key.token({{"sub", "a"}, {"exp", now + 600}})}});
  EXPECT_EQ(ok.status, 200) << ok.body;
  EXPECT_EQ(request(api.port(), "GET", "/secure").status, 401);
  TestKey stranger = TestKey::rsa("idp-1");
  EXPECT_EQ(request(api.port(), "GET", "/secure", {{"Authorization", "Bearer " + stranger.token({{"sub", "a"}, {"exp", now + 600}})}}).status,
            401);

  // Without the provider's CA the certificate does not verify: the start stops and says so.
  App untrusting("name: api\ngateway:\n  jwt: {jwks_url: \"" + url + "\"}\n  routes:\n    - {path: /secure, function: hello, auth: jwt}\n" + hello);
  EXPECT_FALSE(untrusting.host->started());
  EXPECT_NE(untrusting.host->wait_exit(), 0);
  EXPECT_NE(untrusting.host->errors().find("gateway.jwt.jwks_url: TLS with localhost:"), std::string::npos)
      << untrusting.host->errors();
}

}  // namespace
}  // namespace nimbus::testing
