/* A qemu-user TCG plugin that counts the guest instructions executed in one address range (bench/arm64/insns.mjs):
 * each translated block gets its own counter, to which every execution adds the block's instruction count; at exit
 * the counters of blocks starting in [lo, hi) are summed, lo and hi read from the file named by the plugin's
 * argument `range=<file>` (written by the guest program before it exits: the addon's mapping from /proc/self/maps).
 * Run the counted work on one thread: the inline adds are not atomic. Declares the few functions of qemu's plugin
 * API (version 1, qemu 7.2) it uses. */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef uint64_t qemu_plugin_id_t;
struct qemu_plugin_tb;
typedef struct qemu_info_t qemu_info_t;
typedef void (*tb_trans_cb)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*udata_cb)(qemu_plugin_id_t id, void *userdata);
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };

void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, tb_trans_cb cb);
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *tb, enum qemu_plugin_op op, void *ptr, uint64_t imm);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
uint64_t qemu_plugin_tb_vaddr(const struct qemu_plugin_tb *tb);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, udata_cb cb, void *userdata);
void qemu_plugin_outs(const char *string);

__attribute__((visibility("default"))) int qemu_plugin_version = 1;

/* Counters in fixed chunks: an inline op holds a pointer to its counter, which must never move. */
enum { kChunk = 4096 };
struct block { uint64_t vaddr, executed; };
struct chunk { struct block blocks[kChunk]; size_t used; struct chunk *next; };
static struct chunk *chunks;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static const char *range_file;

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) {
  (void)id;
  pthread_mutex_lock(&lock);
  if (!chunks || chunks->used == kChunk) {
    struct chunk *c = calloc(1, sizeof *c);
    c->next = chunks;
    chunks = c;
  }
  struct block *b = &chunks->blocks[chunks->used++];
  pthread_mutex_unlock(&lock);
  b->vaddr = qemu_plugin_tb_vaddr(tb);
  qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &b->executed, qemu_plugin_tb_n_insns(tb));
}

static void on_plugin_exit(qemu_plugin_id_t id, void *userdata) {
  (void)id, (void)userdata;
  uint64_t lo = 0, hi = 0, inside = 0, all = 0;
  FILE *f = range_file ? fopen(range_file, "r") : NULL;
  if (f) {
    if (fscanf(f, "%" SCNx64 " %" SCNx64, &lo, &hi) != 2) lo = hi = 0;
    fclose(f);
  }
  for (struct chunk *c = chunks; c; c = c->next)
    for (size_t i = 0; i < c->used; i++) {
      all += c->blocks[i].executed;
      if (c->blocks[i].vaddr >= lo && c->blocks[i].vaddr < hi) inside += c->blocks[i].executed;
    }
  char line[128];
  snprintf(line, sizeof line, "INSNS %" PRIu64 " ALL %" PRIu64 "\n", inside, all);
  qemu_plugin_outs(line);
}

__attribute__((visibility("default"))) int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv) {
  (void)info;
  for (int i = 0; i < argc; i++)
    if (strncmp(argv[i], "range=", 6) == 0) range_file = argv[i] + 6;
  qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
  qemu_plugin_register_atexit_cb(id, on_plugin_exit, NULL);
  return 0;
}
