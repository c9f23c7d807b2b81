/*
 * Istio's request and TCP metrics counted inside Envoy: an access logger for Envoy's dynamic
 * modules (envoy.access_loggers.dynamic_modules, ABI v0.2.0 of Envoy 1.40).
 *
 * Why a module: stock Envoy has no istio.stats filter, and sending every request to the agent
 * (gRPC access log) costs Envoy ~5 us a request. This logger reads, per request, only what
 * tells a request's *kind* (upstream cluster, response code, gRPC status, response flags,
 * the downstream TLS peer's and our own URI SAN, or for an inbound stream without a peer
 * certificate the HBONE tunnel's identities in dynamic metadata, gRPC or not) and its three
 * measures
 * (duration to the last byte sent downstream, request and response size with headers), and
 * adds them to one row per kind in a table that the agent maps from a file. The agent turns
 * rows into Istio's labelled series (plugins/envoy/stats_table.py): the labels that depend
 * on the proxy (workload, destination service from cluster metadata) never enter Envoy.
 *
 * Why not Envoy's own counters: the ABI defines access-logger counters by name at config
 * time only (no labels, no creation per request), and its histograms have Envoy's buckets,
 * not Istio's.
 *
 * The file (logger_config, a StringValue: its path) is created by the first logger config of
 * the process and kept for the process's life; later configs (every listener, every LDS
 * update) share it. Layout: a 64-byte header, then fixed-size rows; all little-endian.
 *   header: "PFISTAT1", u32 layout version, u32 row size, u32 capacity, u32 pad,
 *           u64 rows published, u64 requests not counted (table full, field too long),
 *           u64 generation (pid << 32 | start time), u64 reserved[2]
 * A row's key is written before the row is published (rows published, release store), and
 * never changes after; its counters only grow (relaxed atomic adds, several workers).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- the ABI, as Envoy 1.40 declares it (source/extensions/dynamic_modules/abi/abi.h) ---- */

typedef struct {
  const char* ptr;
  size_t length;
} envoy_buffer;

typedef struct {
  int64_t start_time_unix_ns;
  int64_t request_complete_duration_ns;
  int64_t first_upstream_tx_byte_sent_ns;
  int64_t last_upstream_tx_byte_sent_ns;
  int64_t first_upstream_rx_byte_received_ns;
  int64_t last_upstream_rx_byte_received_ns;
  int64_t first_downstream_tx_byte_sent_ns;
  int64_t last_downstream_tx_byte_sent_ns;
} timing_info;

typedef struct {
  uint64_t bytes_received;
  uint64_t bytes_sent;
  uint64_t wire_bytes_received;
  uint64_t wire_bytes_sent;
} bytes_info;

enum { REQUEST_HEADER = 0, RESPONSE_HEADER = 2, RESPONSE_TRAILER = 3 };
/* AccessLogType: what made Envoy log */
enum { TCP_UPSTREAM_CONNECTED = 1, TCP_CONNECTION_END = 3, DOWNSTREAM_END = 6 };

extern bool envoy_dynamic_module_callback_access_logger_get_upstream_cluster(void*,
                                                                             envoy_buffer*);
extern uint32_t envoy_dynamic_module_callback_access_logger_get_response_code(void*);
extern uint64_t envoy_dynamic_module_callback_access_logger_get_response_flags(void*);
extern bool envoy_dynamic_module_callback_access_logger_get_header_value(void*, int, envoy_buffer,
                                                                         envoy_buffer*, size_t,
                                                                         size_t*);
extern void envoy_dynamic_module_callback_access_logger_get_timing_info(void*, timing_info*);
extern void envoy_dynamic_module_callback_access_logger_get_bytes_info(void*, bytes_info*);
extern uint64_t envoy_dynamic_module_callback_access_logger_get_request_headers_bytes(void*);
extern uint64_t envoy_dynamic_module_callback_access_logger_get_response_headers_bytes(void*);
extern size_t envoy_dynamic_module_callback_access_logger_get_downstream_peer_uri_san_size(void*);
extern bool envoy_dynamic_module_callback_access_logger_get_downstream_peer_uri_san(void*,
                                                                                  envoy_buffer*);
extern size_t envoy_dynamic_module_callback_access_logger_get_downstream_local_uri_san_size(
    void*);
extern bool envoy_dynamic_module_callback_access_logger_get_downstream_local_uri_san(
    void*, envoy_buffer*);
extern bool envoy_dynamic_module_callback_access_logger_get_dynamic_metadata(void*, envoy_buffer,
                                                                            envoy_buffer,
                                                                            envoy_buffer*);

/* ---- the table ---- */

#define LAYOUT_VERSION 1
#define CAPACITY 4096
#define CLUSTER_MAX 256
#define NAME_MAX_ 256
#define GRPC_MAX 16
#define SAN_MAX 16 /* URI SANs looked at per certificate */

/* Istio's buckets: duration in ms (compared in ns), sizes in bytes (1 .. 1e9). */
static const uint64_t DURATION_NS[] = {
    500000ULL,       1000000ULL,       5000000ULL,        10000000ULL,      25000000ULL,
    50000000ULL,     100000000ULL,     250000000ULL,      500000000ULL,     1000000000ULL,
    2500000000ULL,   5000000000ULL,    10000000000ULL,    30000000000ULL,   60000000000ULL,
    300000000000ULL, 600000000000ULL,  1800000000000ULL,  3600000000000ULL};
#define DURATION_BUCKETS (sizeof(DURATION_NS) / sizeof(DURATION_NS[0]))
#define SIZE_BUCKETS 10

enum { KIND_HTTP = 1, KIND_TCP = 2 };

typedef struct {
  /* key */
  uint8_t kind;
  uint8_t grpc;     /* request content-type application/grpc* */
  uint8_t has_grpc_status;
  uint8_t pad0;
  uint32_t response_code;
  uint64_t response_flags;
  uint16_t cluster_len, peer_len, local_len, grpc_status_len;
  uint32_t pad1;
  char cluster[CLUSTER_MAX];
  char peer[NAME_MAX_];
  char local[NAME_MAX_];
  char grpc_status[GRPC_MAX];
  /* HTTP: requests, then the three histograms (per bucket, +Inf last; sum) */
  uint64_t requests;
  uint64_t duration[DURATION_BUCKETS + 1];
  uint64_t duration_sum_ns;
  uint64_t request_bytes[SIZE_BUCKETS + 1];
  uint64_t request_bytes_sum;
  uint64_t response_bytes[SIZE_BUCKETS + 1];
  uint64_t response_bytes_sum;
  /* TCP */
  uint64_t opened, closed, received, sent;
} row;

typedef struct {
  char magic[8];
  uint32_t version, row_size, capacity, pad;
  uint64_t rows;
  uint64_t dropped;
  uint64_t generation;
  uint64_t reserved[2];
} header;

_Static_assert(sizeof(header) == 64, "header is 64 bytes");

#define INDEX_SIZE (CAPACITY * 2) /* open addressing, at most half full */

static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;
static header* table; /* the mapped file, NULL until the first config */
static row* rows;
static uint32_t row_index[INDEX_SIZE]; /* row number + 1; 0: free */
static int config_token;               /* what config_new hands back */

static uint64_t hash(const row* key) {
  /* FNV-1a over what tells a kind apart */
  uint64_t h = 1469598103934665603ULL;
#define MIX(p, n)                                                                                \
  for (size_t i_ = 0; i_ < (n); i_++) {                                                          \
    h ^= (uint8_t)((const char*)(p))[i_];                                                        \
    h *= 1099511628211ULL;                                                                       \
  }
  MIX(&key->kind, 4);
  MIX(&key->response_code, 4);
  MIX(&key->response_flags, 8);
  MIX(key->cluster, key->cluster_len);
  MIX(key->peer, key->peer_len);
  MIX(key->local, key->local_len);
  MIX(key->grpc_status, key->grpc_status_len);
#undef MIX
  return h;
}

static bool same(const row* a, const row* b) {
  return a->kind == b->kind && a->grpc == b->grpc && a->has_grpc_status == b->has_grpc_status &&
         a->response_code == b->response_code && a->response_flags == b->response_flags &&
         a->cluster_len == b->cluster_len && a->peer_len == b->peer_len &&
         a->local_len == b->local_len && a->grpc_status_len == b->grpc_status_len &&
         memcmp(a->cluster, b->cluster, a->cluster_len) == 0 &&
         memcmp(a->peer, b->peer, a->peer_len) == 0 &&
         memcmp(a->local, b->local, a->local_len) == 0 &&
         memcmp(a->grpc_status, b->grpc_status, a->grpc_status_len) == 0;
}

/* The row of this kind, made (and published) the first time; NULL when the table is full. */
static row* find(const row* key) {
  uint64_t h = hash(key);
  for (uint32_t probe = 0; probe < INDEX_SIZE; probe++) {
    uint32_t slot = (uint32_t)((h + probe) & (INDEX_SIZE - 1));
    uint32_t at = __atomic_load_n(&row_index[slot], __ATOMIC_ACQUIRE);
    if (at == 0) {
      pthread_mutex_lock(&table_lock);
      at = row_index[slot];
      if (at == 0) {
        uint64_t n = table->rows;
        if (n >= CAPACITY) {
          pthread_mutex_unlock(&table_lock);
          return NULL;
        }
        row* made = &rows[n];
        memcpy(made, key, offsetof(row, requests)); /* counters start at zero (new file) */
        __atomic_store_n(&table->rows, n + 1, __ATOMIC_RELEASE);
        __atomic_store_n(&row_index[slot], (uint32_t)(n + 1), __ATOMIC_RELEASE);
        pthread_mutex_unlock(&table_lock);
        return made;
      }
      pthread_mutex_unlock(&table_lock);
    }
    if (same(&rows[at - 1], key)) {
      return &rows[at - 1];
    }
  }
  return NULL;
}

static void add(uint64_t* at, uint64_t value) { __atomic_fetch_add(at, value, __ATOMIC_RELAXED); }

static void observe_size(uint64_t* buckets, uint64_t* sum, uint64_t value) {
  /* bucket i holds values <= 10^i (Prometheus' le) */
  size_t i = 0;
  uint64_t bound = 1;
  while (i < SIZE_BUCKETS && value > bound) {
    i++;
    bound *= 10;
  }
  add(&buckets[i], 1);
  add(sum, value);
}

static void observe_duration(row* r, uint64_t ns) {
  size_t i = 0;
  while (i < DURATION_BUCKETS && ns > DURATION_NS[i]) {
    i++;
  }
  add(&r->duration[i], 1);
  add(&r->duration_sum_ns, ns);
}

static bool copy(char* into, uint16_t* len, size_t max, envoy_buffer from) {
  if (from.length > max) {
    return false;
  }
  if (from.length) {
    memcpy(into, from.ptr, from.length);
  }
  *len = (uint16_t)from.length;
  return true;
}

/* A certificate's identity among its URI SANs: the SPIFFE ID, else the first (as the agent's
 * ALS path reads it, core/istio_metrics.spiffe_name). */
static bool identity(envoy_buffer* sans, size_t n, char* into, uint16_t* len) {
  if (n == 0) {
    *len = 0;
    return true;
  }
  for (size_t i = 0; i < n; i++) {
    if (sans[i].length >= 9 && memcmp(sans[i].ptr, "spiffe://", 9) == 0) {
      return copy(into, len, NAME_MAX_, sans[i]);
    }
  }
  return copy(into, len, NAME_MAX_, sans[0]);
}

/* Does the row's cluster front this proxy's workload ("inbound|port||")? */
static bool inbound(const row* key) {
  return key->cluster_len >= 8 && memcmp(key->cluster, "inbound|", 8) == 0;
}

/* A stream that came through an HBONE tunnel this proxy terminated (connect_terminate) and
 * reached the inbound chains over an internal listener: that hop has no TLS of its own, the
 * tunnel's mTLS proved the client, and connect_terminate left both identities in the filter
 * state it shares with the internal connection. This ABI cannot read filter state (Envoy
 * 1.40's get_filter_state always answers false), so the internal listener's HCM copies them
 * into dynamic metadata (translators/stats_module.py, TUNNEL_METADATA). Asked only for inbound
 * streams without a peer certificate: the outbound and mTLS paths pay nothing for it. */
#define TUNNEL_METADATA "pilotfish.tunnel"
#define TUNNEL_PEER "peer_principal"
#define TUNNEL_LOCAL "local_principal"

static bool tunnel_metadata(void* log, const char* name, size_t name_len, envoy_buffer* out) {
  envoy_buffer space = {TUNNEL_METADATA, sizeof(TUNNEL_METADATA) - 1};
  envoy_buffer key = {name, name_len};
  return envoy_dynamic_module_callback_access_logger_get_dynamic_metadata(log, space, key, out) &&
         out->length > 0;
}

static bool tunneled_names(void* log, row* key) {
  envoy_buffer value = {NULL, 0};
  if (!tunnel_metadata(log, TUNNEL_PEER, sizeof(TUNNEL_PEER) - 1, &value)) {
    return true; /* plaintext, as the handshake said */
  }
  if (!copy(key->peer, &key->peer_len, NAME_MAX_, value)) {
    return false;
  }
  if (key->local_len == 0 &&
      tunnel_metadata(log, TUNNEL_LOCAL, sizeof(TUNNEL_LOCAL) - 1, &value)) {
    return copy(key->local, &key->local_len, NAME_MAX_, value);
  }
  return true;
}

static bool tls_names(void* log, row* key) {
  envoy_buffer sans[SAN_MAX];
  size_t n = envoy_dynamic_module_callback_access_logger_get_downstream_peer_uri_san_size(log);
  if (n > SAN_MAX) {
    return false;
  }
  if (n && !envoy_dynamic_module_callback_access_logger_get_downstream_peer_uri_san(log, sans)) {
    n = 0;
  }
  if (!identity(sans, n, key->peer, &key->peer_len)) {
    return false;
  }
  n = envoy_dynamic_module_callback_access_logger_get_downstream_local_uri_san_size(log);
  if (n > SAN_MAX) {
    return false;
  }
  if (n && !envoy_dynamic_module_callback_access_logger_get_downstream_local_uri_san(log, sans)) {
    n = 0;
  }
  if (!identity(sans, n, key->local, &key->local_len)) {
    return false;
  }
  return key->peer_len || !inbound(key) || tunneled_names(log, key);
}

static bool get_header(void* log, int type, const char* name, size_t name_len, envoy_buffer* out) {
  envoy_buffer key = {name, name_len};
  return envoy_dynamic_module_callback_access_logger_get_header_value(log, type, key, out, 0,
                                                                      NULL);
}

static void dropped(void) { add(&table->dropped, 1); }

static void log_http(void* log) {
  row key;
  memset(&key, 0, offsetof(row, requests));
  key.kind = KIND_HTTP;
  envoy_buffer value = {NULL, 0};
  if (envoy_dynamic_module_callback_access_logger_get_upstream_cluster(log, &value) &&
      !copy(key.cluster, &key.cluster_len, CLUSTER_MAX, value)) {
    dropped();
    return;
  }
  key.response_code = envoy_dynamic_module_callback_access_logger_get_response_code(log);
  key.response_flags = envoy_dynamic_module_callback_access_logger_get_response_flags(log);
  if (get_header(log, REQUEST_HEADER, "content-type", 12, &value) && value.length >= 16 &&
      memcmp(value.ptr, "application/grpc", 16) == 0) {
    key.grpc = 1;
    /* in trailers, or in the headers of a trailers-only response */
    if (get_header(log, RESPONSE_TRAILER, "grpc-status", 11, &value) ||
        get_header(log, RESPONSE_HEADER, "grpc-status", 11, &value)) {
      key.has_grpc_status = 1;
      if (!copy(key.grpc_status, &key.grpc_status_len, GRPC_MAX, value)) {
        dropped();
        return;
      }
    }
  }
  if (!tls_names(log, &key)) {
    dropped();
    return;
  }
  row* r = find(&key);
  if (r == NULL) {
    dropped();
    return;
  }
  timing_info timing;
  bytes_info bytes;
  envoy_dynamic_module_callback_access_logger_get_timing_info(log, &timing);
  envoy_dynamic_module_callback_access_logger_get_bytes_info(log, &bytes);
  int64_t ns = timing.last_downstream_tx_byte_sent_ns >= 0
                   ? timing.last_downstream_tx_byte_sent_ns
                   : timing.request_complete_duration_ns;
  add(&r->requests, 1);
  observe_duration(r, ns > 0 ? (uint64_t)ns : 0);
  observe_size(r->request_bytes, &r->request_bytes_sum,
               envoy_dynamic_module_callback_access_logger_get_request_headers_bytes(log) +
                   bytes.bytes_received);
  observe_size(r->response_bytes, &r->response_bytes_sum,
               envoy_dynamic_module_callback_access_logger_get_response_headers_bytes(log) +
                   bytes.bytes_sent);
}

static void log_tcp(void* log, int type) {
  row key;
  memset(&key, 0, offsetof(row, requests));
  key.kind = KIND_TCP;
  envoy_buffer value = {NULL, 0};
  if (envoy_dynamic_module_callback_access_logger_get_upstream_cluster(log, &value) &&
      !copy(key.cluster, &key.cluster_len, CLUSTER_MAX, value)) {
    dropped();
    return;
  }
  /* flags are only known at the end: the opened series carries none */
  if (type == TCP_CONNECTION_END) {
    key.response_flags = envoy_dynamic_module_callback_access_logger_get_response_flags(log);
  }
  if (!tls_names(log, &key)) {
    dropped();
    return;
  }
  row* r = find(&key);
  if (r == NULL) {
    dropped();
    return;
  }
  if (type == TCP_UPSTREAM_CONNECTED) {
    add(&r->opened, 1);
    return;
  }
  bytes_info bytes;
  envoy_dynamic_module_callback_access_logger_get_bytes_info(log, &bytes);
  add(&r->closed, 1);
  add(&r->received, bytes.bytes_received);
  add(&r->sent, bytes.bytes_sent);
}

/* ---- the event hooks Envoy calls ---- */

const char* envoy_dynamic_module_on_program_init(void) { return "v0.2.0"; }

static bool open_table(envoy_buffer path_buffer) {
  char path[4096];
  if (path_buffer.length == 0 || path_buffer.length >= sizeof(path)) {
    return false;
  }
  memcpy(path, path_buffer.ptr, path_buffer.length);
  path[path_buffer.length] = 0;
  size_t size = sizeof(header) + (size_t)CAPACITY * sizeof(row);
  /* a new file: rows of an earlier Envoy are not this one's */
  char temporary[4112];
  memcpy(temporary, path, path_buffer.length);
  memcpy(temporary + path_buffer.length, ".new", 5);
  int fd = open(temporary, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    return false;
  }
  if (ftruncate(fd, (off_t)size) != 0) {
    close(fd);
    return false;
  }
  void* mapped = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  if (mapped == MAP_FAILED) {
    return false;
  }
  header* h = mapped;
  memcpy(h->magic, "PFISTAT1", 8);
  h->version = LAYOUT_VERSION;
  h->row_size = sizeof(row);
  h->capacity = CAPACITY;
  h->generation = ((uint64_t)getpid() << 32) | ((uint64_t)time(NULL) & 0xffffffffULL);
  if (rename(temporary, path) != 0) {
    munmap(mapped, size);
    return false;
  }
  rows = (row*)((char*)mapped + sizeof(header));
  __atomic_store_n(&table, h, __ATOMIC_RELEASE);
  return true;
}

const void* envoy_dynamic_module_on_access_logger_config_new(void* config_envoy,
                                                             envoy_buffer name,
                                                             envoy_buffer config) {
  (void)config_envoy;
  (void)name;
  pthread_mutex_lock(&table_lock);
  bool ok = table != NULL || open_table(config);
  pthread_mutex_unlock(&table_lock);
  return ok ? &config_token : NULL; /* NULL: Envoy rejects the config */
}

void envoy_dynamic_module_on_access_logger_config_destroy(const void* config) { (void)config; }

const void* envoy_dynamic_module_on_access_logger_new(const void* config, void* logger_envoy) {
  (void)logger_envoy;
  return config;
}

void envoy_dynamic_module_on_access_logger_log(void* logger_envoy, const void* logger,
                                               int log_type) {
  (void)logger;
  if (log_type == DOWNSTREAM_END) {
    log_http(logger_envoy);
  } else if (log_type == TCP_UPSTREAM_CONNECTED || log_type == TCP_CONNECTION_END) {
    log_tcp(logger_envoy, log_type);
  }
}

void envoy_dynamic_module_on_access_logger_destroy(const void* logger) { (void)logger; }

void envoy_dynamic_module_on_access_logger_flush(const void* logger) { (void)logger; }
