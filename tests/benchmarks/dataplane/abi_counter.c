/*
 * For the loggers benchmark only: Envoy's own stats path through the dynamic-module ABI.
 * Reads what tells a request's kind (cluster, code, flags, content-type), as istio_stats.c
 * does, then adds one to an Envoy counter defined when the config is made. The access
 * logger ABI of Envoy 1.40 defines counters by name at config time only, without labels:
 * one increment_counter call a request is the most that path offers.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
  const char* ptr;
  size_t length;
} envoy_buffer;

extern int envoy_dynamic_module_callback_access_logger_config_define_counter(void*, envoy_buffer,
                                                                             size_t*);
extern int envoy_dynamic_module_callback_access_logger_increment_counter(void*, size_t, uint64_t);
extern bool envoy_dynamic_module_callback_access_logger_get_upstream_cluster(void*,
                                                                             envoy_buffer*);
extern uint32_t envoy_dynamic_module_callback_access_logger_get_response_code(void*);
extern uint64_t envoy_dynamic_module_callback_access_logger_get_response_flags(void*);
extern bool envoy_dynamic_module_callback_access_logger_get_header_value(void*, int, envoy_buffer,
                                                                         envoy_buffer*, size_t,
                                                                         size_t*);

static void* config_envoy;
static size_t counter;
static int token;
volatile uint64_t sink; /* keeps the reads from being optimized away */

const char* envoy_dynamic_module_on_program_init(void) { return "v0.2.0"; }

const void* envoy_dynamic_module_on_access_logger_config_new(void* envoy, envoy_buffer name,
                                                             envoy_buffer config) {
  (void)name;
  (void)config;
  config_envoy = envoy;
  envoy_buffer counter_name = {"istio_requests_total", 20};
  return envoy_dynamic_module_callback_access_logger_config_define_counter(envoy, counter_name,
                                                                           &counter) == 0
             ? &token
             : NULL;
}

void envoy_dynamic_module_on_access_logger_config_destroy(const void* config) { (void)config; }

const void* envoy_dynamic_module_on_access_logger_new(const void* config, void* envoy) {
  (void)envoy;
  return config;
}

void envoy_dynamic_module_on_access_logger_log(void* envoy, const void* logger, int type) {
  (void)logger;
  (void)type;
  envoy_buffer cluster = {NULL, 0}, value = {NULL, 0}, key = {"content-type", 12};
  envoy_dynamic_module_callback_access_logger_get_upstream_cluster(envoy, &cluster);
  envoy_dynamic_module_callback_access_logger_get_header_value(envoy, 0, key, &value, 0, NULL);
  sink += cluster.length + value.length +
          envoy_dynamic_module_callback_access_logger_get_response_code(envoy) +
          envoy_dynamic_module_callback_access_logger_get_response_flags(envoy);
  envoy_dynamic_module_callback_access_logger_increment_counter(config_envoy, counter, 1);
}

void envoy_dynamic_module_on_access_logger_destroy(const void* logger) { (void)logger; }

void envoy_dynamic_module_on_access_logger_flush(const void* logger) { (void)logger; }
