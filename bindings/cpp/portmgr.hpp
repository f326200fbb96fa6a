// portmgr.hpp: a header-only C++17 RAII wrapper over the C API of libportmgr (portmgr.h).
//
//   #include <portmgr.hpp>
//   auto reg = portmgr::registry::open_default();          // or portmgr::registry("/dir")
//   portmgr::lease web = reg.allocate(portmgr::request().name("web").range(20000, 20999));
//   std::cout << web.port();                                // released when `web` dies
//
// Errors are exceptions: every failing call throws portmgr::error (a std::runtime_error)
// carrying the C status (code()) and the library's message (what()). Functions marked
// noexcept never throw; destructors never throw (a failed release in a destructor is
// ignored: the ports are then freed when the process exits).
//
// Ownership: registry, request, lease and socket_fd are move-only owners of one C handle
// or descriptor each and free it in their destructor. A lease stays valid after its
// registry object is destroyed. Thread-safety is the C API's: a registry may be shared
// by threads; a lease or request may be used from any thread (calls take turns).
//
// Link with: $(pkg-config --cflags --libs portmgr). SPDX-License-Identifier: MIT OR Apache-2.0
#ifndef PORTMGR_HPP
#define PORTMGR_HPP

#include <portmgr.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace portmgr {

/// A failed portmgr call: code() is the C status, what() the library's message.
class error : public std::runtime_error {
public:
    error(portmgr_status code, const std::string &message)
        : std::runtime_error(message), code_(code) {}
    /// The stable status code (PORTMGR_IN_USE, PORTMGR_EXHAUSTED, ...).
    portmgr_status code() const noexcept { return code_; }

private:
    portmgr_status code_;
};

namespace detail {

/// The calling thread's last portmgr error message.
inline std::string last_message() {
    std::size_t n = portmgr_last_error_message(nullptr, 0);
    std::vector<char> buf(n + 1, '\0');
    portmgr_last_error_message(buf.data(), buf.size());
    return std::string(buf.data(), n);
}

inline void check(portmgr_status status) {
    if (status != PORTMGR_OK) {
        std::string msg = last_message();
        if (msg.empty()) msg = portmgr_status_str(status);
        throw error(status, msg);
    }
}

/// A std::string as a C string argument: an embedded NUL would silently cut it short.
inline const char *c_arg(const std::string &s, const char *what) {
    if (s.find('\0') != std::string::npos) {
        throw error(PORTMGR_INVALID_ARGUMENT,
                    std::string("invalid argument: `") + what + "` contains a NUL byte");
    }
    return s.c_str();
}

/// Fetch a snprintf-style JSON view, growing the buffer until it fits.
template <typename F>
std::string json(F fill) {
    std::vector<char> buf(4096);
    for (;;) {
        std::size_t n = 0;
        check(fill(buf.data(), buf.size(), &n));
        if (n < buf.size()) return std::string(buf.data(), n);
        buf.resize(n + 1);
    }
}

}  // namespace detail

/// The library's version string (static); compare with PORTMGR_VERSION.
inline const char *version() noexcept { return portmgr_version(); }

/// Whether `port` can be bound now for `protocols` (PORTMGR_PROTO_TCP | PORTMGR_PROTO_UDP).
/// A hint only. Throws portmgr::error on a bad argument or an OS failure.
inline bool probe(std::uint16_t port, std::uint32_t protocols = PORTMGR_PROTO_TCP) {
    bool is_free = false;
    detail::check(portmgr_probe(port, protocols, &is_free));
    return is_free;
}

/// An owned file descriptor (a bound socket from registry::allocate_bound); closed on
/// destruction unless release()d.
class socket_fd {
public:
    socket_fd() noexcept = default;
    explicit socket_fd(int fd) noexcept : fd_(fd) {}
    socket_fd(socket_fd &&o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
    socket_fd &operator=(socket_fd &&o) noexcept {
        if (this != &o) {
            reset();
            fd_ = std::exchange(o.fd_, -1);
        }
        return *this;
    }
    socket_fd(const socket_fd &) = delete;
    socket_fd &operator=(const socket_fd &) = delete;
    ~socket_fd() { reset(); }

    /// The descriptor (-1 when empty); still owned by this object.
    int get() const noexcept { return fd_; }
    /// Give up ownership: the caller closes the returned descriptor.
    int release() noexcept { return std::exchange(fd_, -1); }
    /// Close now.
    void reset() noexcept {
        if (fd_ >= 0) ::close(fd_);
        fd_ = -1;
    }
    explicit operator bool() const noexcept { return fd_ >= 0; }

private:
    int fd_ = -1;
};

/// What to allocate; setters chain and throw portmgr::error on invalid values (the request
/// is then unchanged). Defaults: one TCP port, default pool, random strategy.
class request {
public:
    request() { detail::check(portmgr_request_new(&h_)); }
    request(request &&o) noexcept
        : h_(std::exchange(o.h_, nullptr)), count_(o.count_), protocols_(o.protocols_) {}
    request &operator=(request &&o) noexcept {
        if (this != &o) {
            portmgr_request_free(h_);
            h_ = std::exchange(o.h_, nullptr);
            count_ = o.count_;
            protocols_ = o.protocols_;
        }
        return *this;
    }
    request(const request &) = delete;
    request &operator=(const request &) = delete;
    ~request() { portmgr_request_free(h_); }

    request &protocols(std::uint32_t p) {
        detail::check(portmgr_request_set_protocols(h_, p));
        protocols_ = p;
        return *this;
    }
    request &range(std::uint16_t start, std::uint16_t end) {
        detail::check(portmgr_request_set_range(h_, start, end));
        return *this;
    }
    /// Leave these ports out of the range (set the range first).
    request &exclude(const std::vector<std::uint16_t> &ports) {
        detail::check(portmgr_request_exclude(h_, ports.data(), ports.size()));
        return *this;
    }
    /// PORTMGR_STRATEGY_RANDOM, _SEQUENTIAL, _HASH or _KERNEL.
    request &strategy(std::uint32_t s) {
        detail::check(portmgr_request_set_strategy(h_, s));
        return *this;
    }
    request &hash_key(const std::string &key) {
        detail::check(portmgr_request_set_hash_key(h_, detail::c_arg(key, "key")));
        return *this;
    }
    request &name(const std::string &n) {
        detail::check(portmgr_request_set_name(h_, detail::c_arg(n, "name")));
        return *this;
    }
    request &count(std::size_t n) {
        detail::check(portmgr_request_set_count(h_, n));
        count_ = n;
        return *this;
    }
    request &contiguous(bool c = true) {
        detail::check(portmgr_request_set_contiguous(h_, c));
        return *this;
    }
    request &ttl(std::chrono::milliseconds t) {
        detail::check(portmgr_request_set_ttl_ms(h_, static_cast<std::uint64_t>(t.count())));
        return *this;
    }
    request &watch_pid(std::uint32_t pid) {
        detail::check(portmgr_request_set_watch_pid(h_, pid));
        return *this;
    }
    request &preferred(std::uint16_t port, bool required = false) {
        detail::check(portmgr_request_set_preferred(h_, port, required));
        return *this;
    }
    /// A module's internal ports: one external port each, in one lease (see
    /// portmgr_request_set_internal_ports); lease::port_map() gives the map.
    request &internal_ports(const std::vector<std::uint16_t> &ports) {
        detail::check(portmgr_request_set_internal_ports(h_, ports.data(), ports.size()));
        if (!ports.empty()) count_ = ports.size();
        return *this;
    }
    request &probe_addr(const std::string &addr) {
        detail::check(portmgr_request_set_probe_addr(h_, detail::c_arg(addr, "addr")));
        return *this;
    }

    /// The C handle (still owned by this object).
    const portmgr_request *get() const noexcept { return h_; }
    /// How many descriptors allocate_bound hands over for this request.
    std::size_t socket_count() const noexcept {
        std::size_t per = ((protocols_ & PORTMGR_PROTO_TCP) ? 1 : 0) + ((protocols_ & PORTMGR_PROTO_UDP) ? 1 : 0);
        return count_ * per;
    }

private:
    portmgr_request *h_ = nullptr;
    std::size_t count_ = 1;
    std::uint32_t protocols_ = PORTMGR_PROTO_TCP;
};

/// Held ports; released when destroyed (unless released or kept before).
class lease {
public:
    lease() noexcept = default;
    /// Take ownership of a C lease handle.
    explicit lease(portmgr_lease *h) noexcept : h_(h) {}
    lease(lease &&o) noexcept : h_(std::exchange(o.h_, nullptr)) {}
    lease &operator=(lease &&o) noexcept {
        if (this != &o) {
            if (h_) (void)portmgr_lease_release(h_);
            h_ = std::exchange(o.h_, nullptr);
        }
        return *this;
    }
    lease(const lease &) = delete;
    lease &operator=(const lease &) = delete;
    ~lease() {
        if (h_) (void)portmgr_lease_release(h_);
    }

    /// The (first) port; 0 once released or kept.
    std::uint16_t port() const noexcept { return h_ ? portmgr_lease_port(h_) : 0; }
    /// All ports (ascending for a contiguous block); empty once released or kept.
    std::vector<std::uint16_t> ports() const {
        if (!h_) return {};
        std::vector<std::uint16_t> v(portmgr_lease_ports(h_, nullptr, 0));
        v.resize(portmgr_lease_ports(h_, v.data(), v.size()));
        return v;
    }
    /// The lease id (`lease_id` in the JSON views; release_id / renew_id take it); 0 once
    /// released or kept.
    std::uint64_t id() const noexcept { return h_ ? portmgr_lease_id(h_) : 0; }
    /// A module's internal -> external ports, by internal port; empty for other leases.
    std::vector<std::pair<std::uint16_t, std::uint16_t>> port_map() const {
        if (!h_) return {};
        std::size_t n = portmgr_lease_port_map(h_, nullptr, nullptr, 0);
        std::vector<std::uint16_t> in(n), ex(n);
        n = portmgr_lease_port_map(h_, in.data(), ex.data(), n);
        std::vector<std::pair<std::uint16_t, std::uint16_t>> v;
        for (std::size_t i = 0; i < n && i < in.size(); i++) v.emplace_back(in[i], ex[i]);
        return v;
    }
    /// Give the lease a TTL from now (it then lives by its TTL, not by this process).
    void renew(std::chrono::milliseconds ttl) {
        detail::check(portmgr_lease_renew(h_, static_cast<std::uint64_t>(ttl.count())));
    }
    /// Release the ports now. Idempotent: later calls (and the destructor) do nothing.
    void release() {
        if (!h_) return;
        detail::check(portmgr_lease_release(std::exchange(h_, nullptr)));
    }
    /// Detach: the ports stay held until this process exits (or the TTL / watched process
    /// ends), releasable by any process of the user. Returns them.
    std::vector<std::uint16_t> keep() {
        std::vector<std::uint16_t> v = ports();
        if (h_) detail::check(portmgr_lease_keep(std::exchange(h_, nullptr)));
        return v;
    }
    /// Whether this object still holds a lease.
    explicit operator bool() const noexcept { return h_ != nullptr; }
    /// The C handle (still owned by this object).
    portmgr_lease *get() const noexcept { return h_; }

private:
    portmgr_lease *h_ = nullptr;
};

/// A lease handed over with its bound sockets: for each port, TCP then UDP (as asked).
struct bound {
    portmgr::lease lease;
    std::vector<socket_fd> sockets;
};

/// A handle on one registry directory (shared by every process and language).
class registry {
public:
    /// Open (creating it if needed) the registry in `dir`.
    explicit registry(const std::string &dir) {
        detail::check(portmgr_registry_open(detail::c_arg(dir, "dir"), &h_));
    }
    /// The registry at the default location ($PORTMGR_DIR honoured).
    static registry open_default() { return registry(nullptr); }
    static registry open(const std::string &dir) { return registry(dir); }

    registry(registry &&o) noexcept : h_(std::exchange(o.h_, nullptr)) {}
    registry &operator=(registry &&o) noexcept {
        if (this != &o) {
            portmgr_registry_close(h_);
            h_ = std::exchange(o.h_, nullptr);
        }
        return *this;
    }
    registry(const registry &) = delete;
    registry &operator=(const registry &) = delete;
    ~registry() { portmgr_registry_close(h_); }

    /// Allocate as `req` asks.
    portmgr::lease allocate(const request &req) { return allocate_raw(req.get()); }
    /// One TCP port from the default pool.
    portmgr::lease allocate() { return allocate_raw(nullptr); }

    /// Allocate and hand the ports over bound (TCP: listening), race-free.
    bound allocate_bound(const request &req) {
        std::vector<int> fds(req.socket_count(), -1);
        portmgr_lease *l = nullptr;
        std::size_t n = 0;
        detail::check(portmgr_allocate_bound(h_, req.get(), &l, fds.data(), fds.size(), &n));
        bound b{portmgr::lease(l), {}};
        b.sockets.reserve(n);
        for (std::size_t i = 0; i < n; i++) b.sockets.emplace_back(fds[i]);
        return b;
    }

    void release_port(std::uint16_t port) { detail::check(portmgr_release_port(h_, port)); }
    void release_name(const std::string &name) {
        detail::check(portmgr_release_name(h_, detail::c_arg(name, "name")));
    }
    /// Release lease `id` (all its ports); throws PORTMGR_NOT_FOUND for an unknown or
    /// released id.
    void release_id(std::uint64_t id) { detail::check(portmgr_release_id(h_, id)); }
    /// Extend lease `id`'s TTL (0 ms: by its own TTL again).
    void renew_id(std::uint64_t id, std::chrono::milliseconds ttl = std::chrono::milliseconds(0)) {
        detail::check(portmgr_renew_id(h_, id, static_cast<std::uint64_t>(ttl.count())));
    }
    /// Reserve ports `start..end` registry-wide: never handed out until unreserve().
    void reserve(std::uint16_t start, std::uint16_t end, const std::string &reason = std::string()) {
        detail::check(portmgr_reserve(h_, start, end, reason.empty() ? nullptr : detail::c_arg(reason, "reason")));
    }
    /// Unreserve the reserved ports of `start..end`; throws PORTMGR_NOT_FOUND when none.
    void unreserve(std::uint16_t start, std::uint16_t end) { detail::check(portmgr_unreserve(h_, start, end)); }
    /// The reservations, as JSON (see portmgr_reserved_json).
    std::string reserved_json() const {
        return detail::json([this](char *b, std::size_t l, std::size_t *n) { return portmgr_reserved_json(h_, b, l, n); });
    }
    /// Services by name, port -> name, names by type and the statistics, as JSON (see
    /// portmgr_registry_overview_json).
    std::string overview_json() const {
        return detail::json([this](char *b, std::size_t l, std::size_t *n) { return portmgr_registry_overview_json(h_, b, l, n); });
    }
    /// Extend a lease's TTL (0 ms: by its own TTL again).
    void renew_port(std::uint16_t port, std::chrono::milliseconds ttl = std::chrono::milliseconds(0)) {
        detail::check(portmgr_renew_port(h_, port, static_cast<std::uint64_t>(ttl.count())));
    }
    void renew_name(const std::string &name, std::chrono::milliseconds ttl = std::chrono::milliseconds(0)) {
        detail::check(portmgr_renew_name(h_, detail::c_arg(name, "name"), static_cast<std::uint64_t>(ttl.count())));
    }
    /// The port of the live lease named `name`; throws (PORTMGR_NOT_FOUND) when none.
    std::uint16_t lookup(const std::string &name) const {
        std::uint16_t port = 0;
        detail::check(portmgr_lookup_name(h_, detail::c_arg(name, "name"), &port));
        return port;
    }
    /// Every live port, as JSON (see portmgr_registry_list_json).
    std::string list_json() const {
        return detail::json([this](char *b, std::size_t l, std::size_t *n) { return portmgr_registry_list_json(h_, b, l, n); });
    }
    /// The registry's figures, as JSON (see portmgr_registry_stats_json).
    std::string stats_json() const {
        return detail::json([this](char *b, std::size_t l, std::size_t *n) { return portmgr_registry_stats_json(h_, b, l, n); });
    }
    /// Free dead and expired records now; returns how many ports were freed.
    std::size_t gc() {
        std::size_t n = 0;
        detail::check(portmgr_registry_gc(h_, &n));
        return n;
    }
    void set_lock_timeout(std::chrono::milliseconds t) {
        detail::check(portmgr_registry_set_lock_timeout(h_, static_cast<std::uint64_t>(t.count())));
    }
    /// The C handle (still owned by this object).
    portmgr_registry *get() const noexcept { return h_; }

private:
    explicit registry(std::nullptr_t) { detail::check(portmgr_registry_open(nullptr, &h_)); }

    portmgr::lease allocate_raw(const portmgr_request *req) {
        portmgr_lease *l = nullptr;
        detail::check(portmgr_allocate(h_, req, &l));
        return portmgr::lease(l);
    }

    portmgr_registry *h_ = nullptr;
};

}  // namespace portmgr

#endif  // PORTMGR_HPP
