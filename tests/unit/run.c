/* CUnit runner for the pure modules. Exit status is non-zero on any failure. */
#include "unit.h"

#include <CUnit/Basic.h>
#include <stdio.h>

int unit_add_suite(const char *name, const struct unit_test *tests)
{
	CU_pSuite s = CU_add_suite(name, NULL, NULL);
	if (!s)
		return -1;
	for (; tests->name; tests++)
		if (!CU_add_test(s, tests->name, tests->fn))
			return -1;
	return 0;
}

int main(void)
{
	if (CU_initialize_registry() != CUE_SUCCESS)
		return 2;
	int (*suites[])(void) = { unit_buf, unit_addr, unit_diag, unit_log, unit_loop, unit_codec, unit_mux, unit_crypto, unit_record, unit_inspect, unit_plist_guard,
				     unit_run_args, unit_auth, unit_daemon, unit_authlimit, unit_proto,
				     unit_devtable, unit_router, unit_tenants };
	for (size_t i = 0; i < sizeof(suites) / sizeof(suites[0]); i++) {
		if (suites[i]() != 0) {
			fprintf(stderr, "cannot register suite %zu\n", i);
			return 2;
		}
	}
	CU_basic_set_mode(CU_BRM_VERBOSE);
	CU_basic_run_tests();
	unsigned failed = CU_get_number_of_failures();
	unsigned ran = CU_get_number_of_tests_run();
	CU_cleanup_registry();
	printf("unit: %u tests run, %u assertion failures\n", ran, failed);
	return failed || ran == 0 ? 1 : 0;
}
