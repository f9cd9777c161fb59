#ifndef MUXSHIM_UNIT_H
#define MUXSHIM_UNIT_H
#include <CUnit/CUnit.h>

/* Each test file exports one suite registration function. */
int unit_buf(void);
int unit_addr(void);
int unit_diag(void);
int unit_log(void);
int unit_loop(void);
int unit_codec(void);
int unit_mux(void);
int unit_crypto(void);
int unit_record(void);
int unit_inspect(void);
int unit_run_args(void);
int unit_auth(void);
int unit_daemon(void);
int unit_authlimit(void);
int unit_plist_guard(void);
int unit_proto(void);
int unit_devtable(void);
int unit_router(void);
int unit_tenants(void);

/* Adds a suite with the given tests; 0 or -1. */
struct unit_test { const char *name; CU_TestFunc fn; };
int unit_add_suite(const char *name, const struct unit_test *tests);
#endif
