/*
 * For test_envoy_telemetry.py::test_module_cost_benchmark: the metrics module's own work a
 * request, without Envoy. Envoy's side of the ABI is played here by stubs answering what a
 * router's plaintext request would (a cluster, 200, no flags, no TLS, application/json), so
 * the time is the module's: reading through the ABI, the key, the lookup, the adds. Build
 * with istio_stats.c; run with the table's path; prints nanoseconds per request. With a second
 * argument "tunneled" the request is instead an inbound one that came through an HBONE tunnel
 * (no TLS on the hop, the tunnel's identities in dynamic metadata).
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

typedef struct {
  const char* ptr;
  size_t length;
} envoy_buffer;

static const char CLUSTER[] = "outbound|80||web.default.svc.cluster.local";
static const char INBOUND[] = "inbound|8080||";
static const char PEER[] = "spiffe://cluster.local/ns/shop/sa/client";
static bool tunneled;

bool envoy_dynamic_module_callback_access_logger_get_upstream_cluster(void* log,
                                                                      envoy_buffer* out) {
  (void)log;
  out->ptr = tunneled ? INBOUND : CLUSTER;
  out->length = tunneled ? sizeof(INBOUND) - 1 : sizeof(CLUSTER) - 1;
  return true;
}
bool envoy_dynamic_module_callback_access_logger_get_dynamic_metadata(void* log,
                                                                      envoy_buffer space,
                                                                      envoy_buffer key,
                                                                      envoy_buffer* out) {
  (void)log;
  (void)space;
  (void)key;
  out->ptr = PEER; /* both identities alike: the cost is the calls */
  out->length = sizeof(PEER) - 1;
  return tunneled;
}
uint32_t envoy_dynamic_module_callback_access_logger_get_response_code(void* log) {
  (void)log;
  return 200;
}
uint64_t envoy_dynamic_module_callback_access_logger_get_response_flags(void* log) {
  (void)log;
  return 0;
}
bool envoy_dynamic_module_callback_access_logger_get_header_value(void* log, int type,
                                                                  envoy_buffer key,
                                                                  envoy_buffer* out, size_t i,
                                                                  size_t* n) {
  (void)log;
  (void)i;
  (void)n;
  if (type == 0 && key.length == 12) {
    out->ptr = "application/json";
    out->length = 16;
    return true;
  }
  return false;
}
void envoy_dynamic_module_callback_access_logger_get_timing_info(void* log, int64_t* out) {
  (void)log;
  for (int i = 0; i < 8; i++) {
    out[i] = 1000000 + i;
  }
}
void envoy_dynamic_module_callback_access_logger_get_bytes_info(void* log, uint64_t* out) {
  (void)log;
  out[0] = 0;
  out[1] = 1024;
  out[2] = 120;
  out[3] = 1200;
}
uint64_t envoy_dynamic_module_callback_access_logger_get_request_headers_bytes(void* log) {
  (void)log;
  return 90;
}
uint64_t envoy_dynamic_module_callback_access_logger_get_response_headers_bytes(void* log) {
  (void)log;
  return 140;
}
size_t envoy_dynamic_module_callback_access_logger_get_downstream_peer_uri_san_size(void* log) {
  (void)log;
  return 0;
}
bool envoy_dynamic_module_callback_access_logger_get_downstream_peer_uri_san(void* log,
                                                                           envoy_buffer* out) {
  (void)log;
  (void)out;
  return false;
}
size_t envoy_dynamic_module_callback_access_logger_get_downstream_local_uri_san_size(void* log) {
  (void)log;
  return 0;
}
bool envoy_dynamic_module_callback_access_logger_get_downstream_local_uri_san(void* log,
                                                                            envoy_buffer* out) {
  (void)log;
  (void)out;
  return false;
}

const void* envoy_dynamic_module_on_access_logger_config_new(void*, envoy_buffer, envoy_buffer);
void envoy_dynamic_module_on_access_logger_log(void*, const void*, int);

int main(int argc, char** argv) {
  if (argc != 2 && !(argc == 3 && strcmp(argv[2], "tunneled") == 0)) {
    fprintf(stderr, "usage: %s TABLE [tunneled]\n", argv[0]);
    return 2;
  }
  tunneled = argc == 3;
  envoy_buffer none = {NULL, 0}, table = {argv[1], strlen(argv[1])};
  const void* logger = envoy_dynamic_module_on_access_logger_config_new(NULL, none, table);
  if (logger == NULL) {
    fprintf(stderr, "%s: the table could not be made\n", argv[1]);
    return 1;
  }
  const long n = 10000000;
  struct timespec start, end;
  clock_gettime(CLOCK_MONOTONIC, &start);
  for (long i = 0; i < n; i++) {
    envoy_dynamic_module_on_access_logger_log(NULL, logger, 6);
  }
  clock_gettime(CLOCK_MONOTONIC, &end);
  double ns = (double)(end.tv_sec - start.tv_sec) * 1e9 + (double)(end.tv_nsec - start.tv_nsec);
  printf("%.1f\n", ns / (double)n);
  return 0;
}
