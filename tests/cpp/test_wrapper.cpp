// The C++17 wrapper (bindings/cpp/portmgr.hpp): RAII release, exceptions with codes,
// moves, multi-port and bound leases, JSON views, 8 threads x 200 allocations.
//
// Usage: test_wrapper REGISTRY_DIR   (ports come from 26000-27999)
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <portmgr.hpp>
#include <set>
#include <string>
#include <thread>
#include <vector>

static int failures = 0;

#define CHECK(cond)                                                                     \
    do {                                                                                \
        if (!(cond)) {                                                                  \
            std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
            failures++;                                                                 \
        }                                                                               \
    } while (0)

// `expr` must throw portmgr::error with `want`.
#define CHECK_THROWS(expr, want)                                                        \
    do {                                                                                \
        bool thrown_ = false;                                                           \
        try {                                                                           \
            (void)(expr);                                                               \
        } catch (const portmgr::error &e_) {                                            \
            thrown_ = e_.code() == (want) && std::strlen(e_.what()) > 0;                \
            if (!thrown_)                                                               \
                std::fprintf(stderr, "%s:%d: wrong error %u: %s\n", __FILE__, __LINE__, \
                             static_cast<unsigned>(e_.code()), e_.what());              \
        }                                                                               \
        if (!thrown_) {                                                                 \
            std::fprintf(stderr, "%s:%d: %s did not throw %s\n", __FILE__, __LINE__,     \
                         #expr, #want);                                                 \
            failures++;                                                                 \
        }                                                                               \
    } while (0)

static bool listed(const portmgr::registry &reg, std::uint16_t port) {
    return reg.list_json().find("\"port\":" + std::to_string(port) + ",") != std::string::npos;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: %s REGISTRY_DIR\n", argv[0]);
        return 2;
    }
    try {
        CHECK(std::string(portmgr::version()) == PORTMGR_VERSION);
        portmgr::registry reg(argv[1]);
        CHECK_THROWS(portmgr::registry(std::string("")), PORTMGR_INVALID_ARGUMENT);

        // RAII: the lease is released when it goes out of scope.
        std::uint16_t port = 0;
        {
            portmgr::lease l = reg.allocate(portmgr::request().range(26000, 26099));
            port = l.port();
            CHECK(port >= 26000 && port <= 26099);
            CHECK(listed(reg, port));
            portmgr::lease moved = std::move(l);
            CHECK(!l && moved && moved.port() == port && l.port() == 0);
        }
        CHECK(!listed(reg, port));

        // Explicit release is idempotent.
        portmgr::lease l = reg.allocate(portmgr::request().range(26000, 26099));
        l.release();
        l.release();
        CHECK(!l && l.port() == 0 && l.ports().empty());

        // Errors are exceptions with the C status.
        CHECK_THROWS(portmgr::request().name("\xff\xfe"), PORTMGR_INVALID_ARGUMENT);
        CHECK_THROWS(portmgr::request().name(std::string("a\0b", 3)), PORTMGR_INVALID_ARGUMENT);
        CHECK_THROWS(portmgr::request().range(10, 1), PORTMGR_INVALID_ARGUMENT);
        CHECK_THROWS(portmgr::request().protocols(9), PORTMGR_INVALID_ARGUMENT);
        CHECK_THROWS(portmgr::probe(0), PORTMGR_INVALID_ARGUMENT);
        {
            portmgr::request named;
            named.name("cpp-db").range(26100, 26149);
            portmgr::lease db = reg.allocate(named);
            CHECK_THROWS(reg.allocate(named), PORTMGR_IN_USE);
            CHECK(reg.lookup("cpp-db") == db.port());
        }
        CHECK_THROWS(reg.lookup("cpp-db"), PORTMGR_NOT_FOUND);
        CHECK_THROWS(reg.release_port(26149), PORTMGR_NOT_FOUND);
        {
            portmgr::lease a = reg.allocate(portmgr::request().range(26150, 26199));
            portmgr::request one;
            one.range(a.port(), a.port());
            CHECK_THROWS(reg.allocate(one), PORTMGR_EXHAUSTED);
        }

        // Multi-port, contiguous.
        {
            portmgr::lease block = reg.allocate(portmgr::request()
                                                    .range(26200, 26299)
                                                    .count(5)
                                                    .contiguous()
                                                    .strategy(PORTMGR_STRATEGY_SEQUENTIAL));
            std::vector<std::uint16_t> ps = block.ports();
            CHECK(ps.size() == 5);
            for (std::size_t i = 1; i < ps.size(); i++) CHECK(ps[i] == ps[0] + i);
            CHECK(block.port() == ps[0]);
        }

        // Keep, then release by port from the registry.
        {
            portmgr::lease k = reg.allocate(portmgr::request().range(26300, 26349));
            k.renew(std::chrono::seconds(60));
            std::vector<std::uint16_t> kept = k.keep();
            CHECK(kept.size() == 1 && !k);
            CHECK(listed(reg, kept[0]));
            reg.release_port(kept[0]);
            CHECK(!listed(reg, kept[0]));
        }

        // Bound: a listening socket that accepts a connection.
        {
            portmgr::bound b = reg.allocate_bound(portmgr::request().range(26350, 26399));
            CHECK(b.sockets.size() == 1 && b.sockets[0]);
            std::uint16_t p = b.lease.port();
            CHECK(!portmgr::probe(p));
            int c = ::socket(AF_INET, SOCK_STREAM, 0);
            sockaddr_in sa{};
            sa.sin_family = AF_INET;
            sa.sin_port = htons(p);
            sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            CHECK(::connect(c, reinterpret_cast<sockaddr *>(&sa), sizeof sa) == 0);
            int s = ::accept(b.sockets[0].get(), nullptr, nullptr);
            CHECK(s >= 0);
            if (s >= 0) ::close(s);
            ::close(c);
        }

        // Views.
        CHECK(reg.stats_json().find("\"held\":0") != std::string::npos);
        CHECK(reg.list_json() == "[]");
        CHECK(reg.gc() == 0);

        // Lease ids: release and renew by id; an unknown id throws NOT_FOUND.
        {
            portmgr::lease a = reg.allocate(portmgr::request().range(26440, 26449).ttl(std::chrono::seconds(60)));
            std::uint64_t id = a.id();
            CHECK(id != 0);
            reg.renew_id(id, std::chrono::seconds(120));
            a.keep();
            CHECK(a.id() == 0);
            reg.release_id(id);
            CHECK_THROWS(reg.release_id(id), PORTMGR_NOT_FOUND);
            CHECK_THROWS(reg.renew_id(id), PORTMGR_NOT_FOUND);
        }
        // Reservations: a reserved port is never handed out; the reason is in the error.
        {
            reg.reserve(26450, 26451, "cpp test");
            CHECK(reg.reserved_json().find("\"reason\":\"cpp test\"") != std::string::npos);
            CHECK_THROWS(reg.allocate(portmgr::request().range(26450, 26452).preferred(26451, true)), PORTMGR_IN_USE);
            portmgr::lease only = reg.allocate(portmgr::request().range(26450, 26452));
            CHECK(only.port() == 26452);
            reg.unreserve(26450, 26451);
            CHECK_THROWS(reg.unreserve(26450, 26451), PORTMGR_NOT_FOUND);
            CHECK_THROWS(reg.reserve(26455, 26454), PORTMGR_INVALID_ARGUMENT);
        }
        // A module's port map, and the overview.
        {
            portmgr::lease m = reg.allocate(portmgr::request().name("cppmod").range(26453, 26459).internal_ports({7000, 7001}));
            auto map = m.port_map();
            CHECK(map.size() == 2 && map[0].first == 7000 && map[1].first == 7001 && map[0].second < map[1].second);
            CHECK(m.ports().size() == 2);
            std::string ov = reg.overview_json();
            CHECK(ov.find("\"cppmod\":{") != std::string::npos && ov.find("\"port_map\":{\"7000\":") != std::string::npos);
            CHECK_THROWS(portmgr::request().internal_ports({1, 1}), PORTMGR_INVALID_ARGUMENT);
        }

        // 8 threads x 200, one shared registry: 0 duplicates.
        constexpr int threads = 8, per = 200;
        std::vector<std::vector<portmgr::lease>> held(threads);
        std::vector<int> errors(threads, 0);
        std::vector<std::thread> pool;
        for (int t = 0; t < threads; t++) {
            pool.emplace_back([&, t] {
                try {
                    portmgr::request req;
                    req.range(26000, 27999);
                    for (int i = 0; i < per; i++) held[t].push_back(reg.allocate(req));
                } catch (const portmgr::error &e) {
                    std::fprintf(stderr, "thread %d: %s\n", t, e.what());
                    errors[t]++;
                }
            });
        }
        for (auto &th : pool) th.join();
        std::set<std::uint16_t> seen;
        std::size_t total = 0;
        for (int t = 0; t < threads; t++) {
            CHECK(errors[t] == 0);
            for (auto &x : held[t]) {
                seen.insert(x.port());
                total++;
            }
        }
        std::printf("test_wrapper: %zu leases held at once, %zu duplicates\n", total, total - seen.size());
        CHECK(total == threads * per);
        CHECK(seen.size() == total);
        held.clear();
        CHECK(reg.stats_json().find("\"held\":0") != std::string::npos);
    } catch (const std::exception &e) {
        std::fprintf(stderr, "unexpected exception: %s\n", e.what());
        return 1;
    }
    if (failures) {
        std::fprintf(stderr, "test_wrapper: %d check(s) FAILED\n", failures);
        return 1;
    }
    std::printf("test_wrapper: all checks passed\n");
    return 0;
}
